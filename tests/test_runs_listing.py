"""`mmp runs` on a store filled by hand: data filter, ranking (sort key shown, a missing metric refused),
sweeps and searches, pruned trials, and `--best` by the recipe's primary metric on valid."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from conftest import Project, make_project
from mmp.cli import main

pytestmark = pytest.mark.slow  # a project copy and its store: about 30 s on a busy machine

T = "mmp."


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A project whose store holds titanic and penguins train runs, a sweep, a search and its pruned trial."""
    import mlflow

    project = make_project(tmp_path_factory.mktemp("listing") / "project")
    client = mlflow.MlflowClient(project.tracking_uri)
    experiment = client.create_experiment("mmp")
    ids: dict[str, str] = {}

    def run(name: str, tags: dict[str, str], metrics: dict[str, float], status: str = "FINISHED") -> str:
        created = client.create_run(experiment, run_name=name, tags={f"{T}{k}": v for k, v in tags.items()})
        for key, value in metrics.items():
            client.log_metric(created.info.run_id, key, value)
        client.set_terminated(created.info.run_id, status=status)
        ids[name] = created.info.run_id
        return created.info.run_id

    binary = {"stage": "train", "data": "titanic", "task": "binary"}
    run("xgb-old", {**binary, "recipe": "xgb-baseline"}, {"valid_roc_auc": 0.90, "test_roc_auc": 0.80})
    run("lgbm", {**binary, "recipe": "lgbm-tuned"}, {"valid_roc_auc": 0.86, "test_roc_auc": 0.86})
    run("xgb-new", {**binary, "recipe": "xgb-baseline"}, {"valid_roc_auc": 0.84, "test_roc_auc": 0.85})
    penguins = {"stage": "train", "data": "penguins", "task": "multiclass", "recipe": "xgb-baseline"}
    run("penguins", penguins, {"valid_accuracy": 1.0, "test_accuracy": 1.0, "test_roc_auc": 1.0})
    job = run("sweep-job", {**binary, "recipe": "rf-experiment", "sweep_id": "sweep-1", "sweep_job": "1"}, {})
    sweep = {"stage": "sweep", "data": "titanic", "recipe": "xgb-baseline", "sweep_id": "sweep-1"}
    run("sweep-1", {**sweep, "sweep_command": "mmp sweep recipe=a,b", "best_run_id": job}, {"valid_roc_auc": 0.8})
    trial = {**binary, "recipe": "lgbm-tuned", "sweep_id": "tune-1"}
    run("trial-0", {**trial, "sweep_job": "0"}, {"valid_roc_auc": 0.7})
    run("trial-1", {**trial, "sweep_job": "1", "pruned": "true"}, {"valid_roc_auc": 0.5}, status="KILLED")
    tune = {"stage": "tune", "data": "titanic", "recipe": "lgbm-tuned", "sweep_id": "tune-1"}
    run("tune-1", {**tune, "sweep_command": "mmp tune", "best_run_id": ids["trial-0"]}, {"valid_roc_auc": 0.7})
    return {"project": project, "ids": ids}


@pytest.fixture()
def runs(
    store: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> Any:
    """`mmp runs ARGS` in process: (exit code, stdout, stderr and log lines)."""
    project: Project = store["project"]
    monkeypatch.chdir(project.root)
    for key in ("MLFLOW_TRACKING_URI", "MMP_CONFIG", "MMP_PROJECT_ROOT", "DVC_ROOT"):
        monkeypatch.delenv(key, raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mmp"):
            code = main(["runs", *args])
        out, err = capsys.readouterr()
        return code, out, err + caplog.text

    return run


def ids_of(store: dict[str, Any], *names: str) -> list[str]:
    return [store["ids"][name] for name in names]


def test_ranking_stays_within_the_configs_data_set(runs: Any, store: dict[str, Any]) -> None:
    code, out, err = runs("--sort", "test_roc_auc", "--limit", "1", "--quiet")
    assert code == 0 and out.split() == ids_of(store, "lgbm")  # not the penguins run's 1.0
    assert "ranking runs of data set 'titanic'" in err
    assert runs("--sort", "test_roc_auc", "--limit", "1", "--quiet", "--data", "all")[1].split() == ids_of(
        store, "penguins"
    )
    assert runs("--data", "penguins", "--quiet")[1].split() == ids_of(store, "penguins")
    listed = runs("--quiet")[1].split()  # no ranking: every data set, newest first
    assert store["ids"]["penguins"] in listed and store["ids"]["xgb-old"] in listed


def test_the_sort_key_is_a_column_and_a_missing_metric_is_refused(runs: Any, store: dict[str, Any]) -> None:
    code, out, _ = runs("--sort", "valid_roc_auc")
    header = out.splitlines()[0].split()
    assert code == 0 and header[header.index("status") + 1] == "valid_roc_auc"
    first = out.splitlines()[1]
    assert first.startswith(store["ids"]["xgb-old"]) and first.split()[header.index("status") + 2] == "0.9000"
    code, out, err = runs("--sort", "test_rmse")
    errors = [line for line in err.splitlines() if line.startswith("mmp: error:")]
    assert code == 2 and out == "" and len(errors) == 1
    assert "No listed run has the metric 'test_rmse'" in errors[0] and "test_roc_auc" in errors[0]


def test_stage_sweep_lists_sweeps_and_searches_with_the_best_jobs_recipe(runs: Any, store: dict[str, Any]) -> None:
    code, out, _ = runs("--stage", "sweep")
    lines = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert code == 0 and set(lines) == set(ids_of(store, "sweep-1", "tune-1"))
    header = out.splitlines()[0].split()
    recipe = header.index("recipe") + 1  # "started" is two words
    assert lines[store["ids"]["sweep-1"]][recipe] == "rf-experiment"  # its best job's, not the default's
    assert lines[store["ids"]["tune-1"]][recipe] == "lgbm-tuned"


def test_pruned_trials_are_hidden_unless_all(runs: Any, store: dict[str, Any]) -> None:
    assert runs("--sweep", "tune-1", "--quiet")[1].split() == ids_of(store, "trial-0")
    assert set(runs("--sweep", "tune-1", "--all", "--quiet")[1].split()) == set(ids_of(store, "trial-0", "trial-1"))


def test_best_is_the_primary_metric_on_valid_within_data_and_recipe(runs: Any, store: dict[str, Any]) -> None:
    assert runs("--best", "--quiet")[1].split() == ids_of(store, "xgb-old")  # valid 0.90, though test is lowest
    assert runs("--best", "--quiet", "--recipe-name", "lgbm-tuned")[1].split() == ids_of(store, "lgbm")
    assert runs("--best", "--quiet", "--data", "penguins")[1].split() == ids_of(store, "penguins")  # accuracy
    code, out, _ = runs("--best")
    assert code == 0 and "valid_roc_auc" in out.splitlines()[0] and len(out.splitlines()) == 2


def test_no_runs_names_the_filters(runs: Any, tmp_path: Path) -> None:
    code, out, _ = runs("--data", "diamonds")
    assert code == 0 and "No runs in experiment 'mmp' match stage train, data diamonds;" in out


def test_an_in_process_command_leaves_the_environment_as_it_was(store: dict[str, Any], runs: Any) -> None:
    """`mmp runs` loads `.env` and points MLflow at the store; called in-process, it exports neither after."""
    import os

    env_file = store["project"].root / ".env"
    env_file.write_text("MMP_TEST_ONLY_SECRET=hunter2\n", encoding="utf-8")
    try:
        before = dict(os.environ)
        code, out, _ = runs("--limit", "1")
        assert code == 0 and out.strip()
        assert "MMP_TEST_ONLY_SECRET" not in os.environ and "MLFLOW_TRACKING_URI" not in os.environ
        assert dict(os.environ) == before
    finally:
        env_file.unlink()
