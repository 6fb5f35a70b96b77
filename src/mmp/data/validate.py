"""Checking loaded data against the config: the target, its task and classes, and the feature columns."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import polars as pl

from mmp.config import DataConfig
from mmp.errors import DataError

log = logging.getLogger(__name__)

MAX_CLASSES = 50  # an integer target with at most this many values may be classification
_INT_CLASSIFICATION_LEVELS = 20  # task=auto: an integer target with more values is regression


def feature_columns(frame: pl.DataFrame | pl.LazyFrame, data: DataConfig) -> list[str]:
    excluded = {data.target, *data.id_columns, *data.drop_columns}
    names = frame.collect_schema().names() if isinstance(frame, pl.LazyFrame) else frame.columns
    return [c for c in names if c not in excluded]


@dataclass(frozen=True)
class Cleaned:
    frame: pl.DataFrame
    task: str
    classes: list[str] | None
    dropped_null_target: int


@dataclass(frozen=True)
class CheckedScan:
    """:func:`check_scan`'s result: the cleaned rows as a lazy query, and what the checks found out."""

    frame: pl.LazyFrame  # rows with a target, the target as text for classification
    keys: pl.DataFrame  # the columns a split needs (target, time, group), as read, in memory: a few bytes a row
    rows: int
    task: str
    classes: list[str] | None
    dropped_null_target: int


def clean_and_check(frame: pl.DataFrame, data: DataConfig, requested_task: str) -> Cleaned:
    """Validate the data against the config and settle the task.

    Rows whose target is missing are dropped (they cannot be learnt from), and counted.
    """
    checked = check_scan(frame.lazy(), data, requested_task, [data.target])
    return Cleaned(checked.frame.collect(), checked.task, checked.classes, checked.dropped_null_target)


def check_scan(frame: pl.LazyFrame, data: DataConfig, requested_task: str, key_columns: list[str]) -> CheckedScan:
    """:func:`clean_and_check` in streaming passes: the counts and checks are aggregations, and only
    ``key_columns`` (those of them in the data) are held in memory.
    """
    checked = scan_keys(frame, data, requested_task, key_columns)
    check_columns(checked.frame, data, checked.rows)
    return checked


def scan_keys(frame: pl.LazyFrame, data: DataConfig, requested_task: str, key_columns: list[str]) -> CheckedScan:
    """The target's checks and the task, from one pass that reads the target and ``key_columns`` only (those
    of them in the data, held in memory). The feature columns are left to :func:`check_columns`."""
    target = data.target
    schema = frame.collect_schema()
    wanted = list(dict.fromkeys([target, *(c for c in key_columns if c in schema)]))
    keys = frame.select(wanted).collect(engine="streaming")
    n_null = keys[target].null_count()
    if n_null:
        log.warning("Dropping %d row(s) whose target '%s' is missing", n_null, target)
        keys = keys.filter(pl.col(target).is_not_null())
    rows = keys.height
    if rows == 0:
        where = f" after data.query '{data.query}'" if data.query else ""
        raise DataError(
            f"No rows left{where} once rows with a missing target are dropped; check the data file and data.query"
        )
    if schema[target].is_float() and keys[target].is_infinite().any():
        raise DataError(f"Target '{target}' holds infinite values (inf); fix or remove those rows in the data file")
    if rows < 20:
        raise DataError(f"Only {rows} rows to learn from; mmp needs at least 20 to split train/valid/test")
    task = infer_task(keys[target], requested_task, target)
    classes = None
    frame = frame.filter(pl.col(target).is_not_null()) if n_null else frame
    if task != "regression":
        frame = frame.with_columns(pl.col(target).cast(pl.String))
        # The keys keep the target's own type (text is 16 bytes a row); a split casts what it compares.
        classes = sorted(keys[target].unique().cast(pl.String).to_list())
        if data.positive_class is not None and task == "binary":
            if data.positive_class not in classes:
                raise DataError(
                    f"data.positive_class '{data.positive_class}' is not a value of '{target}' "
                    f"(values: {', '.join(classes)}); fix data.positive_class"
                )
            classes = [c for c in classes if c != data.positive_class] + [data.positive_class]
    return CheckedScan(frame, keys, rows, task, classes, n_null)


def check_columns(frame: pl.LazyFrame, data: DataConfig, rows: int) -> None:
    """The feature columns' checks over the cleaned rows (``rows`` of them), in one streaming pass: no column
    entirely empty, no infinities; a text column that is mostly numbers is named in a warning. ``frame`` may be
    the data file's scan or the splits already written from it (Parquet: each column read on its own)."""
    schema = frame.collect_schema()
    features = feature_columns(frame, data)
    stats = _column_stats(frame, schema, features, data)
    for column in features:
        if stats[f"nulls:{column}"] == rows:
            raise DataError(f"Column '{column}' is entirely empty; add it to data.drop_columns or fix the data file")
        if count := stats.get(f"inf:{column}"):
            raise DataError(
                f"Column '{column}' holds {count} infinite value(s) (inf); replace them in the data file "
                "(leave the cell empty for a missing value), or add the column to data.drop_columns"
            )
        n_numbers, n_values = stats.get(f"numbers:{column}", 0), stats.get(f"values:{column}", 0)
        if 0 < n_numbers < n_values:
            _warn_mixed(frame.select(column).collect(engine="streaming")[column], n_numbers)


def _column_stats(frame: pl.LazyFrame, schema: pl.Schema, features: list[str], data: DataConfig) -> dict[str, int]:
    """One streaming pass: null counts, infinities, and numbers among text values, per feature column."""
    exprs = [pl.len().alias("rows")]
    for name in features:
        column = pl.col(name)
        exprs.append(column.null_count().alias(f"nulls:{name}"))
        if schema[name].is_float():
            exprs.append(column.is_infinite().sum().alias(f"inf:{name}"))
        elif schema[name] == pl.String and name not in data.categorical_columns:
            # A text column that is mostly numbers is trained as a categorical: counted here, said once below.
            exprs.append(column.count().alias(f"values:{name}"))
            exprs.append(column.str.strip_chars().cast(pl.Float64, strict=False).count().alias(f"numbers:{name}"))
    row = frame.select(exprs).collect(engine="streaming").row(0, named=True)
    return {key: int(value or 0) for key, value in row.items()}


def _warn_mixed(series: pl.Series, n_numbers: int) -> None:
    """A text column that is mostly numbers is trained as a categorical: say so."""
    values = series.drop_nulls()
    numbers = values.str.strip_chars().cast(pl.Float64, strict=False)
    texts = values.filter(numbers.is_null()).unique(maintain_order=True).head(3).to_list()
    log.warning(
        "Column '%s' mixes numbers and text (%d numeric value(s), and e.g. %s): it is trained as a categorical "
        "column with %d levels. If it is numeric, fix the text values in the file (an empty cell is a missing "
        "value); if it is categorical, list it in data.categorical_columns",
        series.name,
        n_numbers,
        ", ".join(repr(text) for text in texts),
        values.n_unique(),
    )


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
