"""One pipeline execution is one unit in MLflow: a pipeline run, the stage runs its children (issue 16).

Here in process, against a real SQLite store; tests/test_experiments.py checks the same under
`dvc exp run` and DVC's queue.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, clean_env
from mmp.config import load_config
from mmp.tracking import execution, stage_run
from mmp.tracking.orphans import process_started
from mmp.tracking.tags import EXECUTION_ENV, execution_id


@pytest.mark.slow  # creates an MLflow store
def test_stages_of_one_execution_are_children_of_one_pipeline_run(tmp_path: Path) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = [f"mlflow.tracking_uri={uri}", f"mlflow.artifact_location={tmp_path / 'mlruns'}"]
    config = load_config(["data=penguins", "recipe=lgbm-tuned", *overrides], root=REPO)
    with execution("mmp-train"):
        for stage in ("prepare", "train"):
            with stage_run(config, stage):
                mlflow.log_metric("test_accuracy" if stage == "train" else "rows_train", 0.9)
                mlflow.log_metric("valid_curve_mlogloss", 0.5, step=3)
        with pytest.raises(RuntimeError), stage_run(config, "explain"):
            raise RuntimeError("boom")
    assert EXECUTION_ENV not in os.environ
    with stage_run(config, "prepare"):  # a stage on its own: no pipeline run
        pass

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(config.mlflow.experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    [pipeline] = [run for run in runs if run.info.run_name == "pipeline · lgbm-tuned · penguins"]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == pipeline.info.run_id]
    assert sorted(run.info.run_name for run in children) == [
        "explain · lgbm-tuned · penguins",
        "prepare · lgbm-tuned · penguins",
        "train · lgbm-tuned · penguins",
    ]
    lone = [run for run in runs if run.info.run_id not in {r.info.run_id for r in [pipeline, *children]}]
    assert len(lone) == 1 and "mlflow.parentRunId" not in lone[0].data.tags
    # The failed explain stage leaves the pipeline FAILED; it ends with its last stage.
    assert pipeline.info.status == "FAILED"
    assert pipeline.info.end_time >= max(run.info.end_time for run in children)
    # It shows the train run's metrics (not the learning curves, not the other stages' metrics) and the config.
    assert pipeline.data.metrics == {"test_accuracy": 0.9}
    assert pipeline.data.params["recipe.name"] == "lgbm-tuned"
    assert pipeline.data.tags["mmp.stage"] == "pipeline" and pipeline.data.tags["mlflow.source.name"] == "mmp-train"
    assert {run.data.tags["mmp.execution"] for run in [pipeline, *children]} == {pipeline.data.tags["mmp.execution"]}


_PRINT_ID = "from mmp.tracking.tags import execution_id; print(execution_id())"


def test_stages_under_one_dvc_process_share_its_id() -> None:
    """DVC starts each stage (through a shell) with DVC_STAGE set; the id is the process that started them."""
    env = clean_env(DVC_STAGE="train")
    direct = subprocess.run([sys.executable, "-c", _PRINT_ID], env=env, capture_output=True, text=True, check=True)
    through_shell = subprocess.run(
        ["/bin/sh", "-c", f"{sys.executable} -c '{_PRINT_ID}'; true"],  # `; true`: the shell stays the parent
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    this = f"dvc:{platform.node()}:{os.getpid()}:{process_started(os.getpid())}"
    assert direct.stdout.strip() == through_shell.stdout.strip() == this
    given = subprocess.run(
        [sys.executable, "-c", _PRINT_ID], env={**env, EXECUTION_ENV: "x:1"}, capture_output=True, text=True
    )
    assert given.stdout.strip() == "x:1"
    assert execution_id() is None  # this process: no DVC, no mmp train
