"""Coming from MMP 1.x: its config (`tracking_uri: ./mlruns`), its file store and `MLFLOW_TRACKING_URI`.

The slow tests share one project: a file store is made the predecessor's way (MLFLOW_ALLOW_FILE_STORE=true,
runs with params, metrics and a model), refused until `mmp migrate-store` moves it into mlflow.db, then the
predecessor's config trains into the same experiment, `mmp runs` lists old and new runs, and `mlflow ui`
started with no flags shows them in headless Chromium as training runs with their metric column.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from headless_chromium import headless_chromium

from conftest import BIN, Project, free_port, make_project, printed_run_id, start_server, wait_for_http
from mmp.config.compose import tracking_settings
from mmp.tracking.store import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, VIEW_TAG, ui_path

EXPERIMENT = "my-experiment"
PASSENGER = {"pclass": "1st", "sex": "female", "age": 29, "sibsp": 0, "parch": 0}
OLD_CONFIG = "configs/old.yaml"
TRAIN = ["train", "-c", OLD_CONFIG, "-r", "recipes/xgb-baseline.yaml", "-d", "data/train.csv"]

# What MMP 1.x users ran: MLflow's own API against ./mlruns, with a model.
OLD_RUNS = """
import mlflow, mlflow.pyfunc, pandas as pd

class Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input["x"] * 2

mlflow.set_tracking_uri("./mlruns")
mlflow.set_experiment("my-experiment")
for number, auc in enumerate((0.71, 0.83)):
    with mlflow.start_run(run_name=f"old-{number}") as run:
        mlflow.log_params({"max_depth": 3 + number, "learning_rate": 0.1})
        mlflow.log_metrics({"valid_roc_auc": auc - 0.01, "test_roc_auc": auc})
        for step in range(3):
            mlflow.log_metric("train_curve_logloss", 0.6 - step / 10, step=step)
        if number == 1:
            mlflow.pyfunc.log_model(name="model", python_model=Doubler(), input_example=pd.DataFrame({"x": [1.0]}))
        print(run.info.run_id)
"""


# --------------------------------------------------------------------------- the config (fast)


@pytest.mark.parametrize("uri", ["./mlruns", "mlruns", "file:./mlruns", "file:mlruns", "./mlruns/"])
def test_the_predecessors_store_becomes_the_default_local_store(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with caplog.at_level(logging.WARNING, logger="mmp"):
        settings = tracking_settings({"tracking_uri": uri, "experiment_name": EXPERIMENT}, tmp_path)
    assert settings == {
        "tracking_uri": "sqlite:///mlflow.db",
        "experiment_name": EXPERIMENT,
        "artifact_location": "mlruns",
    }
    notices = [r.getMessage() for r in caplog.records if "MMP 1.x" in r.getMessage()]
    assert len(notices) <= 1  # once per process: another parametrisation may have printed it already


def test_mlflow_tracking_uri_wins_with_one_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:pw-secret@mlflow.example:5000")
    with caplog.at_level(logging.WARNING, logger="mmp"):
        settings = tracking_settings({"tracking_uri": "sqlite:///mlflow.db", "experiment_name": "mmp"}, tmp_path)
    assert settings["tracking_uri"] == "http://alice:pw-secret@mlflow.example:5000"
    lines = [r.getMessage() for r in caplog.records if "MLFLOW_TRACKING_URI" in r.getMessage()]
    assert lines == [
        "MLFLOW_TRACKING_URI is set: runs go to http://alice:***@mlflow.example:5000, "
        "not mlflow.tracking_uri (sqlite:///mlflow.db)"
    ]
    # The project's .env counts as the environment, as it does for MLflow's credentials.
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    (tmp_path / ".env").write_text("MLFLOW_TRACKING_URI=sqlite:///other.db\n")
    assert tracking_settings({"tracking_uri": "sqlite:///mlflow.db"}, tmp_path)["tracking_uri"] == "sqlite:///other.db"


# --------------------------------------------------------------------------- a predecessor's project (slow)


@pytest.fixture(scope="module")
def old_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    project = make_project(tmp_path_factory.mktemp("predecessor") / "project")
    script = project.root / "old_runs.py"
    script.write_text(OLD_RUNS)
    ids = project.run(str(BIN / "python"), str(script), MLFLOW_ALLOW_FILE_STORE="true").stdout.split()
    assert len(ids) == 2 and len(list((project.root / "mlruns").glob("*/meta.yaml"))) == 2  # Default, my-experiment
    project.mmp("get-config", "--env-name", "old", "--tracking-uri", "./mlruns", "--experiment-name", EXPERIMENT)
    project.old_run_ids = ids  # type: ignore[attr-defined]
    return project


def one_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("mmp: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.slow
def test_an_old_file_store_is_detected_before_anything_is_written(old_project: Project) -> None:
    error = one_error(old_project.mmp(*TRAIN, check=False))
    assert "holds an MLflow file store" in error and "mmp migrate-store" in error
    assert not (old_project.root / "mlflow.db").exists()
    assert not list((old_project.root / "runs").glob("*"))  # no run folder was left


@pytest.mark.slow
def test_migrate_store_moves_the_file_store_losslessly(old_project: Project) -> None:
    import mlflow

    result = old_project.mmp("migrate-store", "-c", OLD_CONFIG)
    assert "moved 2 run(s) of 2 experiment(s)" in result.stdout, result.stdout  # Default (0) and my-experiment
    assert not (old_project.root / "mlflow.db.migrating").exists()
    # MLflow no longer takes mlruns/ for a store: `mlflow ui` with no flags opens mlflow.db.
    assert not list((old_project.root / "mlruns").glob("*/meta.yaml"))
    client = old_project.client()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = {run.info.run_id: run for run in client.search_runs([experiment.experiment_id])}
    assert set(runs) == set(old_project.old_run_ids)
    newer = runs[old_project.old_run_ids[1]]
    assert newer.data.params == {"max_depth": "4", "learning_rate": "0.1"}
    assert newer.data.metrics["test_roc_auc"] == pytest.approx(0.83)
    assert [m.value for m in client.get_metric_history(newer.info.run_id, "train_curve_logloss")] == pytest.approx(
        [0.6, 0.5, 0.4]
    )
    mlflow.set_tracking_uri(old_project.tracking_uri)
    model = mlflow.pyfunc.load_model(f"runs:/{newer.info.run_id}/model")
    import pandas as pd

    assert list(model.predict(pd.DataFrame({"x": [1.5, 2.0]}))) == [3.0, 4.0]
    again = old_project.mmp("migrate-store", "-c", OLD_CONFIG, check=False)
    assert "No MLflow file store" in one_error(again)


@pytest.mark.slow
def test_the_predecessors_config_trains_and_lists_old_and_new_runs(old_project: Project) -> None:
    result = old_project.mmp(*TRAIN)
    notices = [line for line in result.stderr.splitlines() if "MMP 1.x's file store" in line]
    assert len(notices) == 1, result.stderr
    run_id = printed_run_id(result.stdout)
    client = old_project.client()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND and VIEW_TAG in experiment.tags
    assert f"http://127.0.0.1:5000{ui_path(experiment.experiment_id)}" in result.stdout  # the link to the runs
    train = client.get_run(run_id)
    assert train.info.experiment_id == experiment.experiment_id
    assert train.data.metrics["test_roc_auc"] >= 0.8
    assert str(old_project.root / "mlruns") in train.info.artifact_uri  # artifacts beside the old ones
    listed = old_project.mmp("runs", "-c", OLD_CONFIG, "--stage", "all", "--quiet").stdout.split()
    assert {run_id, *old_project.old_run_ids} <= set(listed)


@pytest.mark.slow
def test_promote_the_best_run_then_serve_and_batch_by_alias(old_project: Project, tmp_path: Path) -> None:
    best = old_project.mmp("runs", "-c", OLD_CONFIG, "--best", "--data", "train", "--quiet").stdout.split()
    assert len(best) == 1
    run_id = best[0]
    promoted = old_project.mmp("promote", run_id, "--name", "titanic-clf", "--alias", "champion", "-c", OLD_CONFIG)
    assert "registered titanic-clf version 1" in promoted.stdout, promoted.stdout
    assert "mmp serve-api --model-uri models:/titanic-clf@champion" in promoted.stdout
    client = old_project.client()
    version = client.get_model_version_by_alias("titanic-clf", "champion")
    run = client.get_run(run_id)
    assert str(version.version) == "1" and version.run_id == run_id
    assert version.tags["mmp.data"] == "train" and version.tags["mmp.recipe"] == "xgb-baseline"
    assert float(version.tags["test_roc_auc"]) == pytest.approx(run.data.metrics["test_roc_auc"], rel=1e-5)
    assert not any("_curve_" in key for key in version.tags)

    server = start_server(
        old_project, ["-c", OLD_CONFIG, "--model-uri", "models:/titanic-clf@champion", "--workers", "1"]
    )
    try:
        status, _, body = server.request("/predict", PASSENGER)
        assert status == 200 and body["prediction"] == "survived"
        status, _, metadata = server.request("/metadata")
        assert (
            status == 200 and metadata["run_id"] == run_id and metadata["model_uri"] == "models:/titanic-clf@champion"
        )
    finally:
        server.stop()
    output = tmp_path / "predictions.csv"
    batch = ["batch-inference", "-c", OLD_CONFIG, "--model-uri", "models:/titanic-clf@champion"]
    old_project.mmp(*batch, "-d", "data/train.csv", "-o", str(output))
    import polars as pl

    predictions = pl.read_csv(output)
    assert predictions.height == pl.read_csv(old_project.root / "data" / "train.csv").height
    assert {"prediction", "proba_survived"} <= set(predictions.columns)

    again = old_project.mmp("promote", run_id, "--name", "titanic-clf", "--alias", "champion", "-c", OLD_CONFIG)
    assert (
        "version 2" in again.stdout and str(client.get_model_version_by_alias("titanic-clf", "champion").version) == "2"
    )
    missing = old_project.mmp("promote", "0" * 32, "--name", "titanic-clf", "-c", OLD_CONFIG, check=False)
    assert "No run '00000000000000000000000000000000'" in one_error(missing)


# --------------------------------------------------------------------------- the MLflow UI (slow, Chromium)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with headless_chromium(tmp_path_factory.mktemp("chromium-ui"), "1400,900", page_load_timeout=60) as driver:
        yield driver


@pytest.mark.slow
def test_mlflow_ui_opens_on_training_runs_with_the_primary_metric(
    old_project: Project, chromium: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    experiment = old_project.client().get_experiment_by_name(EXPERIMENT)
    names = {run.info.run_name for run in old_project.client().search_runs([experiment.experiment_id])}
    port = free_port()
    log_path = tmp_path / "ui.log"
    # No flags, from the project root: MLflow's default store, which must now be mlflow.db.
    process = subprocess.Popen(
        [str(BIN / "mlflow"), "ui", "--port", str(port), "--workers", "1"],
        cwd=old_project.root,
        env={**old_project.env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process, log_path)
        chromium.get(f"http://127.0.0.1:{port}{ui_path(experiment.experiment_id)}")
        body = WebDriverWait(chromium, 60).until(
            lambda driver: (
                (text := driver.find_element(By.TAG_NAME, "body").text)
                and "test_roc_auc" in text
                and "old-1" in text
                and text
            )
        )
        chromium.save_screenshot(str(tmp_path / "mlflow-ui.png"))
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    assert "No data available" not in body  # not the GenAI traces overview
    assert "Runs" in body and "matching runs" in body
    assert {"old-0", "old-1"} <= names and "old-0" in body
    assert "0.83" in body  # the migrated run's test_roc_auc, in its column
    assert (tmp_path / "mlflow-ui.png").stat().st_size > 10_000
