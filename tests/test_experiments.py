"""Git-based DVC experiments: queued runs land in the project's own MLflow store; results reproduce."""

from __future__ import annotations

import json
import time

import pytest

from conftest import BIN, Project

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
    for exp in experiments:
        data = exp["revs"][0]["data"]
        assert data["params"]["params.yaml"]["data"]["recipe"]["name"] in {"xgb-baseline", "lgbm-tuned"}
        assert data["metrics"]["metrics.json"]["data"]["test"]["roc_auc"] > 0.8

    # `mmp runs --dvc-exp` finds an experiment's runs and tags them with the experiment's own commit.
    name = sorted(names)[0]
    commit = project.git("rev-parse", f"refs/exps/{_exp_ref(project, name)}").stdout.strip()
    listed = project.mmp("runs", "--dvc-exp", name, "--stage", "all").stdout
    assert f"exp {name}" in listed
    [train] = [run for run in project.runs("train") if run.data.tags["mmp.dvc.exp_name"] == name]
    assert train.data.tags["mmp.dvc.exp_commit"] == commit
    assert train.data.tags["mmp.dvc.exp_baseline_rev"] == project.git("rev-parse", "HEAD").stdout.strip()

    # `dvc exp branch`, then a fresh clone of that branch reproduces the experiment's metrics.
    expected = (project.root / ".." / "expected.json").resolve()
    expected.write_text(project.git("show", f"{commit}:metrics.json").stdout)
    project.dvc("exp", "branch", name, "better-model")
    clone = Project(project.root.parent / "clone", project.env)
    project.run("git", "clone", "-q", "--branch", "better-model", str(project.root), str(clone.root))
    out = clone.dvc("repro").stdout
    assert "Running stage 'train'" in out
    assert json.loads((clone.root / "metrics.json").read_text()) == json.loads(expected.read_text())
    # Same params and data; only outputs that hold the new MLflow run id (models/) change.
    assert clone.dvc("params", "diff").stdout.strip() == ""
    assert clone.dvc("metrics", "diff").stdout.strip() == ""


def _exp_ref(project: Project, name: str) -> str:
    refs = project.git("for-each-ref", "--format=%(refname)", "refs/exps").stdout.split()
    [ref] = [ref for ref in refs if ref.endswith(f"/{name}")]
    return ref.removeprefix("refs/exps/")


def test_same_config_gives_identical_metrics(project: Project) -> None:
    """Bitwise: fixed seeds and thread counts make the split, XGBoost and LightGBM deterministic.

    The prepare and train stage scripts, as `dvc repro` runs them (explain does not change the metrics).
    """
    for recipe in ("xgb-baseline", "lgbm-tuned"):
        metrics = []
        for _ in range(2):
            for stage in ("prepare", "train"):
                project.run(str(BIN / "python"), f"stages/{stage}.py", f"recipe={recipe}")
            metrics.append((project.root / "metrics.json").read_bytes())
        assert metrics[0] == metrics[1], recipe
        assert json.loads(metrics[0])["test"]["roc_auc"] > 0.8, recipe
