"""Git-based DVC experiments: queued runs land in the project's own MLflow store; results reproduce."""

from __future__ import annotations

import json
import time

import pytest

from conftest import Project

pytestmark = pytest.mark.slow


def test_queued_experiments_land_in_the_project_store(project: Project) -> None:
    project.dvc("exp", "run", "--queue", "-S", "recipe=xgb-baseline,lgbm-tuned")
    project.dvc("queue", "start", "-j", "1")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = project.dvc("queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    assert status.count("Success") == 2, status

    # Both experiments are in `dvc exp show` with their params and metrics ...
    shown = json.loads(project.dvc("exp", "show", "--json").stdout)
    experiments = [exp for commit in shown for exp in (commit.get("experiments") or [])]
    names = {exp["name"] for exp in experiments}
    assert len(names) == 2
    # ... and their runs are in the project's store, not in DVC's temporary copies.
    runs = project.runs("train")
    assert {run.data.tags.get("mmp.dvc.exp_name") for run in runs} == names
    assert {run.data.tags["mmp.recipe"] for run in runs} == {"xgb-baseline", "lgbm-tuned"}
    assert all(run.info.status == "FINISHED" for run in runs)
    assert all(str(project.root / "mlruns") in run.info.artifact_uri for run in runs)
    assert not list((project.root / ".dvc" / "tmp" / "exps").rglob("mlflow.db"))


def test_same_config_gives_identical_metrics(project: Project) -> None:
    """Bitwise: fixed seeds and thread counts make XGBoost and LightGBM deterministic."""
    for recipe in ("xgb-baseline", "lgbm-tuned"):
        project.mmp("train", f"recipe={recipe}")
        first = (project.root / "metrics.json").read_bytes()
        project.mmp("train", f"recipe={recipe}")
        assert (project.root / "metrics.json").read_bytes() == first, recipe
