"""Tracking at team scale (issue 18): an MLflow server with basic auth, its runs and users in the real
PostgreSQL server and its artifacts in the local S3-compatible server (tests/servers.py), proxied.

One server serves the module. A project trains to it with the user's password in `.env`, lists its runs,
serves the model and scores a file from it, then meets an outage mid-stage and mirrors afterwards. Finally the
store's tables, the bucket's objects, the server's log and everything the commands printed are searched for
the three passwords: the MLflow user's, PostgreSQL's and the S3 secret key.
"""

from __future__ import annotations

import base64
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from servers import team_mlflow_server
from test_remote_tracking import (
    BARRIER,
    EXPERIMENT,
    PASSWORD,
    ROW,
    USER,
    Team,
    logged_in,
    outage_at_the_mirror,
    trained_team,
)

from conftest import BIN, REPO, MlflowServer, start_server

pytestmark = pytest.mark.slow

BUCKET = "mlflow"
# test_remote_tracking's barrier, also in the `mmp train` process itself, which mirrors its stages in process.
_STAGE_SCRIPT = 'sys.argv[0].endswith("stages/train.py")'
assert _STAGE_SCRIPT in BARRIER
MMP_TRAIN_BARRIER = BARRIER.replace(_STAGE_SCRIPT, 'sys.argv[0].endswith(("stages/train.py", "/mmp"))')


@pytest.fixture(scope="module")
def team_server(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: Any, s3_server: Any
) -> Iterator[MlflowServer]:
    server = team_mlflow_server(tmp_path_factory.mktemp("team-server"), postgres_server, s3_server, BUCKET)
    server.start()
    server.create_user(USER, PASSWORD)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory, team_server: MlflowServer) -> Team:
    return trained_team(tmp_path_factory.mktemp("team") / "project", team_server)


def test_runs_in_postgres_artifacts_in_s3(team: Team, postgres_server: Any, s3_server: Any) -> None:
    runs = {run.data.tags["mmp.stage"]: run for run in team.runs()}
    assert {"prepare", "train", "explain"} <= set(runs) and all(r.info.status == "FINISHED" for r in runs.values())
    train = runs["train"]
    assert train.data.metrics["test_roc_auc"] >= 0.80
    assert train.info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied: the client never talks to S3
    # The store is PostgreSQL: the runs are rows there.
    stored = postgres_server.execute("mlflow_store", "SELECT run_uuid, status FROM runs")
    assert {(run.info.run_id, "FINISHED") for run in runs.values()} <= set(stored)
    # The artifacts are S3 objects: the model, its preprocessing and the plots of the train run.
    keys = list(s3_server.objects(BUCKET))
    assert any(f"/{train.info.run_id}/artifacts/plots/" in key for key in keys)
    assert any(key.endswith("/artifacts/MLmodel") for key in keys) and any("preprocessing.json" in k for k in keys)
    # `mmp runs` lists them from the server.
    listed = team.mmp("runs", "-c", "configs/prod.yaml", "--stage", "train", "--quiet")
    assert listed.returncode == 0 and listed.stdout.split() == [team.train_run_id], listed.stderr


def test_serve_and_batch_inference_load_the_model_from_s3_through_the_server(team: Team, tmp_path: Path) -> None:
    server = start_server(team.project, ["-c", "configs/prod.yaml", "--run-id", team.train_run_id, "--workers", "1"])
    try:
        status, _, body = server.request("/predict", ROW)
        assert status == 200 and body["prediction"] == "survived"
    finally:
        server.stop()
        team.transcripts.append(server.log_path.read_text())
    rows = tmp_path / "rows.csv"
    pl.read_csv(REPO / "data" / "titanic.csv").drop("survived").head(50).write_csv(rows)
    out = tmp_path / "predictions.csv"
    result = team.mmp(
        "batch-inference", "-c", "configs/prod.yaml", "--run-id", team.train_run_id, "-d", str(rows), "-o", str(out)
    )
    assert result.returncode == 0, result.stderr
    predictions = pl.read_csv(out)
    assert predictions.height == 50 and set(predictions["prediction"]) <= {"survived", "died"}


def test_outage_mid_stage_then_mmp_mirror(team: Team, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The server stops while `mmp train` mirrors its train stage (a file barrier, as in test_remote_tracking):
    the stage keeps its outputs and leaves a record; once the server is back, `mmp mirror` completes the run."""
    server = team.server
    project = team.project
    hooks = tmp_path_factory.mktemp("hooks")
    (hooks / "sitecustomize.py").write_text(MMP_TRAIN_BARRIER)
    # An outage: the team's server is restarted for maintenance (on the same PostgreSQL store, bucket and port).
    command = [str(BIN / "mmp"), "train", "-c", "configs/prod.yaml"]
    returncode, stdout, stderr = outage_at_the_mirror(command, project, hooks, server, signal.SIGTERM)
    team.transcripts += [stdout, stderr]
    assert returncode != 0
    assert "Run `mmp mirror`" in stderr and "The train stage finished and kept its outputs" in stderr, stderr
    records = list((project.root / ".mmp" / "pending").glob("train-*.json"))
    assert len(records) == 1
    run_id = json.loads(records[0].read_text())["run_id"]

    result = team.mmp("mirror")
    assert "1 stage run(s) handled" in result.stdout, result.stdout + result.stderr
    assert not list((project.root / ".mmp" / "pending").glob("*.json"))
    with logged_in():
        run = team.client().get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.metrics["test_roc_auc"] >= 0.80
        assert {"config.yaml", "metrics.json", "plots"} <= {item.path for item in team.client().list_artifacts(run_id)}


def test_no_password_in_the_store_the_bucket_or_the_logs(team: Team, postgres_server: Any, s3_server: Any) -> None:
    """Each service's secret was given in a .env file only: the user's in the project's, PostgreSQL's and S3's
    in the server's. None is in PostgreSQL's tables, the S3 objects, the server's log, any other file of the
    server or the project, or anything the commands printed."""
    searched = {f"output {i}": text.encode() for i, text in enumerate(team.transcripts)}
    for database in ("mlflow_store", "mlflow_auth"):
        searched[f"postgres {database}"] = postgres_server.dump(database).encode()
    assert "FINISHED" in searched["postgres mlflow_store"].decode()  # the dump holds the runs
    searched.update({f"s3 {key}": blob for key, blob in s3_server.objects(BUCKET).items()})
    assert sum(name.startswith("s3 ") for name in searched) > 10
    # The server's folder (its log, its auth config) and the projects: every file but the .env files.
    folders = [team.server.folder, *team.folders]
    files = [path for folder in folders for path in folder.rglob("*") if path.is_file() and path.name != ".env"]
    assert team.server.log_path in files
    searched.update({str(path): path.read_bytes() for path in files})
    secrets = {
        "the MLflow user's password": PASSWORD.encode(),
        "its Basic-auth token": base64.b64encode(f"{USER}:{PASSWORD}".encode()),
        "PostgreSQL's password": postgres_server.password.encode(),
        "the S3 secret key": s3_server.secret_key.encode(),
    }
    for what, secret in secrets.items():
        leaks = [name for name, blob in searched.items() if secret in blob]
        assert not leaks, f"{what} leaked into: {leaks}"
    assert EXPERIMENT in searched["postgres mlflow_store"].decode()
