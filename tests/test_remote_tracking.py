"""Team tracking against a real `mlflow server --app-name basic-auth` on a loopback port.

One server serves the module. A project trains to it with credentials in `.env`, serves the model back
from it, and meets the failures a team meets: a wrong password, a server that is down, a server that dies
while a stage is being mirrored. Finally the whole store, the server's log and every command's output are
searched for the password.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    BIN,
    MLFLOW_ADMIN_PASSWORD,
    MlflowServer,
    Project,
    free_port,
    make_project,
    printed_run_id,
    start_server,
)
from mmp.tracking.system_check import CHECKS

pytestmark = pytest.mark.slow

USER = "alice"
PASSWORD = f"pw-{secrets.token_hex(12)}"  # random, so that finding it anywhere is never a coincidence
EXPERIMENT = "team"
ROW = {"pclass": "1st", "sex": "female", "age": 29.0, "sibsp": 0, "parch": 0}


@dataclass
class Team:
    """A project set up for the team server; what the secrets scan must search is collected here."""

    project: Project
    server: MlflowServer
    train_run_id: str = ""
    transcripts: list[str] = field(default_factory=list)  # everything the commands printed
    folders: list[Path] = field(default_factory=list)  # every project made for the server

    def mmp(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        result = self.project.mmp(*args, check=False, **env)
        self.transcripts += [result.stdout, result.stderr]
        return result

    def client(self) -> Any:
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.server.url)

    def runs(self) -> list[Any]:
        with logged_in():
            client = self.client()
            found = client.get_experiment_by_name(EXPERIMENT)
            return client.search_runs([found.experiment_id]) if found else []

    def new_project(self, root: Path) -> Project:
        project = remote_project(root, self.server)
        self.folders.append(root)
        return project


@contextlib.contextmanager
def logged_in(user: str = USER, password: str = PASSWORD) -> Iterator[None]:
    """The test process's own MLflow client logs in as ``user`` (the team user) inside the block."""
    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    saved = {key: os.environ.get(key) for key in keys}
    os.environ.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def remote_project(root: Path, server: MlflowServer) -> Project:
    """A project copy with configs/prod.yaml pointing at the server and the credentials in .env."""
    project = make_project(root)
    project.mmp(
        "get-config", "--env-name", "prod", "--remote", "--tracking-uri", server.url, "--experiment-name", EXPERIMENT
    )
    (project.root / ".env").write_text(f"MLFLOW_TRACKING_USERNAME={USER}\nMLFLOW_TRACKING_PASSWORD={PASSWORD}\n")
    return project


def trained_team(root: Path, server: MlflowServer) -> Team:
    """A project in ``root`` for ``server`` (the team user must exist there), trained once with `mmp train`."""
    team = Team(remote_project(root, server), server, folders=[root])
    result = team.mmp("train", "-c", "configs/prod.yaml")
    assert result.returncode == 0, result.stderr
    team.train_run_id = printed_run_id(result.stdout)
    return team


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory, mlflow_server: MlflowServer) -> Team:
    mlflow_server.create_user(USER, PASSWORD)
    return trained_team(tmp_path_factory.mktemp("team") / "project", mlflow_server)


def test_training_logs_runs_and_model_to_the_server(team: Team) -> None:
    import mlflow

    runs = {run.data.tags["mmp.stage"]: run for run in team.runs()}
    assert set(runs) == {"pipeline", "prepare", "train", "explain"}  # one execution: a parent and its stages
    assert all(run.info.status == "FINISHED" for run in runs.values())
    parent = runs["pipeline"].info.run_id
    assert all(runs[stage].data.tags["mlflow.parentRunId"] == parent for stage in ("prepare", "train", "explain"))
    train = runs["train"]
    assert train.info.run_id == team.train_run_id
    assert train.data.metrics["test_roc_auc"] >= 0.80
    assert train.data.tags["mmp.prepare_run_id"] == runs["prepare"].info.run_id
    assert train.data.tags["mmp.explain_run_id"] == runs["explain"].info.run_id
    assert train.data.params["recipe.model.name"] == "xgboost"
    assert train.info.artifact_uri.startswith("mlflow-artifacts:/")  # stored by the server, not on this disk
    mlflow.set_tracking_uri(team.server.url)
    with logged_in():
        artifacts = {item.path for item in team.client().list_artifacts(train.info.run_id)}
        models = mlflow.search_logged_models(
            experiment_ids=[train.info.experiment_id],
            filter_string=f"source_run_id = '{train.info.run_id}'",
            output_format="list",
        )
    assert {"config.yaml", "metrics.json", "preprocessing.json", "plots", "explain"} <= artifacts
    assert len(models) == 1 and str(models[0].status) == "READY"
    # Nothing went to a local store.
    assert not (team.project.root / "mlflow.db").exists() and not (team.project.root / "mlruns").exists()


def test_serve_api_loads_the_model_from_the_server(team: Team) -> None:
    server = start_server(team.project, ["-c", "configs/prod.yaml", "--run-id", team.train_run_id, "--workers", "1"])
    try:
        status, _, body = server.request("/predict", ROW)
        assert status == 200 and body["prediction"] == "survived"
        status, _, metadata = server.request("/metadata")
        assert status == 200 and metadata["run_id"] == team.train_run_id
        assert metadata["metrics"]["test_roc_auc"] >= 0.80
    finally:
        server.stop()
        team.transcripts.append(server.log_path.read_text())


def test_promote_on_the_server_then_serve_by_alias(team: Team) -> None:
    promoted = team.mmp(
        "promote", team.train_run_id, "--name", "team-model", "--alias", "champion", "-c", "configs/prod.yaml"
    )
    assert promoted.returncode == 0, promoted.stderr
    assert "registered team-model version 1" in promoted.stdout
    with logged_in():
        version = team.client().get_model_version_by_alias("team-model", "champion")
    assert version.run_id == team.train_run_id and version.tags["mmp.data"] == "titanic"
    assert float(version.tags["test_roc_auc"]) >= 0.80
    server = start_server(
        team.project, ["-c", "configs/prod.yaml", "--model-uri", "models:/team-model@champion", "--workers", "1"]
    )
    try:
        status, _, body = server.request("/predict", ROW)
        assert status == 200 and body["prediction"] == "survived"
        assert server.request("/metadata")[2]["run_id"] == team.train_run_id
    finally:
        server.stop()
        team.transcripts.append(server.log_path.read_text())


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("mmp: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_wrong_password_fails_before_training(team: Team) -> None:
    before = (run_folders(team.project), len(team.runs()))
    # A variable set in the environment wins over .env; here it carries the wrong password.
    result = team.mmp("train", "-c", "configs/prod.yaml", MLFLOW_TRACKING_PASSWORD="not-the-password")
    error = one_error_line(result)
    assert f"MLflow at {team.server.url} refused the credentials of user '{USER}'" in error
    assert "MLFLOW_TRACKING_PASSWORD in .env" in error
    assert "not-the-password" not in result.stdout + result.stderr
    assert "[mmp] prepare:" not in result.stderr  # no stage started
    assert (run_folders(team.project), len(team.runs())) == before


def run_folders(project: Project) -> list[str]:
    """`mmp train`'s output folders (runs/...): a train that fails first leaves none."""
    folder = project.root / "runs"
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


def down_config(project: Project) -> str:
    """configs/down.yaml: a server address where nothing listens. Returns its URI."""
    down = f"http://127.0.0.1:{free_port()}"
    (project.root / "configs" / "down.yaml").write_text(f"mlflow:\n  tracking_uri: {down}\n")
    return down


def test_unreachable_server_fails_within_seconds(team: Team) -> None:
    down = down_config(team.project)
    for command in (["train", "-c", "configs/down.yaml"], ["runs", "-c", "configs/down.yaml"]):
        started = time.monotonic()
        result = team.mmp(*command)
        elapsed = time.monotonic() - started
        error = one_error_line(result)
        assert f"MLflow server {down} is unreachable (connection refused)" in error, error
        # mmp's retries take ~3 s; MLflow's defaults (7 retries, doubling backoff) take minutes. The bound only
        # tells the two apart: start-up alone took 30 s on a loaded 2-core machine.
        assert elapsed < 90, f"{command[0]} took {elapsed:.1f} s to give up"


def test_system_check_against_the_server(team: Team) -> None:
    result = team.mmp("system-check", "-c", "configs/prod.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["OK", name] for name in CHECKS]
    assert f"user '{USER}'" in lines[1] and f"experiment '{EXPERIMENT}'" in lines[2]
    # Its throwaway run is gone again (alice created the experiment, so she may delete runs in it).
    assert not [run for run in team.runs() if run.data.tags.get("mmp.tracking.system_check")]

    result = team.mmp("system-check", "-c", "configs/prod.yaml", MLFLOW_TRACKING_PASSWORD="not-the-password")
    assert result.returncode != 0
    status = {line.split()[1]: line for line in result.stdout.splitlines()}
    assert status["connectivity"].startswith("OK")
    assert status["login"].startswith("FAIL") and f"user '{USER}'" in status["login"]
    assert "-> fix: put the right MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD in .env" in status["login"]
    assert status["experiment"].startswith("SKIP") and status["artifacts"].startswith("SKIP")
    assert "failed (login)" in one_error_line(result)

    down = down_config(team.project)
    started = time.monotonic()
    result = team.mmp("system-check", "-c", "configs/down.yaml")
    assert time.monotonic() - started < 20
    status = {line.split()[1]: line for line in result.stdout.splitlines()}
    assert status["connectivity"].startswith(f"FAIL  connectivity  MLflow server {down} is unreachable")
    assert "-> fix: start it" in status["connectivity"]
    assert status["packages"].startswith("OK")
    assert "failed (connectivity)" in one_error_line(result)


def test_read_only_user_is_told_to_ask_for_edit_permission(team: Team) -> None:
    """The server's default permission is READ: a second user may look at the team's experiment, not write."""
    from mlflow.server import get_app_client

    bob = {"MLFLOW_TRACKING_USERNAME": "bob", "MLFLOW_TRACKING_PASSWORD": f"bob-{secrets.token_hex(8)}"}
    team.server.create_user("bob", bob["MLFLOW_TRACKING_PASSWORD"])
    refused = f"User 'bob' may not write to experiment '{EXPERIMENT}' at {team.server.url}"
    result = team.mmp("system-check", "-c", "configs/prod.yaml", **bob)
    status = {line.split()[1]: line for line in result.stdout.splitlines()}
    assert status["login"].startswith("OK") and "user 'bob'" in status["login"]
    assert status["experiment"].startswith(f"FAIL  experiment    {refused} -> fix: ask an MLflow admin for EDIT")

    before = (run_folders(team.project), len(team.runs()))
    error = one_error_line(team.mmp("train", "-c", "configs/prod.yaml", **bob))
    assert refused in error and "EDIT permission" in error
    assert (run_folders(team.project), len(team.runs())) == before  # nothing written, no run left behind

    with logged_in("admin", MLFLOW_ADMIN_PASSWORD):
        experiment_id = team.client().get_experiment_by_name(EXPERIMENT).experiment_id
        get_app_client("basic-auth", tracking_uri=team.server.url).grant_user_permission(
            "bob", "experiment", experiment_id, "EDIT"
        )
    result = team.mmp("system-check", "-c", "configs/prod.yaml", **bob)
    assert result.returncode == 0, result.stdout
    # With EDIT but not MANAGE, bob may not delete the check's run; the check says so instead of failing.
    assert "deleting runs needs MANAGE permission" in result.stdout


# --------------------------------------------------------------------------- the server dies mid-stage

# Injected into the stage processes through PYTHONPATH: before the train stage mirrors, it says so with
# a file and waits for a second file. The pipeline itself has no test hook.
BARRIER = """
import os, sys, time
from pathlib import Path

# The train stage, and the recorder process that mirrors its run (src/mmp/tracking/recorder.py).
if (sys.argv and sys.argv[0].endswith("stages/train.py")) or "mmp.pipeline.recorder_process" in sys.orig_argv:
    from mmp.pipeline import replay, train

    barrier, mirror = Path(os.environ["MMP_TEST_BARRIER"]), train._mirror_train

    def paused(*args):
        (barrier / "reached").touch()
        while not (barrier / "go").exists():
            time.sleep(0.1)
        return mirror(*args)

    train._mirror_train = replay.MIRRORS["train"] = paused
"""


def outage_at_the_mirror(
    command: list[str], project: Project, hooks: Path, server: MlflowServer, sig: signal.Signals, **env: str
) -> tuple[int, str, str]:
    """Run ``command`` in ``project`` with ``hooks`` (a folder holding a barrier's sitecustomize.py) on its
    PYTHONPATH; stop ``server`` with ``sig`` when a stage reaches its mirror, then let the stage go on. The
    server is started again (same store and port) before this returns the command's exit code and output."""
    process = project.start(*command, **env, PYTHONPATH=str(hooks), MMP_TEST_BARRIER=str(hooks))
    stopped = False
    try:
        deadline = time.monotonic() + 300
        while not (hooks / "reached").exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the train stage never reached its mirror"
            time.sleep(0.2)
        server.stop(sig)
        stopped = True
        (hooks / "go").touch()
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
        if stopped:  # (a second server on a port still held would leave the first one running)
            server.start()
    return process.returncode, stdout, stderr


def test_server_dying_during_a_stage_loses_nothing(team: Team, tmp_path_factory: pytest.TempPathFactory) -> None:
    """`dvc repro` against the server, which is killed (SIGKILL) while the train stage is being mirrored.

    Deterministic without a hook in mmp: a `sitecustomize` module on the stage's PYTHONPATH wraps the train
    stage's mirror function (in the stage's recorder process, which mirrors the run) so that it waits on a
    file barrier. The test kills the server at the barrier,
    then lets the stage go on into a dead server. Train must keep its outputs and exit 0 (so DVC records it
    in dvc.lock); explain then fails at once on the dead server. With the server restarted on the same store
    and port, `mmp mirror` completes the train run from the outputs, and `dvc repro` runs only explain.
    """
    server = team.server
    project = team.new_project(tmp_path_factory.mktemp("dies") / "project")
    hooks = project.root.parent / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(BARRIER)
    command = [str(BIN / "dvc"), "repro"]
    returncode, stdout, stderr = outage_at_the_mirror(
        command, project, hooks, server, signal.SIGKILL, MMP_CONFIG="configs/prod.yaml"
    )
    team.transcripts += [stdout, stderr]

    # Train kept its outputs, said what to do, and DVC recorded it; explain failed on the dead server.
    assert returncode != 0
    warnings = [line for line in stderr.splitlines() if "Run `mmp mirror`" in line]
    assert len(warnings) == 1 and "The train stage finished and kept its outputs" in warnings[0], stderr
    assert f"MLflow server {server.url} is unreachable" in stderr
    assert set(json.loads(project.dvc("status", "--json").stdout)) == {"explain"}  # prepare, train are locked
    metrics = project.metrics()
    assert metrics["test"]["roc_auc"] >= 0.80
    assert (project.root / "models" / "model.ubj").is_file() and (project.root / "plots" / "roc_curve.png").is_file()
    records = list((project.root / ".mmp" / "pending").glob("train-*.json"))
    assert len(records) == 1
    run_id = json.loads(records[0].read_text())["run_id"]

    # The killed server left the run RUNNING, half mirrored. `mmp mirror` completes it from the outputs.
    with logged_in():
        assert team.client().get_run(run_id).info.status == "RUNNING"
    result = project.mmp("mirror")
    team.transcripts += [result.stdout, result.stderr]
    assert "1 stage run(s) handled" in result.stdout
    assert f"mirrored the train stage into run {run_id}" in result.stderr
    assert not list((project.root / ".mmp" / "pending").glob("*.json"))
    with logged_in():
        run = team.client().get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.metrics["test_roc_auc"] == pytest.approx(metrics["test"]["roc_auc"])
        assert {"fit_seconds", "best_iteration"} <= set(run.data.metrics)
        assert len(team.client().get_metric_history(run_id, "valid_curve_logloss")) > 5
        artifacts = {item.path for item in team.client().list_artifacts(run_id)}
        assert {"config.yaml", "metrics.json", "preprocessing.json", "plots"} <= artifacts
    assert project.mmp("mirror").stdout.startswith("Nothing to mirror")

    # The mirrored model serves; DVC runs only what is left; no run stays RUNNING.
    import mlflow

    from mmp.inference import source as model_source

    mlflow.set_tracking_uri(server.url)
    with logged_in():
        uri = model_source.resolve_model_uri(run_id)
    assert uri.startswith("models:/m-")
    result = project.dvc("repro", MMP_CONFIG="configs/prod.yaml")
    assert "Running stage 'explain'" in result.stdout
    assert "Running stage 'train'" not in result.stdout and "Running stage 'prepare'" not in result.stdout
    assert project.metrics() == metrics
    assert all(run.info.status == "FINISHED" for run in team.runs())


# --------------------------------------------------------------------------- secrets


def test_password_appears_nowhere(team: Team, tmp_path: Path) -> None:
    """After training, serving and failing with credentials in .env, the password is only in .env.

    Searched: every run's params, tags, metric names and logged text and artifacts (downloaded), every file
    of the server (its store, artifacts, user database and log), every file of the projects but .env, and
    everything the commands printed. Also the Basic-auth token, in case a header was logged.
    """
    import mlflow

    texts = {f"output {i}": text.encode() for i, text in enumerate(team.transcripts)}
    with logged_in():
        client = team.client()
        for experiment in client.search_experiments():
            for run in client.search_runs([experiment.experiment_id]):
                logged = [run.data.params, run.data.tags, list(run.data.metrics)]
                texts[f"run {run.info.run_id}"] = json.dumps(logged).encode()
                mlflow.artifacts.download_artifacts(
                    run_id=run.info.run_id, dst_path=str(tmp_path / run.info.run_id), tracking_uri=team.server.url
                )
    assert sum(name.startswith("run ") for name in texts) >= 6  # prepare, train, explain of two projects
    folders = [tmp_path, team.server.folder, *team.folders]
    files = {str(path): path.read_bytes() for folder in folders for path in folder.rglob("*") if path.is_file()}
    env_files = [name for name in files if name.endswith("/.env")]
    assert len(env_files) == len(team.folders) and all(PASSWORD.encode() in files[name] for name in env_files)
    assert any(name.endswith("/config.yaml") for name in files) and any(name.endswith("server.log") for name in files)
    searched = {**texts, **{name: blob for name, blob in files.items() if name not in env_files}}
    for secret in (PASSWORD.encode(), base64.b64encode(f"{USER}:{PASSWORD}".encode())):
        leaks = [name for name, blob in searched.items() if secret in blob]
        assert not leaks, f"the password leaked into: {leaks}"
