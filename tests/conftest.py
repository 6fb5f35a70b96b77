"""Shared fixtures: a temporary git copy of the project, and helpers to run mmp, DVC and MLflow there."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# What a project copy leaves out: outputs and stores of the developer's own runs.
_SKIP = {".venv", ".git", "mlflow.db", "mlruns", "data/prepared", "models", "outputs", "multirun", "bench/data"}


def project_files() -> list[str]:
    """Files a fresh clone would have (tracked, plus new files not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    return [f for f in listed if f and not any(f == s or f.startswith(f"{s}/") for s in _SKIP) and (REPO / f).exists()]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "DVC_", "MMP_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        MLFLOW_DISABLE_TELEMETRY="true",
        GIT_AUTHOR_NAME="mmp tests",
        GIT_AUTHOR_EMAIL="tests@example.com",
        GIT_COMMITTER_NAME="mmp tests",
        GIT_COMMITTER_EMAIL="tests@example.com",
        PYTHONWARNINGS="ignore",
    )
    env.update(extra)
    return env


@dataclass
class Project:
    """A git + DVC copy of the project in a temporary folder."""

    root: Path
    env: dict[str, str]

    def run(self, *args: str, check: bool = True, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            list(args),
            cwd=self.root,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n"
                f"--- stderr\n{result.stderr[-4000:]}"
            )
        return result

    def mmp(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        return self.run(str(BIN / "mmp"), *args, check=check, **env)

    def start(self, *args: str, **env: str) -> subprocess.Popen:
        """``args`` started in the project, in the background (a test acts on it while it runs), output captured."""
        return subprocess.Popen(
            list(args),
            cwd=self.root,
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def dvc(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        return self.run(str(BIN / "dvc"), *args, check=check, **env)

    def git(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("git", *args)

    def commit(self, message: str = "update") -> None:
        self.git("add", "-A")
        self.run("git", "commit", "-qm", message, check=False)

    def metrics(self) -> dict[str, Any]:
        return json.loads((self.root / "metrics.json").read_text())

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def client(self) -> Any:
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.tracking_uri)

    def runs(self, stage: str | None = None) -> list[Any]:
        client = self.client()
        experiment = client.get_experiment_by_name("mmp")
        if experiment is None:
            return []
        query = f"tags.`mmp.stage` = '{stage}'" if stage else ""
        return client.search_runs([experiment.experiment_id], query, order_by=["attributes.start_time DESC"])


def printed_run_id(stdout: str) -> str:
    """The run id on the "MLflow run id:" line that `mmp train` prints."""
    return stdout.split("MLflow run id:")[1].split()[0]


def make_project(dest: Path) -> Project:
    dest.mkdir(parents=True, exist_ok=True)
    for name in project_files():
        source = REPO / name
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target)
    project = Project(dest, clean_env())
    project.git("init", "-q", "-b", "main")
    project.commit("initial")
    return project


# mlflow.set_tracking_uri (called by tests, and by mmp in-process) exports MLFLOW_TRACKING_URI, which mmp
# honours as the user's choice: one test's store must not become the next one's, in this process or in the
# commands it starts.
# Likewise mmp's own settings that a command run in-process sets for itself (`mmp train` sets MMP_RECORDER=0).


def _ours(key: str) -> bool:
    return key == "MLFLOW_TRACKING_URI" or key.startswith("MMP_")


def _restored_tracking_env() -> Iterator[None]:
    saved = {key: value for key, value in os.environ.items() if _ours(key)}
    yield
    for key in [key for key in os.environ if _ours(key) and key not in saved]:
        del os.environ[key]
    os.environ.update(saved)


@pytest.fixture(autouse=True, scope="module")
def _module_tracking_env() -> Iterator[None]:
    yield from _restored_tracking_env()


@pytest.fixture(autouse=True)
def _test_tracking_env() -> Iterator[None]:
    yield from _restored_tracking_env()


@pytest.fixture()
def project(tmp_path: Path) -> Iterator[Project]:
    yield make_project(tmp_path / "project")


@pytest.fixture(scope="module")
def repro_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A project copy on which `dvc repro` has run once (titanic, xgb-baseline), shared by a module."""
    project = make_project(tmp_path_factory.mktemp("repro") / "project")
    project.dvc("repro")
    project.commit("repro")
    return project


# --------------------------------------------------------------------------- servers on loopback ports


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get(url: str, timeout: float = 5, **headers: str) -> tuple[int, str]:
    """Status and body of a GET (an HTTP error status is returned, not raised)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_for_http(url: str, process: subprocess.Popen, log_path: Path, timeout: float = 120) -> None:
    """Wait until ``url`` answers 200; fail with the server's log if it exits or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{url}: the server exited {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            if http_get(url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s:\n{log_path.read_text()[-4000:]}")


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready_workers(self, count: int, timeout: float = 120) -> set[int]:
        """Wait until ``count`` workers logged ``worker_ready`` (their model loaded); return their pids."""
        deadline = time.monotonic() + timeout
        while True:
            pids = {int(pid) for pid in re.findall(r'"event": "worker_ready", "pid": (\d+)', self.log_path.read_text())}
            if len(pids) >= count:
                return pids
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"{len(pids)} of {count} workers ready:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)

    def served_by(self, path: str) -> set[int]:
        """The pids of the workers whose access log lines answered ``path``."""
        return {int(pid) for pid in re.findall(rf'"path":"{re.escape(path)}".*?"pid":(\d+)', self.log_path.read_text())}

    def request(
        self,
        path: str,
        body: bytes | str | Any = None,
        content_type: str = "application/json",
        headers: dict | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={**(headers or {})})
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, raw, head = response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as error:
            status, raw, head = error.code, error.read(), dict(error.headers)
        text = raw.decode()
        try:
            return status, head, json.loads(text)
        except ValueError:
            return status, head, text

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(project: Project, args: list[str], env: dict[str, str] | None = None) -> Server:
    port = free_port()
    log_path = project.root / f"serve-{port}.log"
    process = subprocess.Popen(
        [str(BIN / "mmp"), "serve-api", "--port", str(port), *args],
        cwd=project.root,
        env={**project.env, **(env or {})},
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )
    server = Server(process, port, log_path)
    try:
        wait_for_http(f"{server.url}/ping", process, log_path, timeout=90)
    except AssertionError:
        server.stop()
        raise
    return server


MLFLOW_ADMIN_PASSWORD = "admin-password-for-tests"  # the auth app refuses passwords under 12 characters


@dataclass
class MlflowServer:
    """A real `mlflow server --app-name basic-auth` on a loopback port; all its state lives in ``folder``.

    It runs in its own process group (started with its own session), so that stopping it by its PID also
    stops the uvicorn worker it spawns. Stopped and started again, it keeps its store, users and port.
    """

    folder: Path
    port: int
    process: subprocess.Popen | None = None
    # The team set-up (tests/servers.py) points these at PostgreSQL and S3, with their credentials in env.
    backend_store_uri: str = "sqlite:///mlflow.db"
    auth_database_uri: str = "sqlite:///basic_auth.db"
    artifacts_destination: str | None = None  # default: the folder's artifacts/
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.folder / "server.log"

    def start(self) -> MlflowServer:
        config = self.folder / "basic_auth.ini"
        # Caching verified credentials for a minute saves a ~0.5 s PBKDF2 check on every request.
        config.write_text(
            f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {self.auth_database_uri}\n"
            "admin_username = admin\nauth_cache_ttl_seconds = 60\n"
        )
        env = clean_env(
            MLFLOW_FLASK_SERVER_SECRET_KEY="mmp-tests-secret-key",
            MLFLOW_AUTH_ADMIN_PASSWORD=MLFLOW_ADMIN_PASSWORD,
            MLFLOW_AUTH_CONFIG_PATH=str(config),
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",  # no background job runner: faster start, fewer processes
            **self.env,
        )
        command = [str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--workers", "1", "--backend-store-uri", self.backend_store_uri]
        command += ["--artifacts-destination", self.artifacts_destination or str(self.folder / "artifacts")]
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                command, cwd=self.folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for_http(f"{self.url}/health", self.process, self.log_path)
        return self

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop the server's process group (SIGKILL: as if the machine had died)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def create_user(self, username: str, password: str) -> None:
        import base64

        token = base64.b64encode(f"admin:{MLFLOW_ADMIN_PASSWORD}".encode()).decode()
        request = urllib.request.Request(
            f"{self.url}/api/2.0/mlflow/users/create",
            data=json.dumps({"username": username, "password": password}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One authenticated MLflow server for a test module."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"), free_port()).start()
    yield server
    server.stop()


# --------------------------------------------------------------------------- PostgreSQL and S3 (tests/servers.py)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """One PostgreSQL 15 server per test process; ``.database(name)`` gives a module its own database's URI."""
    from servers import postgres_bin, start_postgres

    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed and could not be (`make postgres` needs root and apt-get)")
    server = start_postgres()
    yield server
    server.remove()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One S3-compatible server (moto) per test process: ``.endpoint_url``, keys, ``.env``, ``.bucket(name)``."""
    from servers import start_s3

    if not (BIN / "moto_server").exists():
        pytest.skip("moto_server is missing: pip install -e '.[dev]' installs moto[server]")
    server = start_s3(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()
