"""Where the data comes from: a local file, an object store URL (``s3://``, ``gs://``, ``az://``) or a SQL query.

A source that is not a local file is copied once into a local Parquet **snapshot**: the ingest stage's output
(``data.snapshot``) under DVC, a temporary file otherwise. Everything downstream reads that file, so its
digest is the data's, DVC can hash it, and no stage holds a connection open.

Object stores are read lazily by Polars' own cloud reader, configured from the environment as Polars reads
it (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``, ``AWS_ALLOW_HTTP``;
``GOOGLE_APPLICATION_CREDENTIALS``; ``AZURE_STORAGE_ACCOUNT_NAME``, ``AZURE_STORAGE_ACCOUNT_KEY``, ...).

SQL goes through Polars' database reader with ADBC drivers: they bind the query's parameters in the driver
(``$1`` for PostgreSQL, ``?`` for SQLite) and hand Arrow batches to Polars without a Python row loop.
connectorx, the other engine, cannot bind parameters. A password never sits in the config: the URI comes
from the environment variable ``data.uri_env`` (loaded from ``.env``), or libpq's ``PGPASSWORD``.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import polars as pl

from mmp.config import DataConfig, tracking_root
from mmp.data.load import file_digest
from mmp.errors import ConfigError, DataError
from mmp.files import scan_table
from mmp.redaction import redact, remember_secret

# The URL schemes Polars' cloud reader takes (object_store): S3, Google Cloud Storage, Azure.
REMOTE_SCHEMES = ("s3://", "s3a://", "gs://", "gcs://", "az://", "abfs://", "abfss://", "adl://")
# Where each store's credentials come from: named in the error when an object cannot be read. Polars asks
# google-auth (Application Default Credentials) for Google Cloud Storage when it is installed.
_CREDENTIALS = {
    "s3": "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS, the path of a service account key file",
    "az": "AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY",
}
# Besides Polars' own errors, its credential providers raise their SDK's (google-auth, azure-identity, boto3).
_STORE_ERROR_PACKAGES = ("google", "azure", "botocore", "boto3")
SNAPSHOT_FORMAT = ".parquet"


def is_remote(path: str | None) -> bool:
    return bool(path) and str(path).lower().startswith(REMOTE_SCHEMES)


def is_local_file(data: DataConfig) -> bool:
    return data.source == "file" and not is_remote(data.path)


def source_location(data: DataConfig, root: Path) -> Path | str:
    """What the data is, for lineage and messages: a local path, an object store URL, or the SQL connection
    URI with its password masked."""
    if data.source == "sql":
        return redact(connection_uri(data, root))
    if is_remote(data.path):
        return redact(str(data.path))
    return _resolve(root, str(data.path))


def local_path(data: DataConfig, root: Path) -> Path | None:
    """The local file prepare reads without fetching anything: the snapshot, or a local data file; None when
    the source must be read first."""
    if data.snapshot:
        return _resolve(root, data.snapshot)
    return _resolve(root, str(data.path)) if is_local_file(data) else None


def input_file(data: DataConfig, root: Path) -> Path:
    """The local CSV or Parquet file the prepare stage reads.

    With ``data.snapshot`` set that is the snapshot, which the ingest stage writes. Without it, a SQL or remote
    source is read once per process into a temporary snapshot.
    """
    found = local_path(data, root)
    if found is not None:
        if data.snapshot and not found.is_file():
            raise DataError(
                f"data.snapshot {data.snapshot} does not exist; run `mmp ingest` (or `dvc repro ingest`) to "
                "write it from the source, or set data.snapshot=null to read the source directly"
            )
        return found
    key = hashlib.sha1(repr((root, data)).encode()).hexdigest()[:16]  # one read per source and process
    if key not in _SNAPSHOTS:
        folder = Path(tempfile.mkdtemp(prefix="mmp-source-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _SNAPSHOTS[key] = write_snapshot(data, root, folder / f"{data.name}{SNAPSHOT_FORMAT}")
    return _SNAPSHOTS[key]


_SNAPSHOTS: dict[str, Path] = {}


def write_snapshot(data: DataConfig, root: Path, dest: Path) -> Path:
    """Copy the source into the Parquet file ``dest``, atomically. A snapshot whose content did not change is
    left as it was (same bytes, same mtime), so DVC sees nothing new and the stages after it do not re-run."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".snapshot-") as scratch:
        fresh = Path(scratch) / dest.name
        frame = scan_source(data, root)
        try:
            frame.sink_parquet(fresh)
        except Exception as exc:
            if not _is_store_error(exc):
                raise
            raise DataError(redact(f"{describe(data, root)} cannot be read ({_reason(exc)}); {_fix(data)}")) from None
        if dest.is_file() and _same_content(dest, fresh):
            return dest
        os.replace(fresh, dest)
    return dest


def scan_source(data: DataConfig, root: Path) -> pl.LazyFrame:
    """The source as a lazy frame: a local or remote file is scanned, a query is run (drivers are eager)."""
    if data.source == "sql":
        return read_sql(data, root).lazy()
    if is_remote(data.path):
        return scan_remote(str(data.path))
    return scan_table(_resolve(root, str(data.path)))


def scan_remote(url: str) -> pl.LazyFrame:
    """A CSV or Parquet object, scanned lazily by Polars' cloud reader (credentials from the environment)."""
    suffix = Path(url.split("?")[0]).suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv", ".tsv", ".txt"):
        raise DataError(f"Data file {redact(url)} has an unknown format '{suffix}'; use .csv or .parquet")
    try:
        with warnings.catch_warnings():
            # Polars warns when AWS_REGION is unset and asks the bucket for it: noise around a one-line error.
            warnings.filterwarnings("ignore", message=".*region' not set", category=UserWarning)
            if suffix in (".parquet", ".pq"):
                frame = pl.scan_parquet(url)
            else:
                frame = pl.scan_csv(url, separator="\t" if suffix == ".tsv" else ",", infer_schema_length=10_000)
            frame.collect_schema()  # reaches the store: a missing object or a refused key fails here
    except Exception as exc:
        if not _is_store_error(exc):
            raise
        raise DataError(
            redact(
                f"Data file {url} cannot be read ({_reason(exc)}); check the URL and the store's credentials "
                f"and endpoint in the environment or .env (e.g. {_credentials(url)})"
            )
        ) from None
    return frame


def _credentials(url: str) -> str:
    scheme = url.split("://")[0].lower()
    kind = "gs" if scheme in ("gs", "gcs") else "az" if scheme in ("az", "abfs", "abfss", "adl") else "s3"
    return _CREDENTIALS[kind]


def _is_store_error(exc: Exception) -> bool:
    package = type(exc).__module__.split(".")[0]
    return isinstance(exc, OSError | pl.exceptions.PolarsError) or package in _STORE_ERROR_PACKAGES


def connection_uri(data: DataConfig, root: Path | None = None) -> str:
    """The SQL connection URI: ``data.uri``, or the value of the variable ``data.uri_env`` (the environment
    first, then the project's ``.env``, so that every command that reads the data finds it)."""
    if data.uri_env:
        uri = os.environ.get(data.uri_env) or (_dotenv_value(root, data.uri_env) if root else None)
        if not uri:
            raise ConfigError(
                f"data.uri_env names {data.uri_env}, which is not set; put {data.uri_env}=<connection URI> in "
                ".env or the environment"
            )
        remember_secret(_password(uri))  # masked wherever it might be printed
        return uri
    if not data.uri:
        raise ConfigError("data.source sql needs a connection: set data.uri, or data.uri_env (a variable in .env)")
    return data.uri


def query_text(data: DataConfig, root: Path) -> str:
    if data.sql_file:
        path = _resolve(root, data.sql_file)
        if not path.is_file():
            raise ConfigError(f"data.sql_file {path} does not exist; fix the path or give the query as data.sql")
        return path.read_text(encoding="utf-8")
    if not data.sql:
        raise ConfigError("data.source sql needs a query: set data.sql (inline) or data.sql_file (a .sql file)")
    return data.sql


def read_sql(data: DataConfig, root: Path) -> pl.DataFrame:
    """Run the configured query; its parameters are bound by the driver, never formatted into the text."""
    uri = connection_uri(data, root)
    query = query_text(data, root)
    options = {"parameters": list(data.sql_params)} if data.sql_params else None
    try:
        return pl.read_database_uri(query, _adbc_uri(uri), engine="adbc", execute_options=options)
    except ModuleNotFoundError as exc:
        raise DataError(f"{describe(data, root)} needs its ADBC driver ({_reason(exc)}); pip install it") from None
    except Exception as exc:  # each driver raises its own classes (adbc_driver_manager.Error, ...)
        raise DataError(redact(f"{describe(data, root)} failed ({_reason(exc)}); {_fix(data)}")) from None


def describe(data: DataConfig, root: Path) -> str:
    """The source in one phrase for messages, with no password."""
    if data.source == "sql":
        where = f"${data.uri_env}" if data.uri_env else redact(data.uri or "")
        return f"The query of data '{data.name}' on {where}"
    return f"Data file {source_location(data, root)}"


def _fix(data: DataConfig) -> str:
    if data.source == "sql":
        return "check the connection URI, its password (.env) and the query"
    return f"check the URL and the store's credentials in the environment or .env ({_credentials(str(data.path))})"


def _adbc_uri(uri: str) -> str:
    # SQLAlchemy spells the driver in the scheme (postgresql+psycopg://); ADBC wants the plain database scheme.
    scheme, sep, rest = uri.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}" if sep else uri


def _password(uri: str) -> str | None:
    from urllib.parse import urlsplit

    with contextlib.suppress(ValueError):
        return urlsplit(uri).password
    return None


def _dotenv_value(root: Path, name: str) -> str | None:
    env_file = tracking_root(root) / ".env"
    if not env_file.is_file():
        return None
    from dotenv import dotenv_values

    return dotenv_values(env_file).get(name)


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _resolve(root: Path, path: str) -> Path:
    found = Path(path).expanduser()
    return found if found.is_absolute() else root / found


def _same_content(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and file_digest(a) == file_digest(b)
