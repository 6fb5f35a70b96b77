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
        series = frame[column]
        if series.null_count() == frame.height:
            raise DataError(f"Column '{column}' is entirely empty; add it to data.drop_columns or fix the data file")
        _check_feature(series, data)
    if frame[target].dtype.is_float() and frame[target].is_infinite().any():
        raise DataError(f"Target '{target}' holds infinite values (inf); fix or remove those rows in the data file")
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


def _check_feature(series: pl.Series, data: DataConfig) -> None:
    """Infinite numbers fail; a text column that is mostly numbers is trained as a categorical: say so."""
    name = series.name
    if series.dtype.is_float() and series.is_infinite().any():
        count = int(series.is_infinite().sum())
        raise DataError(
            f"Column '{name}' holds {count} infinite value(s) (inf); replace them in the data file "
            "(leave the cell empty for a missing value), or add the column to data.drop_columns"
        )
    if series.dtype != pl.String or name in data.categorical_columns:
        return
    values = series.drop_nulls()
    numbers = values.str.strip_chars().cast(pl.Float64, strict=False)
    n_numbers = values.len() - numbers.null_count()
    if n_numbers == 0 or n_numbers == values.len():
        return
    texts = values.filter(numbers.is_null()).unique(maintain_order=True).head(3).to_list()
    log.warning(
        "Column '%s' mixes numbers and text (%d numeric value(s), and e.g. %s): it is trained as a categorical "
        "column with %d levels. If it is numeric, fix the text values in the file (an empty cell is a missing "
        "value); if it is categorical, list it in data.categorical_columns",
        name,
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
