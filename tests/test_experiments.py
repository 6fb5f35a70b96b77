"""Git-based DVC experiments: queued runs land in the project's own MLflow store; results reproduce."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import pytest

from conftest import BIN, REPO, Project
from mmp.tracking.listing import experiment_commits

pytestmark = pytest.mark.slow


def test_queued_experiments_land_in_the_project_store(project: Project) -> None:
    project.dvc("exp", "run", "--queue", "-S", "recipe=xgb-baseline,lgbm-tuned")
    _run_queue(project, expected=2)

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

    # One execution is one unit: a pipeline run per experiment, its three stage runs nested under it.
    for train in runs:
        name, recipe = train.data.tags["mmp.dvc.exp_name"], train.data.tags["mmp.recipe"]
        [pipeline] = [run for run in project.runs("pipeline") if run.data.tags.get("mmp.dvc.exp_name") == name]
        children = [run for run in project.runs() if run.data.tags.get("mlflow.parentRunId") == pipeline.info.run_id]
        assert sorted(run.info.run_name for run in children) == [
            f"{stage} · {recipe} · titanic · {name}" for stage in ("explain", "prepare", "train")
        ]
        assert pipeline.info.run_name == f"pipeline · {recipe} · titanic · {name}"
        assert pipeline.info.status == "FINISHED" and pipeline.info.end_time >= max(r.info.end_time for r in children)
        assert pipeline.data.metrics["test_roc_auc"] == train.data.metrics["test_roc_auc"]
        assert pipeline.data.params["recipe.name"] == recipe
        assert len({run.data.tags["mmp.execution"] for run in [pipeline, *children]}) == 1
    assert len({run.data.tags["mmp.execution"] for run in project.runs("pipeline")}) == 2

    # `mmp runs --dvc-exp` finds an experiment's runs and tags them with the experiment's own commit.
    name = sorted(names)[0]
    commit = project.git("rev-parse", f"refs/exps/{_exp_ref(project, name)}").stdout.strip()
    listed = project.mmp("runs", "--dvc-exp", name, "--stage", "all").stdout
    assert f"exp {name}" in listed and len(listed.splitlines()) == 5  # header, pipeline and its three stages
    [train] = [run for run in project.runs("train") if run.data.tags["mmp.dvc.exp_name"] == name]
    assert train.data.tags["mmp.dvc.exp_commit"] == commit
    assert train.data.tags["mmp.dvc.exp_baseline_rev"] == project.git("rev-parse", "HEAD").stdout.strip()

    # The same params again, queued: DVC restores every stage from its run cache and no stage runs, yet
    # `mmp runs --dvc-exp` finds the experiment: the runs that produced its outputs.
    before = {run.info.run_id for run in project.runs()}
    [original] = [run for run in runs if run.data.tags["mmp.recipe"] == "lgbm-tuned"]
    known = set(experiment_commits(project.root))
    project.dvc("exp", "run", "--queue", "-S", "recipe=lgbm-tuned")
    _run_queue(project, expected=3)
    [restored] = set(experiment_commits(project.root)) - known - {"EXEC_HEAD"}
    assert {run.info.run_id for run in project.runs()} == before  # nothing ran
    listed = project.mmp("runs", "--dvc-exp", restored).stdout
    assert original.info.run_id in listed and restored in listed
    train = project.client().get_run(original.info.run_id)
    assert train.data.tags["mmp.dvc.exps"].split() == [original.data.tags["mmp.dvc.exp_name"], restored]
    assert train.data.tags["mmp.dvc.restored_exps"] == restored

    # The documented `dvc exp show` line is readable in 100 columns: recipe, data and test metric, no "…".
    command = _documented(EXPERIMENTS_GUIDE, "dvc exp show --drop")
    table = project.run(*command, COLUMNS="100").stdout
    assert "…" not in table and max(len(line) for line in table.splitlines()) <= 100, table
    for exp in experiments:
        data = exp["revs"][0]["data"]
        [row] = [line for line in table.splitlines() if f"[{exp['name']}]" in line]
        assert data["params"]["params.yaml"]["data"]["recipe"]["name"] in row and "titanic" in row, table
        value = data["metrics"]["metrics.json"]["data"]["test"]["roc_auc"]
        assert f"{value:.5f}".rstrip("0") in row, table

    # A workspace experiment, restored from the run cache too: its results are applied to the workspace,
    # and it is found as well.
    known = set(experiment_commits(project.root))
    project.dvc("exp", "run", "-S", "recipe=xgb-baseline")
    [applied] = set(experiment_commits(project.root)) - known - {"EXEC_HEAD"}
    assert "xgb-baseline" in project.mmp("runs", "--dvc-exp", applied).stdout
    assert project.run("git", "status", "--porcelain", "--untracked-files=no").stdout.strip()  # applied

    # The documented exp-branch flow, literally: it works after `dvc exp run`, and the branch is up to date.
    expected = project.git("show", f"{experiment_commits(project.root)[applied]}:metrics.json").stdout
    for line in _block_after(EXPERIMENTS_GUIDE, "### Making an experiment a branch"):
        result = project.run(*[applied if word == "<exp-name>" else word for word in line])
    assert "Running stage" not in result.stdout and "up to date" in result.stdout, result.stdout
    assert project.git("rev-parse", "--abbrev-ref", "HEAD").stdout.strip() == "better-model"
    assert json.loads((project.root / "metrics.json").read_text()) == json.loads(expected)
    assert project.dvc("status").stdout.strip() == "Data and pipelines are up to date."


EXPERIMENTS_GUIDE = REPO / "docs" / "experiments.md"


def _run_queue(project: Project, expected: int) -> None:
    """`dvc queue start -j 1`, then wait until the queue is done and ``expected`` experiments succeeded."""
    project.dvc("queue", "start", "-j", "1")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = project.dvc("queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    assert status.count("Success") == expected, status


def _block_after(guide: Path, heading: str) -> list[list[str]]:
    """The commands of the first shell block after ``heading`` in ``guide``, comments removed."""
    text = guide.read_text(encoding="utf-8")
    block = text[text.index(heading) :].split("```bash\n", 1)[1].split("```", 1)[0]
    return [words for line in block.splitlines() if (words := shlex.split(line, comments=True))]


def _documented(guide: Path, start: str) -> list[str]:
    """The command of ``guide`` whose line starts with ``start``."""
    text = guide.read_text(encoding="utf-8")
    [line] = [line for line in text.splitlines() if line.startswith(start)]
    return shlex.split(line, comments=True)


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
