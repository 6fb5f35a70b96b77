"""Reading data files (CSV or Parquet, lazily with Polars) and their content digest."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from mmp.config import DataConfig
from mmp.errors import DataError
from mmp.files import scan_table as scan

log = logging.getLogger(__name__)


def load(data: DataConfig, path: Path) -> pl.DataFrame:
    """Read the configured columns and rows: checks columns, drops unused ones, applies ``data.query``."""
    with parse_errors(path):
        return scan_checked(data, path).collect()


def scan_checked(data: DataConfig, path: Path) -> pl.LazyFrame:
    """:func:`load` as a lazy query, nothing read beyond the schema: for passes that stream the file.

    Parse errors surface when the query runs: run it inside :func:`parse_errors`.
    """
    frame = scan(path)
    schema = frame.collect_schema()
    columns = schema.names()
    _require_columns(data, columns, path)
    _check_columns(data, schema, path)
    frame = frame.drop([c for c in data.drop_columns if c in columns])
    if data.query:
        try:
            frame = frame.filter(pl.sql_expr(data.query))
        except pl.exceptions.PolarsError as exc:
            raise DataError(f"data.query '{data.query}' is not a valid SQL condition ({exc}); fix it") from None
    return frame


@contextlib.contextmanager
def parse_errors(path: Path) -> Iterator[None]:
    """A Polars error while the data file is read becomes one DataError line naming the file."""
    try:
        yield
    except pl.exceptions.PolarsError as exc:
        reason = " ".join(str(exc).split())[:300]
        raise DataError(f"Data file {path} cannot be parsed ({reason}); fix the file or the column types") from None


def _require_columns(data: DataConfig, columns: list[str], path: Path) -> None:
    if data.target not in columns:
        raise DataError(
            f"Target column '{data.target}' is not in {path} (columns: {', '.join(columns[:20])}); set data.target"
        )
    for key in ("id_columns", "drop_columns", "categorical_columns"):
        missing = [c for c in getattr(data, key) if c not in columns]
        if missing:
            raise DataError(
                f"data.{key} names column(s) {', '.join(missing)} that {path} does not have; fix data.{key}"
            )


_DIGEST_BLOCK = 16 << 20
_DUPLICATED = re.compile(r"^(?P<name>.+)_duplicated_\d+$")  # Polars' name for a repeated CSV header


def _check_columns(data: DataConfig, schema: pl.Schema, path: Path) -> None:
    """Refuse nested columns (lists, structs), which no model takes; warn of a header that appears twice."""
    dropped = set(data.drop_columns)
    for name, dtype in schema.items():
        if name in dropped:
            continue
        if isinstance(dtype, (pl.List, pl.Array, pl.Struct, pl.Object)):
            raise DataError(
                f"Column '{name}' of {path} is a nested {dtype} column, which mmp does not support; "
                f"flatten it into plain columns, or add it to data.drop_columns"
            )
        match = _DUPLICATED.match(name)
        if match and match["name"] in schema:
            log.warning(
                "Data file %s has two columns named '%s'; the second one is read as '%s'. Rename one of them in "
                "the file, or drop it with data.drop_columns=[%s]",
                path,
                match["name"],
                name,
                name,
            )


def file_digest(path: Path) -> str:
    """A short content digest of a data file (MLflow dataset digest, lineage tags).

    SHA-1 for speed, not security: the CPU hashes it in hardware, 2.4x faster than MD5 here.
    """
    digest = hashlib.sha1()
    with path.open("rb", buffering=0) as handle:
        # Large blocks: each update runs without the GIL, and a file larger than memory never is resident whole
        # (a mapped file counts toward the process's memory as it is read).
        block = bytearray(_DIGEST_BLOCK)
        view = memoryview(block)
        while size := handle.readinto(block):
            digest.update(view[:size])
    return digest.hexdigest()[:12]
