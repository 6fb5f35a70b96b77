"""``mmp migrate-store``: move MMP 1.x's MLflow file store (``mlruns/``) into the SQLite store ``mlflow.db``.

MLflow 3 refuses file stores (maintenance mode); ``mlflow migrate-filestore`` copies one into an empty SQLite
database. mmp runs it into a scratch file, checks that every run arrived, and only then puts the database in
place. Artifacts stay where they are (the migrated runs point at them). Each experiment's ``meta.yaml`` is
then renamed ``meta.yaml.migrated``, so that MLflow no longer takes the folder for a store: ``mlflow ui``
with no flags opens ``mlflow.db``.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mmp.config import Config, tracking_root
from mmp.errors import ConfigError, TrackingError
from mmp.tracking.store import FILE_STORE, file_store_experiments, resolve_tracking_uri

MIGRATED_SUFFIX = ".migrated"


@dataclass(frozen=True)
class Migration:
    source: Path
    database: Path
    experiments: int
    runs: int


def file_store_runs(experiments: list[Path]) -> int:
    """Runs of the file store's experiments (a run is a folder with its own meta.yaml)."""
    return sum(1 for experiment in experiments for run in experiment.iterdir() if (run / "meta.yaml").is_file())


def _database_runs(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(database)) as connection:
        try:
            return int(connection.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
        except sqlite3.OperationalError:  # no tables yet
            return 0


def metadata_copy(source: Path, dest: Path) -> None:
    """The file store without its artifacts (which stay put: runs point at them by absolute path), with
    repeated metric lines dropped.

    MLflow 3.17's file store writes a run's metric line twice when a model is logged after it; the database
    refuses such duplicates (unique key of name, timestamp, step and value), so MLflow's migration would
    stop. An exact repeat carries nothing: dropping it loses nothing.
    """
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("artifacts"))
    for metric in dest.glob("**/metrics/**/*"):
        if metric.is_file():
            lines = metric.read_text(encoding="utf-8").splitlines()
            unique = list(dict.fromkeys(lines))
            if len(unique) != len(lines):
                metric.write_text("".join(f"{line}\n" for line in unique), encoding="utf-8")


def _checkpoint(database: Path) -> None:
    with contextlib.closing(sqlite3.connect(database)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.execute("PRAGMA journal_mode=DELETE")


def migrate_store(config: Config) -> Migration:
    """Move ``<project>/mlruns``'s file store into the configured SQLite store; one-line errors."""
    root = tracking_root(config.root)
    uri = resolve_tracking_uri(config.mlflow.tracking_uri, root)
    if not uri.startswith("sqlite:///"):
        raise ConfigError(
            f"mmp migrate-store moves a file store into a local SQLite store, but mlflow.tracking_uri is {uri}; "
            "use the default local store (sqlite:///mlflow.db)"
        )
    source = root / FILE_STORE
    experiments = file_store_experiments(source)
    if not experiments:
        raise ConfigError(f"No MLflow file store in {source} (no <id>/meta.yaml there); nothing to migrate")
    database = Path(uri[len("sqlite:///") :])
    if database.exists() and _database_runs(database):
        raise ConfigError(
            f"{database} already holds runs; MLflow migrates into an empty store only: move {database.name} "
            "away, run `mmp migrate-store`, then keep whichever store you need"
        )
    scratch = database.with_name(database.name + ".migrating")
    scratch.unlink(missing_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".mmp-migrate-", dir=root) as copy:
            metadata_copy(source, Path(copy) / FILE_STORE)
            command = [sys.executable, "-m", "mlflow", "migrate-filestore", "--source", copy, "--target"]
            command += [f"sqlite:///{scratch}", "--no-progress"]
            result = subprocess.run(command, capture_output=True, text=True, check=False, env=_env())
        if result.returncode != 0:
            lines = (result.stderr + result.stdout).splitlines()
            errors = [line for line in lines if re.match(r"^[\w.]*(Error|Exception)\b", line)] or lines or ["no output"]
            last = " ".join(errors[-1].split())
            raise TrackingError(f"mlflow migrate-filestore failed: {last[:300]}; {source} is unchanged")
        expected, found = file_store_runs(experiments), _database_runs(scratch)
        if found != expected:
            raise TrackingError(
                f"mlflow migrate-filestore moved {found} of {expected} runs; {source} is unchanged, nothing was written"
            )
        _checkpoint(scratch)  # the migration wrote in WAL mode: fold the log into the file before moving it
        scratch.replace(database)
    finally:
        for leftover in (scratch, scratch.with_name(scratch.name + "-wal"), scratch.with_name(scratch.name + "-shm")):
            leftover.unlink(missing_ok=True)
    for experiment in experiments:
        meta = experiment / "meta.yaml"
        meta.rename(meta.with_name(meta.name + MIGRATED_SUFFIX))
    return Migration(source, database, len(experiments), expected)


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
