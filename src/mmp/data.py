"""Reading, validating and splitting the data (Polars). Pure functions but for :func:`scan`."""

from __future__ import annotations

import hashlib
import logging
import mmap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mmp.config import DataConfig, SplitConfig
from mmp.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
MAX_CLASSES = 50  # an integer target with at most this many values may be classification
_INT_CLASSIFICATION_LEVELS = 20  # task=auto: an integer target with more values is regression


def scan(path: Path) -> pl.LazyFrame:
    """Open a CSV or Parquet file lazily, with a clear error when it cannot be read."""
    if not path.is_file():
        raise DataError(f"Data file {path} does not exist; set data.path (or -d PATH) to a CSV or Parquet file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pl.scan_parquet(path)
        elif suffix in (".csv", ".txt", ".tsv"):
            frame = pl.scan_csv(
                path, separator="\t" if suffix == ".tsv" else ",", infer_schema_length=10_000, try_parse_dates=False
            )
        else:
            raise DataError(f"Data file {path} has an unknown format '{suffix}'; use .csv or .parquet")
        frame.collect_schema()
    except (OSError, pl.exceptions.PolarsError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise DataError(
            f"Data file {path} cannot be read ({reason}); check that it is a valid {suffix[1:]} file"
        ) from None
    return frame


def load(data: DataConfig, path: Path) -> pl.DataFrame:
    """Read the configured columns and rows: checks columns, drops unused ones, applies ``data.query``."""
    frame = scan(path)
    columns = frame.collect_schema().names()
    _require_columns(data, columns, path)
    frame = frame.drop([c for c in data.drop_columns if c in columns])
    if data.query:
        try:
            frame = frame.filter(pl.sql_expr(data.query))
        except pl.exceptions.PolarsError as exc:
            raise DataError(f"data.query '{data.query}' is not a valid SQL condition ({exc}); fix it") from None
    try:
        return frame.collect()
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


def feature_columns(frame: pl.DataFrame, data: DataConfig) -> list[str]:
    excluded = {data.target, *data.id_columns, *data.drop_columns}
    return [c for c in frame.columns if c not in excluded]


@dataclass(frozen=True)
class Cleaned:
    frame: pl.DataFrame
    task: str
    classes: list[str] | None
    dropped_null_target: int


def clean_and_check(frame: pl.DataFrame, data: DataConfig, requested_task: str) -> Cleaned:
    """Validate the data against the config and settle the task.

    Rows whose target is missing are dropped (they cannot be learnt from), and counted.
    """
    target = data.target
    n_null = frame[target].null_count()
    if n_null:
        log.warning("Dropping %d row(s) whose target '%s' is missing", n_null, target)
        frame = frame.filter(pl.col(target).is_not_null())
    if frame.height == 0:
        where = f" after data.query '{data.query}'" if data.query else ""
        raise DataError(
            f"No rows left{where} once rows with a missing target are dropped; check the data file and data.query"
        )
    for column in feature_columns(frame, data):
        if frame[column].null_count() == frame.height:
            raise DataError(f"Column '{column}' is entirely empty; add it to data.drop_columns or fix the data file")
    if frame.height < 20:
        raise DataError(f"Only {frame.height} rows to learn from; mmp needs at least 20 to split train/valid/test")
    task = infer_task(frame[target], requested_task, target)
    classes = None
    if task != "regression":
        frame = frame.with_columns(pl.col(target).cast(pl.String))
        classes = sorted(frame[target].unique().to_list())
        if data.positive_class is not None and task == "binary":
            if data.positive_class not in classes:
                raise DataError(
                    f"data.positive_class '{data.positive_class}' is not a value of '{target}' "
                    f"(values: {', '.join(classes)}); fix data.positive_class"
                )
            classes = [c for c in classes if c != data.positive_class] + [data.positive_class]
    return Cleaned(frame, task, classes, n_null)


def infer_task(target: pl.Series, requested: str, name: str) -> str:
    """Check the target fits the requested task, or read the task off the target for ``auto``."""
    n_unique = target.n_unique()
    numeric = target.dtype.is_numeric()
    if n_unique < 2:
        value = target[0]
        raise DataError(f"Target '{name}' has a single value ({value!r}); a model needs at least two classes or values")
    if requested == "regression":
        if not numeric:
            raise DataError(
                f"Target '{name}' is {target.dtype} but recipe.task is regression; use a numeric target or "
                "set recipe.task to binary/multiclass"
            )
        return "regression"
    integral = target.dtype.is_integer() or (
        target.dtype.is_float() and bool((target.drop_nans().round(0) == target.drop_nans()).all())
    )
    if requested == "auto":
        if numeric and not (integral and n_unique <= _INT_CLASSIFICATION_LEVELS) and target.dtype != pl.Boolean:
            return "regression"
        return "binary" if n_unique == 2 else "multiclass"
    # binary / multiclass
    if numeric and not integral:
        raise DataError(
            f"Target '{name}' holds fractional numbers but recipe.task is {requested}; set recipe.task=regression"
        )
    if n_unique > MAX_CLASSES:
        raise DataError(
            f"Target '{name}' has {n_unique} distinct values, too many classes for {requested}; "
            "set recipe.task=regression"
        )
    if requested == "binary" and n_unique != 2:
        raise DataError(f"Target '{name}' has {n_unique} classes but recipe.task is binary; set recipe.task=multiclass")
    if requested == "multiclass" and n_unique == 2:
        return "binary"
    return requested


def split(frame: pl.DataFrame, target: str, task: str, config: SplitConfig, seed: int) -> dict[str, pl.DataFrame]:
    """Seeded train/valid/test split, stratified by class for classification."""
    rng = np.random.default_rng(seed)
    n = frame.height
    assignment = np.zeros(n, dtype=np.int8)  # 0 train, 1 valid, 2 test
    if task != "regression" and config.stratify:
        labels = frame[target].cast(pl.String)
        # One comparison per class, in sorted order (a string rank of every row costs 7x more).
        groups = [np.flatnonzero((labels == label).to_numpy()) for label in sorted(labels.unique().to_list())]
    else:
        groups = [np.arange(n)]
    for rows in groups:
        rows = rng.permutation(rows)
        n_test = int(round(len(rows) * config.test_size))
        n_valid = int(round(len(rows) * config.valid_size))
        assignment[rows[:n_test]] = 2
        assignment[rows[n_test : n_test + n_valid]] = 1
    parts = {name: frame.filter(pl.Series(assignment == code)) for code, name in enumerate(SPLITS)}
    for name, part in parts.items():
        if part.height == 0:
            raise DataError(f"The {name} split is empty ({n} rows in all); use more data or larger split sizes")
    if task != "regression":
        seen = set(parts["train"][target].unique().to_list())
        missing = sorted(set(frame[target].unique().to_list()) - seen)
        if missing:
            raise DataError(
                f"Class(es) {', '.join(map(str, missing))} of '{target}' have too few rows to reach the train split; "
                "drop them with data.query or add data"
            )
    return parts


def file_digest(path: Path) -> str:
    """A short content digest of a data file (MLflow dataset digest, lineage tags).

    SHA-1 for speed, not security: the CPU hashes it in hardware, 2.4x faster than MD5 here.
    """
    with path.open("rb") as handle:
        if path.stat().st_size == 0:
            return hashlib.sha1(b"").hexdigest()[:12]
        # One hashing call over the mapped file: it runs without the GIL throughout, where a read loop
        # would queue for the GIL at every block while a background thread imports (1.7 s instead of 0.1 s).
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return hashlib.sha1(mapped).hexdigest()[:12]
