"""`mmp system-check` and `mmp mirror` on the local SQLite store; store failure messages and secret redaction.

The same checks against a real authenticated server are in test_remote_tracking.py.
"""

from __future__ import annotations

import pytest

from conftest import Project, free_port
from mmp import tracking
from mmp.config import load_config
from mmp.redaction import redact
from mmp.tracking import pending, system_check


def test_redact_masks_uri_passwords_and_secret_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "API request to http://alice:s3cr3t-pw@mlflow.company.com:5000/api failed; also https://bob:x@h/"
    assert redact(text) == "API request to http://alice:***@mlflow.company.com:5000/api failed; also https://bob:***@h/"
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2-hunter2")
    assert redact("login hunter2-hunter2 refused") == "login *** refused"
    assert redact("sqlite:////tmp/mlflow.db and http://host:5000") == "sqlite:////tmp/mlflow.db and http://host:5000"


# Messages as MLflow 3.17 and requests raise them (seen against a real server); the port contains "403".
UNAUTHORIZED = (
    "API request to endpoint /api/2.0/mlflow/experiments/get-by-name failed with error code 401 != 200. "
    "Response body: 'You are not authenticated.'"
)
FORBIDDEN = "API request to endpoint /api/2.0/mlflow/runs/create failed with error code 403 != 200. Permission denied"
REFUSED = (
    "API request to http://127.0.0.1:40317/api/2.0/mlflow/experiments/get-by-name failed with exception "
    "HTTPConnectionPool(host='127.0.0.1', port=40317): Max retries exceeded with url: ... "
    '(Caused by NewConnectionError("...: Failed to establish a new connection: [Errno 111] Connection refused"))'
)


def test_store_failures_name_the_store_the_user_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    uri = "http://127.0.0.1:40317"
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    assert tracking.describe_failure(uri, Exception(UNAUTHORIZED)) == (
        "MLflow at http://127.0.0.1:40317 refused the credentials of user 'alice'; "
        "put the right MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD in .env"
    )
    assert tracking.describe_failure(uri, Exception(FORBIDDEN), "team").startswith(
        "User 'alice' may not write to experiment 'team' at http://127.0.0.1:40317; ask an MLflow admin for EDIT"
    )
    assert tracking.describe_failure(uri, Exception(REFUSED)).startswith(
        "MLflow server http://127.0.0.1:40317 is unreachable (connection refused); start it"
    )
    assert all(tracking.is_store_failure(Exception(text)) for text in (UNAUTHORIZED, FORBIDDEN, REFUSED))
    assert not tracking.is_store_failure(ValueError("Invalid metric name: 'a?b'"))
    assert not tracking.is_store_failure(FileNotFoundError("models/model.ubj"))
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    assert "requires a login; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in .env" in (
        tracking.describe_failure(uri, Exception(UNAUTHORIZED))
    )
    secret_uri = "http://alice:pa55word-xyz@127.0.0.1:40317"
    message = tracking.describe_failure(secret_uri, Exception(REFUSED.replace("127.0.0.1:40317/", f"{secret_uri}/")))
    assert "pa55word-xyz" not in message and "alice:***@127.0.0.1" in message


def test_package_check_names_the_mismatch_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system_check, "requirement_lines", lambda: ["numpy<1.0", "no-such-package-mmp>=1", "pyyaml"])
    result = system_check._run("packages", system_check._packages)
    assert result.status == system_check.FAIL
    assert "numpy 2." in result.detail and "mmp needs <1.0" in result.detail
    assert "no-such-package-mmp is missing" in result.detail
    assert result.fix == "run `make install` (or `pip install -e .`) in the project"
    monkeypatch.undo()
    result = system_check._run("packages", system_check._packages)
    assert result.status == system_check.OK, result.detail  # this venv was installed from setup.cfg
    assert any(line.startswith("mlflow[auth]") for line in system_check.requirement_lines())


@pytest.mark.slow
def test_system_check_and_mirror_on_the_local_store(project: Project) -> None:
    result = project.mmp("system-check")
    assert [line.split()[:2] for line in result.stdout.splitlines()] == [["OK", name] for name in system_check.CHECKS]
    assert "does not exist yet; the first run creates it" in result.stdout.splitlines()[0]
    assert "file://" in result.stdout.splitlines()[3]  # artifacts under the project's mlruns/
    assert project.runs() == []  # the throwaway run is deleted again
    assert project.mmp("mirror").stdout.strip() == "Nothing to mirror: every finished stage is in MLflow"

    # A store that cannot be created: the check says where, and what to do.
    (project.root / "configs").mkdir(exist_ok=True)
    store = project.root / "README.md" / "store" / "m.db"  # under a file: no one can create that, root included
    (project.root / "configs" / "nowhere.yaml").write_text(f"mlflow:\n  tracking_uri: sqlite:///{store}\n")
    result = project.mmp("system-check", "-c", "configs/nowhere.yaml", check=False)
    assert result.returncode != 0
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"FAIL  connectivity  store {store} cannot be created: {project.root / 'README.md'} is")
    assert "-> fix: point mlflow.tracking_uri at a folder you may write to" in first
    assert result.stderr.strip().startswith("mmp: error: 1 check(s) failed (connectivity)")
    result = project.mmp("train", "-c", "configs/nowhere.yaml", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"mmp: error: MLflow store sqlite:///{store} cannot be opened; its folder must exist and be writable by you "
        "(check the permissions of a mounted folder)"
    )


@pytest.mark.slow
def test_pending_mirror_is_reported_and_replayed(project: Project) -> None:
    """A pending record (as a stage leaves it when the store fails mid-mirror) fails the check until
    `mmp mirror` replays it; a record whose outputs a later run replaced is dropped, its run marked FAILED.
    The real interruption, with a server killed mid-stage, is in test_remote_tracking.py."""
    project.mmp("prepare")
    run = project.runs("prepare")[0]
    config = load_config([], root=project.root)
    outputs = [project.root / "data" / "prepared"]
    pending.save(config, "prepare", run.info.run_id, {}, outputs, "the store went away")
    result = project.mmp("system-check", check=False)
    mirrors = result.stdout.splitlines()[-1]
    assert mirrors == (
        f"FAIL  mirrors       1 finished stage(s) not fully in MLflow: prepare (run {run.info.run_id}) "
        "-> fix: run `mmp mirror`"
    )
    result = project.mmp("mirror")
    assert f"mirrored the prepare stage into run {run.info.run_id}" in result.stderr
    assert project.client().get_run(run.info.run_id).info.status == "FINISHED"
    assert not pending.load_all(project.root)

    pending.save(config, "prepare", run.info.run_id, {}, outputs, "the store went away")
    project.mmp("prepare", "seed=7")  # a later run replaces the outputs
    result = project.mmp("mirror")
    assert "were replaced by a later run before they were logged" in result.stderr
    replaced = project.client().get_run(run.info.run_id)
    assert replaced.info.status == "FAILED" and "replaced by a later run" in replaced.data.tags["mmp.error"]
    assert not pending.load_all(project.root)


@pytest.mark.slow
def test_unreachable_uri_with_credentials_is_redacted(project: Project) -> None:
    """A password written into the tracking URI never reaches the error message."""
    (project.root / "configs").mkdir(exist_ok=True)
    uri = f"http://alice:in-the-uri-pw@127.0.0.1:{free_port()}"
    (project.root / "configs" / "leaky.yaml").write_text(f"mlflow:\n  tracking_uri: {uri}\n")
    result = project.mmp("runs", "-c", "configs/leaky.yaml", check=False)
    assert result.returncode != 0
    assert "in-the-uri-pw" not in result.stdout + result.stderr
    assert "mmp: error: MLflow server http://alice:***@127.0.0.1:" in result.stderr
