"""docker-compose.yml, without a Docker engine: its shape, `docker-compose config` where the v1 CLI exists,
and each service's command run for real from the venv, as the container would run it in the project."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from conftest import BIN, REPO, Project, Server, free_port, http_get, make_project, printed_run_id, wait_for_http

COMPOSE_FILE = REPO / "docker-compose.yml"
TEAM = ("postgres", "s3", "s3-bucket", "mlflow-team")  # profile team: the set-up of docs/mlflow.md, "Team tracking"
# Each team service's secret, from .env: compose substitutes it, the file holds none.
SECRETS = ("POSTGRES_PASSWORD", "S3_ACCESS_KEY", "S3_SECRET_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD")


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def command_line(service: str, **variables: str) -> list[str]:
    """The service's command as the container gets it, ${VAR:-default} substituted like compose does."""
    command = compose()["services"][service]["command"]
    for name, value in variables.items():
        command = command.replace(f"${{{name}:-}}", value)
    assert "${" not in command, command
    return shlex.split(command)


def test_services_profiles_ports_and_volumes() -> None:
    services = compose()["services"]
    assert set(services) == {"mlflow", "serve", *TEAM}
    expected = {"mlflow": ("mlflow", "5000:5000"), "serve": ("serve", "8000:8000")}
    for name, (profile, port) in expected.items():
        service = services[name]
        assert service["profiles"] == [profile]
        assert service["ports"] == [port]
        # The project at the same path as on the host: the local store records absolute artifact paths.
        assert service["volumes"] == ["${PWD}:${PWD}"] and service["working_dir"] == "${PWD}"
        assert service["build"] == "." and service["image"] == "mmp:latest"
    mlflow = command_line("mlflow")
    assert mlflow[:2] == ["mlflow", "server"] and "sqlite:///mlflow.db" in mlflow  # the project's default store
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "FROM python:3.11" in dockerfile and "RUN pip install ." in dockerfile
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO, check=False).returncode
    assert ignored == 0, ".env must be git-ignored"
    example = (REPO / ".env.example").read_text()
    assert "MLFLOW_TRACKING_USERNAME=" in example and "MLFLOW_TRACKING_PASSWORD=" in example


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="the docker-compose CLI is not installed")
def test_docker_compose_validates_the_file() -> None:
    """docker-compose v1 validates offline (it has no engine to talk to for `config`)."""
    env = {"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "PWD": str(REPO), "MODEL_RUN_ID": "abc123"}
    env.update({name: f"{name.lower()}-value" for name in (*SECRETS, "MLFLOW_FLASK_SERVER_SECRET_KEY")})
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "config"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    team = resolved["mlflow-team"]["environment"]
    assert team["PGPASSWORD"] == resolved["postgres"]["environment"]["POSTGRES_PASSWORD"] == "postgres_password-value"
    assert (
        team["AWS_SECRET_ACCESS_KEY"] == resolved["s3"]["environment"]["MINIO_ROOT_PASSWORD"] == "s3_secret_key-value"
    )
    assert resolved["mlflow-team"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert resolved["serve"]["command"] == "mmp serve-api --run-id=abc123 --host 0.0.0.0 --port 8000"
    assert resolved["mlflow"]["working_dir"] == str(REPO)
    assert resolved["mlflow"]["volumes"][0].startswith(f"{REPO}:{REPO}")


def on_loopback(argv: list[str], port: int) -> list[str]:
    """The container's command line, bound to a free loopback port instead of 0.0.0.0 and its fixed port."""
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    argv = list(argv)
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    return [str(BIN / argv[0]), *argv[1:]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, str]:
    project = make_project(tmp_path_factory.mktemp("compose") / "project")
    result = project.mmp("train")
    return project, printed_run_id(result.stdout)


def run_service(project: Project, service: str, argv: list[str], ready_path: str) -> Server:
    """Start a service's command line (already on loopback) in the project root with the service's
    environment, as its container would."""
    port = int(argv[argv.index("--port") + 1])
    log_path = project.root.parent / f"service-{port}.log"
    env = {**project.env, **compose()["services"][service]["environment"]}
    with log_path.open("w") as log:
        process = subprocess.Popen(argv, cwd=project.root, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(process, port, log_path)
    try:
        wait_for_http(f"{server.url}{ready_path}", process, log_path)
    except AssertionError:
        server.stop()
        raise
    return server


@pytest.mark.slow
def test_mlflow_service_command_shows_the_project_store(trained: tuple[Project, str]) -> None:
    """The mlflow service's command, run in the project root (its working_dir), serves the project's runs
    and their artifacts, which the local store keeps under absolute paths."""
    project, run_id = trained
    server = run_service(project, "mlflow", on_loopback(command_line("mlflow"), free_port()), "/health")
    try:
        status, body = http_get(f"{server.url}/api/2.0/mlflow/runs/get?run_id={run_id}")
        assert status == 200 and json.loads(body)["run"]["data"]["metrics"]
        status, body = http_get(f"{server.url}/ajax-api/2.0/mlflow/artifacts/list?run_id={run_id}")
        assert status == 200, body
        assert {"config.yaml", "metrics.json", "plots"} <= {item["path"] for item in json.loads(body)["files"]}
    finally:
        server.stop()


@pytest.mark.slow
def test_serve_service_command_serves_the_chosen_run(trained: tuple[Project, str]) -> None:
    from mmp.cli import build_parser, cmd_serve_api

    project, run_id = trained
    argv = command_line("serve", MODEL_RUN_ID=run_id)
    args = build_parser().parse_args(argv[1:])
    assert args.func is cmd_serve_api and args.run_id == run_id and (args.host, args.port) == ("0.0.0.0", 8000)
    server = run_service(project, "serve", on_loopback(argv, free_port()), "/ping")
    try:
        row = {"pclass": "1st", "sex": "female", "age": 29, "sibsp": 0, "parch": 0}
        status, _, body = server.request("/predict", row)
        assert status == 200 and body["prediction"] == "survived"
        status, _, body = server.request("/metadata")
        assert status == 200 and body["run_id"] == run_id
    finally:
        server.stop()
    # Without MODEL_RUN_ID the service stops at once with the fix, not a traceback.
    result = project.run(*on_loopback(command_line("serve", MODEL_RUN_ID=""), free_port()), check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "mmp: error: Name the model with --run-id RUN_ID" in result.stderr


def test_team_profile_keeps_secrets_in_env_and_the_server_command_parses() -> None:
    """Profile team: PostgreSQL (not published), an S3-compatible store, the bucket, and the MLflow server, set
    up as tests/test_team_tracking.py runs it for real (servers.team_mlflow_server): store and users in
    PostgreSQL with the password as PGPASSWORD, artifacts proxied to S3 with the keys as AWS_* variables."""
    from test_docs import check_mlflow

    services = compose()["services"]
    assert all(services[name]["profiles"] == ["team"] for name in TEAM)
    assert "ports" not in services["postgres"] and "ports" not in services["s3"]  # reached by the server only
    text = COMPOSE_FILE.read_text()
    for name in SECRETS:
        assert f"${{{name}:-}}" in text
    secret_keys = ("PASSWORD", "SECRET", "KEY_ID")
    for service in TEAM:
        for key, value in services[service].get("environment", {}).items():
            if any(part in key for part in secret_keys):
                assert str(value).startswith("${") and str(value).endswith(":-}"), f"{service}: {key} is written in"
    argv = shlex.split(services["mlflow-team"]["command"].replace("${MLFLOW_ALLOWED_HOSTS:-", "").replace("}", ""))
    check_mlflow(argv)  # mlflow's own click parser accepts every option
    options = dict(zip(argv[2::2], argv[3::2], strict=False))
    assert argv[:2] == ["mlflow", "server"] and options["--app-name"] == "basic-auth"
    assert options["--backend-store-uri"] == "postgresql+psycopg://mlflow@postgres:5432/mlflow"  # no password
    assert options["--artifacts-destination"].startswith("s3://mlflow/")
    environment = services["mlflow-team"]["environment"]
    assert environment["MLFLOW_S3_ENDPOINT_URL"] == "http://s3:9000"
    assert environment["MLFLOW_AUTH_CONFIG_PATH"] == "/etc/mlflow/basic_auth.ini"
    mounted = {volume.split(":")[1]: REPO / volume.split(":")[0] for volume in services["mlflow-team"]["volumes"]}
    auth = mounted["/etc/mlflow/basic_auth.ini"].read_text()
    assert "database_uri = postgresql+psycopg://mlflow@postgres:5432/mlflow_auth" in auth
    assert "CREATE DATABASE mlflow_auth;" in (REPO / "docker" / "postgres-init.sql").read_text()
