"""Data from SQL and object stores (issue 18): SQLite in a file, the real PostgreSQL server and moto's S3 server
from tests/servers.py, the `mmp ingest` snapshot and the DVC ingest stage."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from conftest import REPO, Project, make_project
from mmp import data as data_lib
from mmp.config import load_config
from mmp.errors import ConfigError, DataError

TITANIC = REPO / "data" / "titanic.csv"
ADULTS = pl.read_csv(TITANIC).filter(pl.col("age") >= 18).height


def sql_config(root: Path, **data: Any) -> Any:
    """The default config with ``data`` switched to a SQL source (path null)."""
    overrides = ["data.path=null", *(f"+data.{k}={json.dumps(v)}" for k, v in data.items())]
    return load_config(overrides, root=root)


@pytest.fixture(scope="module")
def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "passengers.db"
    with sqlite3.connect(path) as connection:
        frame = pl.read_csv(TITANIC)
        connection.execute(f"CREATE TABLE passengers ({', '.join(frame.columns)})")
        connection.executemany(f"INSERT INTO passengers VALUES ({', '.join('?' * frame.width)})", frame.rows())
    return path


def test_sqlite_query_with_a_bound_parameter(sqlite_db: Path, tmp_path: Path) -> None:
    query = tmp_path / "adults.sql"
    query.write_text("SELECT * FROM passengers WHERE age >= ?")
    config = sql_config(
        REPO, source="sql", uri=f"sqlite:///{sqlite_db}", sql_file=str(query), sql_params=[18], snapshot=None
    )
    path = data_lib.input_file(config.data, config.root)
    frame = data_lib.load(config.data, path)
    assert frame.height == ADULTS and frame.columns == pl.read_csv(TITANIC).columns
    assert data_lib.source_location(config.data, config.root) == f"sqlite:///{sqlite_db}"
    # The value is bound, never spliced into the text: a quote in it is data, not SQL.
    inline = sql_config(
        REPO,
        source="sql",
        uri=f"sqlite:///{sqlite_db}",
        sql="SELECT * FROM passengers WHERE sex = ?",
        sql_params=["female' OR '1'='1"],
    )
    assert pl.read_parquet(data_lib.input_file(inline.data, inline.root)).height == 0


def test_snapshot_keeps_its_bytes_when_the_source_is_unchanged(sqlite_db: Path, tmp_path: Path) -> None:
    config = sql_config(REPO, source="sql", uri=f"sqlite:///{sqlite_db}", sql="SELECT * FROM passengers")
    dest = tmp_path / "raw" / "passengers.parquet"
    data_lib.write_snapshot(config.data, config.root, dest)
    stamp, digest = dest.stat().st_mtime_ns, data_lib.file_digest(dest)
    data_lib.write_snapshot(config.data, config.root, dest)
    assert dest.stat().st_mtime_ns == stamp and data_lib.file_digest(dest) == digest
    assert sorted(p.name for p in dest.parent.iterdir()) == ["passengers.parquet"]  # no scratch left behind


def test_sql_config_errors_are_one_line_without_the_password(
    sqlite_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="data.uri holds a password; put the whole URI in .env"):
        sql_config(REPO, source="sql", uri="postgresql://bob:hunter22@db:5432/x", sql="SELECT 1")
    with pytest.raises(ConfigError, match="needs data.uri .or data.uri_env. and data.sql"):
        sql_config(REPO, source="sql", uri=f"sqlite:///{sqlite_db}")
    config = sql_config(REPO, source="sql", uri_env="MMP_TEST_DB_URI", sql="SELECT * FROM nope")
    monkeypatch.delenv("MMP_TEST_DB_URI", raising=False)
    with pytest.raises(ConfigError, match="names MMP_TEST_DB_URI, which is not set; put MMP_TEST_DB_URI="):
        data_lib.input_file(config.data, config.root)
    # The variable may live in the project's .env only (every command that reads the data finds it there).
    (tmp_path / ".env").write_text(f"MMP_TEST_DB_URI=sqlite:///{sqlite_db}\n")
    with pytest.raises(DataError) as failure:
        data_lib.input_file(config.data, tmp_path)
    message = str(failure.value)
    assert "\n" not in message and "$MMP_TEST_DB_URI failed" in message and "no such table: nope" in message


# --------------------------------------------------------------------------- PostgreSQL


def load_titanic(postgres_server: Any, database: str) -> None:
    postgres_server.execute(
        database,
        "CREATE TABLE IF NOT EXISTS passengers (pclass text, survived text, sex text, age double precision, "
        "sibsp integer, parch integer)",
    )
    postgres_server.execute(database, "TRUNCATE passengers")
    with (
        postgres_server.connect(database) as connection,
        connection.cursor() as cursor,
        cursor.copy("COPY passengers FROM STDIN") as copy,
    ):
        for row in pl.read_csv(TITANIC).rows():
            copy.write_row(row)


def pg_project(tmp_path: Path, postgres_server: Any, database: str, **data: Any) -> Project:
    """A project whose data config `passengers` reads PostgreSQL; the URI with its password is in .env."""
    project = make_project(tmp_path / "project")
    (project.root / ".env").write_text(f"MMP_PASSENGERS_DB={postgres_server.database(database)}\n")
    config = {
        "name": "passengers",
        "path": None,
        "target": "survived",
        "positive_class": "survived",
        "source": "sql",
        "uri_env": "MMP_PASSENGERS_DB",
        "sql": "SELECT * FROM passengers WHERE age >= $1",
        "sql_params": [18],
        **data,
    }
    (project.root / "conf" / "data" / "passengers.yaml").write_text(json.dumps(config))
    return project


@pytest.mark.slow
def test_postgres_wrong_password_is_one_line_without_it(postgres_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    config = sql_config(REPO, source="sql", uri_env="MMP_TEST_DB_URI", sql="SELECT 1")
    monkeypatch.setenv("MMP_TEST_DB_URI", postgres_server.uri("postgres", password="wrong-pw"))
    with pytest.raises(DataError) as failure:
        data_lib.input_file(config.data, config.root)
    message = str(failure.value)
    assert message.startswith("The query of data 'titanic' on $MMP_TEST_DB_URI failed (")
    assert "password authentication failed" in message and "wrong-pw" not in message and "\n" not in message


@pytest.mark.slow
def test_dvc_ingest_stage_reruns_prepare_only_when_the_rows_change(postgres_server: Any, tmp_path: Path) -> None:
    """The documented DVC variant: an always-changed ingest stage writes data.snapshot, prepare depends on it."""
    database = "test_sources_dvc"
    postgres_server.database(database)
    load_titanic(postgres_server, database)
    project = pg_project(tmp_path, postgres_server, database, snapshot="data/raw/passengers.parquet")
    dvc_yaml = project.root / "dvc.yaml"
    dvc_yaml.write_text(with_ingest_stage(dvc_yaml.read_text()))
    # mmp's own `mmp init` templates link to dvc.yaml: DVC would parse the link as a second pipeline, with no
    # params.yaml beside it. A user's project has no such folder.
    (project.root / "src" / "mmp" / "project" / "templates" / "dvc.yaml").unlink(missing_ok=True)
    project.mmp("compose", "data=passengers", "-o", "params.yaml")
    project.commit("SQL source")
    first = project.dvc("repro", "prepare")
    assert "Running stage 'ingest'" in first.stdout and "Running stage 'prepare'" in first.stdout
    snapshot = project.root / "data" / "raw" / "passengers.parquet"
    assert pl.read_parquet(snapshot).height == ADULTS  # the bound parameter filtered the rows
    manifest = json.loads((project.root / "data" / "prepared" / "manifest.json").read_text())
    assert sum(manifest["rows"].values()) == ADULTS and manifest["data"]["digest"] == data_lib.file_digest(snapshot)
    run = project.runs("prepare")[0]
    assert run.data.params["data.uri_env"] == "MMP_PASSENGERS_DB" and run.data.params["data.sql_params"] == "[18]"
    again = project.dvc("repro", "prepare")
    assert "Running stage 'ingest'" in again.stdout and "Stage 'prepare' didn't change, skipping" in again.stdout
    postgres_server.execute(database, "INSERT INTO passengers VALUES ('1st', 'died', 'male', 40, 0, 0)")
    changed = project.dvc("repro", "prepare")
    assert "Running stage 'prepare'" in changed.stdout
    assert pl.read_parquet(snapshot).height == ADULTS + 1
    # The MLflow dataset input: the database URI with its password masked, and the new snapshot's digest.
    (dataset,) = project.runs("prepare")[0].inputs.dataset_inputs
    assert dataset.dataset.source_type == "sql" and dataset.dataset.digest == data_lib.file_digest(snapshot)
    assert json.loads(dataset.dataset.source)["uri"] == postgres_server.uri(database, password="***")
    # The password (only in .env) is nowhere else: outputs, the store, its artifacts, params.yaml, dvc.lock.
    seen = {"output": first.stdout + first.stderr + again.stdout + again.stderr + changed.stdout + changed.stderr}
    files = [project.root / "mlflow.db", project.root / "params.yaml", project.root / "dvc.lock"]
    files += [path for path in (project.root / "mlruns").rglob("*") if path.is_file()]
    seen.update({str(path): path.read_bytes().decode("latin-1") for path in files})
    assert not [name for name, text in seen.items() if postgres_server.password in text]


def with_ingest_stage(dvc_yaml: str) -> str:
    """dvc.yaml as docs/configuration.md tells a user to change it for a SQL or remote source."""
    stage = (
        "stages:\n  ingest:\n    cmd: python stages/ingest.py\n    always_changed: true\n    params:\n"
        "      - data\n    outs:\n      - ${data.snapshot}\n\n"
    )
    assert dvc_yaml.count("      - ${data.path}\n") == 1
    return dvc_yaml.replace("stages:\n", stage, 1).replace("      - ${data.path}\n", "      - ${data.snapshot}\n")


# --------------------------------------------------------------------------- S3


@pytest.mark.slow
def test_s3_parquet_and_csv_are_read_with_credentials_from_the_environment(
    s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parquet = tmp_path / "titanic.parquet"
    pl.read_csv(TITANIC).write_parquet(parquet)
    url = s3_server.put("sources", "tables/titanic.parquet", parquet)
    csv_url = s3_server.put("sources", "tables/titanic.csv", TITANIC)
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    for location in (url, csv_url):
        config = load_config([f"data.path={location}"], root=REPO)
        assert data_lib.source_location(config.data, config.root) == location
        frame = data_lib.load(config.data, data_lib.input_file(config.data, config.root))
        assert frame.height == pl.read_csv(TITANIC).height
    missing = load_config(["data.path=s3://sources/tables/nope.parquet"], root=REPO)
    with pytest.raises(DataError) as failure:
        data_lib.input_file(missing.data, missing.root)
    message = str(failure.value)
    assert message.startswith("Data file s3://sources/tables/nope.parquet cannot be read (")
    assert "AWS_ENDPOINT_URL" in message and s3_server.secret_key not in message
    # The ingest command snapshots the object; the MLflow dataset input of a prepare run names the URL.
    project = make_project(tmp_path / "project")
    env = {**s3_server.env}
    ingest = project.mmp("ingest", f"data.path={url}", "+data.snapshot=data/raw/titanic.parquet", **env)
    assert "snapshot: data/raw/titanic.parquet (1309 rows, digest " in ingest.stdout
    assert "changed)" in ingest.stdout
    project.mmp("prepare", f"data.path={url}", **env)
    (dataset,) = project.runs("prepare")[0].inputs.dataset_inputs
    assert json.loads(dataset.dataset.source)["uri"] == url and dataset.dataset.source_type == "s3"
    assert s3_server.secret_key not in (project.root / "mlflow.db").read_bytes().decode("latin-1")


@pytest.mark.parametrize(
    ("url", "credentials"),
    [
        ("gs://mmp-no-bucket/t.parquet", "GOOGLE_APPLICATION_CREDENTIALS, the path of a service account key file"),
        ("az://mmp-no-container/titanic.csv", "AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY"),
    ],
)
def test_google_and_azure_urls_without_credentials_are_one_line_naming_theirs(
    url: str, credentials: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gs:// and az:// take the s3:// path (Polars' cloud reader). No emulator of either store installs here, so
    this checks the way in and its errors, which fail before any request: a key file that does not exist, no
    account name. (Polars asks google-auth for Google's credentials; its error is a DataError too.)"""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing-key.json"))
    for name in ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    config = load_config([f"data.path={url}"], root=REPO)
    assert data_lib.source_location(config.data, config.root) == url
    with pytest.raises(DataError) as failure:
        data_lib.input_file(config.data, config.root)
    message = str(failure.value)
    assert message.startswith(f"Data file {url} cannot be read (") and "\n" not in message
    assert message.endswith(f"(e.g. {credentials})")
