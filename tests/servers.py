"""Real servers for the tests, on 127.0.0.1: PostgreSQL 15 (Debian packages) and an S3-compatible store
(moto in server mode, a dev dependency). Each runs from a throwaway folder, with a generated password, and is
stopped by its own PID. Session fixtures in conftest.py start each once per test process:

    def test_x(postgres_server, s3_server):
        uri = postgres_server.database("my_module")        # postgresql://mmp:<password>@127.0.0.1:PORT/my_module
        bucket = s3_server.bucket("data")                  # created if missing
        s3_server.put(bucket, "a.parquet", path)           # storage options / env for readers: below
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import BIN, MlflowServer, free_port, http_get

PG_USER = "mmp"
_PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)  # newest major version first


def postgres_bin() -> Path | None:
    """The folder of initdb and postgres (Debian keeps them off PATH), or None when PostgreSQL is missing."""
    for folder in _PG_BIN_DIRS:
        if (folder / "initdb").exists() and (folder / "postgres").exists():
            return folder
    found = shutil.which("postgres")
    return Path(found).parent if found and shutil.which("initdb") else None


def _stop(process: subprocess.Popen | None, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> None:
    """Stop one process we started, by its PID (SIGKILL after ``timeout``)."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_until(ready: Any, process: subprocess.Popen, log_path: Path, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited {process.returncode}:\n{log_path.read_text()[-4000:]}")
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not answer within {timeout:.0f} s:\n{log_path.read_text()[-4000:]}")


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL cluster: password authentication (scram) for the user ``mmp`` over TCP.

    initdb refuses to run as root, so under root the cluster belongs to the ``postgres`` system user (the
    Debian package creates it) and its folder lives directly under the system temp folder, which that user
    can reach (pytest's own temp folders are private to root).
    """

    folder: Path
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: f"pg-{secrets.token_hex(12)}")
    process: subprocess.Popen | None = None

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def log_path(self) -> Path:
        return self.folder / "postgres.log"

    @property
    def env_line(self) -> str:
        """The password as a `.env` line (what a user would write)."""
        return f"MMP_PG_PASSWORD={self.password}"

    def _as_owner(self) -> dict[str, Any]:
        # Popen(user=...) switches user in the child itself: the PID we hold is the server's own.
        return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}

    def initdb(self) -> PostgresServer:
        bin_dir = postgres_bin()
        assert bin_dir is not None, "PostgreSQL is not installed (make postgres)"
        password_file = self.folder / "password"
        password_file.write_text(self.password + "\n")
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            for path in (self.folder, password_file):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        command = [str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", PG_USER, "--auth=scram-sha-256"]
        command += [f"--pwfile={password_file}", "--no-sync", "--encoding=UTF8", "--locale=C"]
        result = subprocess.run(command, capture_output=True, text=True, **self._as_owner())
        password_file.unlink()
        assert result.returncode == 0, f"initdb failed:\n{result.stdout}\n{result.stderr}"
        return self

    def start(self) -> PostgresServer:
        bin_dir = postgres_bin()
        assert bin_dir is not None
        command = [str(bin_dir / "postgres"), "-D", str(self.data_dir), "-h", "127.0.0.1", "-p", str(self.port)]
        # Sockets in our own folder (not /run/postgresql); no durability needed for a throwaway cluster.
        command += ["-k", str(self.folder), "-c", "fsync=off", "-c", "full_page_writes=off"]
        command += ["-c", "synchronous_commit=off", "-c", "max_connections=200"]
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **self._as_owner()
            )
        _wait_until(lambda: self.connect("postgres").close() is None, self.process, self.log_path, "postgres")
        return self

    def stop(self) -> None:
        _stop(self.process)  # SIGTERM: PostgreSQL's "smart" shutdown

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def connect(self, database: str) -> Any:
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=PG_USER, password=self.password, dbname=database, autocommit=True
        )

    def uri(self, database: str, scheme: str = "postgresql", password: str | None = None) -> str:
        """A connection URI; ``password`` replaces the real one ("" leaves it out: libpq then reads PGPASSWORD)."""
        secret = self.password if password is None else password
        user = f"{PG_USER}:{secret}" if secret else PG_USER
        return f"{scheme}://{user}@127.0.0.1:{self.port}/{database}"

    def database(self, name: str, scheme: str = "postgresql") -> str:
        """Create the database ``name`` (a module's own: any text, made a valid name) if missing; its URI."""
        from psycopg import sql

        name = re.sub(r"[^a-z0-9_]", "_", name.lower())[:60]
        with self.connect("postgres") as connection:
            exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.uri(name, scheme)

    def execute(self, database: str, statement: str, params: Any = None) -> list[tuple]:
        """Run one statement in ``database``; its rows (empty for statements that return none)."""
        with self.connect(database) as connection:
            cursor = connection.execute(statement, params)
            return cursor.fetchall() if cursor.description else []

    def dump(self, database: str) -> str:
        """Every row of every table of ``database`` as text (what a secrets scan searches)."""
        from psycopg import sql

        with self.connect(database) as connection:
            tables = connection.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            ).fetchall()
            lines = []
            for (table,) in tables:
                rows = connection.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table))).fetchall()
                lines += [f"{table}: {row!r}" for row in rows]
        return "\n".join(lines)


def start_postgres() -> PostgresServer:
    # Under the system temp folder, not pytest's: see PostgresServer.
    folder = Path(tempfile.mkdtemp(prefix="mmp-pg-"))
    server = PostgresServer(folder).initdb()
    try:
        return server.start()
    except BaseException:
        server.remove()
        raise


@dataclass
class S3Server:
    """moto's S3-compatible server on a loopback port. Any key pair is accepted; a random secret key lets a
    secrets scan find it if it leaks."""

    folder: Path
    port: int = field(default_factory=free_port)
    access_key: str = field(default_factory=lambda: f"AK{secrets.token_hex(8).upper()}")
    secret_key: str = field(default_factory=lambda: f"sk-{secrets.token_hex(16)}")
    region: str = "us-east-1"
    process: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.folder / "moto.log"

    def start(self) -> S3Server:
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
            )
        _wait_until(
            lambda: http_get(f"{self.endpoint_url}/moto-api/")[0] == 200, self.process, self.log_path, "moto_server"
        )
        return self

    def stop(self) -> None:
        _stop(self.process)

    @property
    def env(self) -> dict[str, str]:
        """The variables boto3, MLflow and mmp's object-store reader take the endpoint and keys from."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ALLOW_HTTP": "true",
        }

    @property
    def storage_options(self) -> dict[str, str]:
        """Polars' object-store options for this server."""
        return {
            "aws_endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "aws_region": self.region,
            "aws_allow_http": "true",
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def bucket(self, name: str) -> str:
        """Create the bucket ``name`` if missing; its name."""
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists):
            client.create_bucket(Bucket=name)
        return name

    def put(self, bucket: str, key: str, path: Path | bytes) -> str:
        """Upload a file (or bytes) to ``bucket/key``; its ``s3://`` URL."""
        body = path if isinstance(path, bytes) else Path(path).read_bytes()
        self.client().put_object(Bucket=self.bucket(bucket), Key=key, Body=body)
        return f"s3://{bucket}/{key}"

    def objects(self, bucket: str) -> dict[str, bytes]:
        """Every object of ``bucket``, key to bytes (what a secrets scan searches)."""
        client = self.client()
        found = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                found[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return found


def start_s3(folder: Path) -> S3Server:
    return S3Server(folder).start()


def team_mlflow_server(folder: Path, postgres: PostgresServer, s3: S3Server, bucket: str = "mlflow") -> MlflowServer:
    """An `mlflow server --app-name basic-auth` as a platform team runs it (not started): runs and users in
    PostgreSQL, artifacts in S3 served through the server (proxied: clients need no S3 credentials). The
    database password reaches it as PGPASSWORD and the S3 keys as AWS_* variables, never in a URI."""
    for database in ("mlflow_store", "mlflow_auth"):
        postgres.database(database)
    # The services' secrets in the server's own .env, as a platform team keeps them (compose reads it the same).
    secrets = {**s3.env, "PGPASSWORD": postgres.password}
    (folder / ".env").write_text("".join(f"{name}={value}\n" for name, value in secrets.items()))
    from dotenv import dotenv_values

    return MlflowServer(
        folder,
        free_port(),
        backend_store_uri=postgres.uri("mlflow_store", "postgresql+psycopg", password=""),
        auth_database_uri=postgres.uri("mlflow_auth", "postgresql+psycopg", password=""),
        artifacts_destination=f"s3://{s3.bucket(bucket)}/artifacts",
        env={name: value or "" for name, value in dotenv_values(folder / ".env").items()},
    )
