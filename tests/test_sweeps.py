"""Hydra multirun sweeps and the Optuna search: one parent run per sweep, every job a child run."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import Project

pytestmark = pytest.mark.slow

PNG = b"\x89PNG\r\n\x1a\n"


def children(project: Project, parent: Any, stage: str = "train") -> list[Any]:
    return [run for run in project.runs(stage) if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


def summary_rows(project: Project, parent: Any) -> list[dict[str, str]]:
    path = project.client().download_artifacts(parent.info.run_id, "sweep_summary.csv", str(project.root / "dl"))
    return list(csv.DictReader(io.StringIO(Path(path).read_text())))


def assert_nothing_running(project: Project) -> None:
    assert [run.info.run_name for run in project.runs() if run.info.status == "RUNNING"] == []


def test_three_recipe_multirun_makes_one_parent_and_three_children(project: Project) -> None:
    result = project.run("python", "stages/train.py", "-m", "recipe=xgb-baseline,lgbm-tuned,rf-experiment", timeout=900)
    assert "3 jobs, 0 failed" in result.stdout

    [parent] = project.runs("sweep")
    jobs = children(project, parent)
    assert len(jobs) == 3
    assert len(project.runs("train")) == 3  # no stray train runs outside the sweep
    sweep_id = parent.data.tags["mmp.sweep_id"]
    assert {run.data.tags["mmp.recipe"] for run in jobs} == {"xgb-baseline", "lgbm-tuned", "rf-experiment"}
    for run in jobs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mmp.sweep_id"] == sweep_id
        assert run.data.tags["mmp.sweep_overrides"] == f"recipe={run.data.tags['mmp.recipe']}"
        assert run.data.metrics["test_roc_auc"] > 0.8
        # Each job's explain run hangs under its train run; its prepare run is linked by tag.
        [explain] = children(project, run, "explain")
        assert explain.data.tags["mmp.sweep_id"] == sweep_id
        assert run.data.tags["mmp.prepare_run_id"]

    # The parent holds the best job's metrics (by valid ROC AUC), the table and the chart.
    assert parent.info.status == "FINISHED"
    best = max(jobs, key=lambda run: run.data.metrics["valid_roc_auc"])
    assert parent.data.tags["mmp.best_run_id"] == best.info.run_id
    assert parent.data.tags["mmp.sweep_metric"] == "valid_roc_auc"
    assert parent.data.metrics["test_roc_auc"] == best.data.metrics["test_roc_auc"]
    assert parent.data.metrics["jobs_finished"] == 3
    rows = summary_rows(project, parent)
    assert [row["recipe"] for row in rows] == ["xgb-baseline", "lgbm-tuned", "rf-experiment"]
    assert {row["run_id"] for row in rows} == {run.info.run_id for run in jobs}
    chart = project.client().download_artifacts(parent.info.run_id, "sweep_chart.png", str(project.root / "dl"))
    assert Path(chart).read_bytes().startswith(PNG)

    # Each job wrote into its own folder; the DVC workspace outputs were not touched.
    folder = project.root / "multirun" / sweep_id
    assert len(list(folder.glob("*/models/model_info.json"))) == 3
    assert not (project.root / "models").exists()

    listed = project.mmp("runs", "--sweep", sweep_id, "--sort", "valid_roc_auc").stdout
    assert listed.splitlines()[1].startswith(best.info.run_id)
    assert len(listed.splitlines()) == 4


def test_parallel_sweep_of_eight_jobs_loses_nothing(project: Project) -> None:
    """8 jobs, 2 at a time with the joblib launcher, on a store that does not exist yet."""
    assert not (project.root / "mlflow.db").exists()
    project.mmp(
        "sweep",
        "recipe=lgbm-tuned",
        "recipe.model.params.num_leaves=7,15,31,63",
        "seed=1,2",
        "recipe.model.params.n_estimators=80",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    )
    [parent] = project.runs("sweep")
    jobs = children(project, parent)
    assert len(jobs) == 8
    assert all(run.info.status == "FINISHED" for run in jobs)
    combos = {(run.data.params["recipe.model.params.num_leaves"], run.data.params["seed"]) for run in jobs}
    assert len(combos) == 8
    assert {run.data.tags["mmp.sweep_job"] for run in jobs} == {str(n) for n in range(8)}
    assert len(project.runs("explain")) == 8
    # prepare ran once per seed and was reused by the other jobs.
    assert len(project.runs("prepare")) == 2
    assert parent.data.metrics["jobs_finished"] == 8
    assert_nothing_running(project)


def test_a_failing_job_is_recorded_and_fails_the_sweep(project: Project) -> None:
    result = project.mmp("sweep", "recipe=xgb-baseline", "recipe.model.params.max_depth=3,deep", check=False)
    assert result.returncode != 0
    assert "1 of 2 sweep jobs failed" in result.stderr
    assert "Traceback" not in result.stderr
    [parent] = project.runs("sweep")
    assert parent.info.status == "FAILED"
    rows = summary_rows(project, parent)
    assert [row["status"] for row in rows] == ["FINISHED", "FAILED"]
    assert "max_depth must be an integer" in rows[1]["error"]
    assert_nothing_running(project)


def test_a_bad_sweep_override_fails_before_any_run(project: Project) -> None:
    result = project.mmp("sweep", "recipe=xgb-baseline,no-such-recipe", check=False)
    assert result.returncode != 0
    assert "Unknown recipe 'no-such-recipe'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert project.runs() == []


def trial_params(project: Project, parent: Any) -> list[dict[str, str]]:
    trials = sorted(children(project, parent), key=lambda run: int(run.data.tags["mmp.sweep_job"]))
    keys = ("num_leaves", "learning_rate", "min_child_samples", "colsample_bytree", "reg_lambda")
    return [{key: run.data.params[f"recipe.model.params.{key}"] for key in keys} for run in trials]


def test_seeded_search_is_reproducible_prunes_and_writes_a_recipe(project: Project) -> None:
    for _ in range(2):
        out = project.mmp("tune", "recipe=lgbm-tuned", "--n-trials", "7", "--seed", "0").stdout
        assert "best configuration: " in out
    first, second = sorted(project.runs("tune"), key=lambda run: run.info.start_time)
    assert trial_params(project, first) == trial_params(project, second)
    assert len(trial_params(project, first)) == 7

    # Trials report their valid loss every round; the median pruner stops unpromising ones.
    trials = children(project, first)
    pruned = [run for run in trials if run.data.tags.get("mmp.pruned") == "true"]
    assert pruned and all(run.info.status == "KILLED" for run in pruned)
    rows = summary_rows(project, first)
    assert sum(row["status"] == "PRUNED" for row in rows) == len(pruned)
    assert_nothing_running(project)

    # The best trial, written back as a recipe, reproduces under DVC with the very same metrics.
    recipe = project.root / "recipes" / "lgbm-tuned-best.yaml"
    written = yaml.safe_load(recipe.read_text())
    best = project.client().get_run(second.data.tags["mmp.best_run_id"])
    assert written["name"] == "lgbm-tuned-best"
    assert written["model"]["params"]["num_leaves"] == int(best.data.params["recipe.model.params.num_leaves"])
    project.mmp("compose", "recipe=lgbm-tuned-best", "-o", "params.yaml")
    project.dvc("repro")
    assert project.metrics()["test"]["roc_auc"] == best.data.metrics["test_roc_auc"]
    assert project.metrics()["valid"]["roc_auc"] == best.data.metrics["valid_roc_auc"]


def test_tune_under_cv_ranks_trials_out_of_fold_without_pruning(project: Project) -> None:
    # One trial: xgb-baseline as it stands, its 3 folds fitted without boosting-round reports.
    result = project.mmp("tune", "recipe=xgb-baseline", "cv.folds=3", "--n-trials", "1", "--seed", "0")
    assert "cv.folds=3: trials are ranked by the out-of-fold valid_roc_auc; no pruning" in result.stderr
    [parent] = project.runs("tune")
    [trial] = children(project, parent)
    assert trial.info.status == "FINISHED" and parent.data.tags["mmp.best_run_id"] == trial.info.run_id
    assert len(project.client().get_metric_history(trial.info.run_id, "cv_fold_roc_auc")) == 3
    # The trial's score, valid_roc_auc, is the out-of-fold one: close to the folds' mean, well above chance.
    metrics = trial.data.metrics
    assert metrics["valid_roc_auc"] > 0.8
    assert abs(metrics["valid_roc_auc"] - metrics["cv_roc_auc_mean"]) < 0.03
    assert [row["status"] for row in summary_rows(project, parent)] == ["FINISHED"]
    assert_nothing_running(project)


def test_bad_search_space_is_one_clear_line(project: Project) -> None:
    space = project.root / "recipes" / "search" / "bad.yaml"
    space.write_text("params:\n  num_leaves: {type: int, low: 50, high: 10}\n")
    result = project.mmp("tune", "recipe=lgbm-tuned", "--space", str(space), check=False)
    assert result.returncode != 0
    assert result.stderr.strip() == (
        f"mmp: error: params.num_leaves in search space {space} needs numbers low < high, got low=50 high=10"
    )
    missing = project.mmp("tune", "recipe=linear-baseline", check=False)
    assert "No search space for recipe 'linear-baseline'" in missing.stderr
    assert project.runs() == []
