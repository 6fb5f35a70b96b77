"""Preprocessing fitted on the train split: imputation, categorical encoding and scaling.

The fitted state is plain JSON (no pickles). :meth:`Preprocessor.transform` turns raw rows (a Polars
frame) into the float matrix the model takes; training, evaluation and serving all go through it.
Categories unseen in training are treated as missing: native/ordinal encodings give them the missing
code, one-hot gives them all zeros.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mmp.errors import DataError

STATE_VERSION = 1
_ORDINAL_MISSING = -1.0


@dataclass(frozen=True)
class EncodingPlan:
    """How the model wants its inputs, resolved from the recipe and the model (:func:`mmp.model.encoding_plan`)."""

    encoding: str = "ordinal"  # categorical columns: native | ordinal | onehot
    imputation: str = "none"  # numeric columns: none | median | mean | zero
    scaling: str = "none"  # numeric columns: standard | none
    max_onehot_levels: int = 30
    max_native_levels: int | None = None  # above this, a native column falls back to ordinal codes


@dataclass
class ColumnState:
    """How one raw input column becomes one or more model features."""

    name: str
    kind: str  # numeric | categorical
    dtype: str  # the Polars dtype seen in training
    nullable: bool  # training data had missing values
    encoding: str | None = None  # categorical: native | ordinal | onehot
    categories: list[str] = field(default_factory=list)
    impute: float | None = None  # numeric fill value for missing cells
    mean: float | None = None  # numeric scaling
    std: float | None = None

    def output_names(self) -> list[str]:
        if self.kind == "categorical" and self.encoding == "onehot":
            return [f"{self.name}={level}" for level in self.categories]
        return [self.name]


@dataclass
class Preprocessor:
    target: str
    task: str
    classes: list[str] | None
    id_columns: list[str]
    columns: list[ColumnState]
    version: int = STATE_VERSION

    # ----------------------------------------------------------------- fitting

    @classmethod
    def fit(
        cls,
        train: pl.DataFrame | pl.LazyFrame,
        *,
        target: str,
        task: str,
        classes: list[str] | None,
        id_columns: list[str],
        features: list[str],
        categorical_columns: list[str],
        plan: EncodingPlan,
    ) -> Preprocessor:
        """Fit on the train split, in memory or as a lazy scan (e.g. of its Parquet file).

        A scan is read in passes that hold at most one column: null counts for all columns, then each
        categorical column's level counts (a streaming group-by), then the numeric columns whose imputation
        or scaling needs their values (an exact median needs the whole column).
        """
        lazy = train.lazy()
        schema = lazy.collect_schema()
        nulls = lazy.select(pl.col(features).null_count()).collect(engine="streaming").row(0, named=True)
        columns = []
        for name in features:
            dtype, nullable = schema[name], nulls[name] > 0
            if name in categorical_columns or not dtype.is_numeric():
                columns.append(_fit_categorical(lazy, name, dtype, nullable, plan))
            else:
                columns.append(_fit_numeric(lazy, name, dtype, nullable, plan.imputation, plan.scaling))
        return cls(target=target, task=task, classes=classes, id_columns=list(id_columns), columns=columns)

    # ----------------------------------------------------------------- applying

    @property
    def input_columns(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def feature_names(self) -> list[str]:
        return [name for column in self.columns for name in column.output_names()]

    @property
    def feature_groups(self) -> list[str]:
        """For each model feature, the raw column it came from (folds one-hot groups back)."""
        return [column.name for column in self.columns for _ in column.output_names()]

    @property
    def categorical_indices(self) -> list[int]:
        """Model features that the library should treat as native categories."""
        indices, position = [], 0
        for column in self.columns:
            if column.kind == "categorical" and column.encoding == "native":
                indices.append(position)
            position += len(column.output_names())
        return indices

    def transform(self, frame: pl.DataFrame) -> np.ndarray:
        """Raw rows -> float32 feature matrix (columns in :attr:`feature_names` order)."""
        missing = [c for c in self.input_columns if c not in frame.columns]
        if missing:
            raise DataError(f"Input is missing column(s) {', '.join(missing)}; the model was trained with them")
        expressions: list[pl.Expr] = []
        for column in self.columns:
            expressions.extend(_expressions(column))
        try:
            matrix = frame.select(expressions).to_numpy()
        except pl.exceptions.PolarsError as exc:
            raise DataError(
                f"Input cannot be encoded ({' '.join(str(exc).split())[:200]}); check column types"
            ) from None
        return np.ascontiguousarray(matrix, dtype=np.float32)

    def encode_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Raw rows (dicts) -> the same matrix as :meth:`transform`, without building a frame.

        The serving fast path for small requests: a few microseconds a row. Values must already be
        validated (numbers for numeric columns, text or numbers for categorical ones, or None).
        """
        plan = self._row_plan()
        matrix = np.zeros((len(rows), len(self.feature_names)), dtype=np.float32)
        for i, row in enumerate(rows):
            out = matrix[i]
            for name, position, kind, lookup, fill, mean, std in plan:
                value = row.get(name)
                if kind == "numeric":
                    number = float("nan") if value is None else float(value)
                    if number != number and fill is not None:
                        number = fill
                    out[position] = number if mean is None else (number - mean) / std
                elif kind == "onehot":
                    index = lookup.get(str(value)) if value is not None else None
                    if index is not None:
                        out[position + index] = 1.0
                else:
                    code = lookup.get(str(value)) if value is not None else None
                    out[position] = fill if code is None else code
        return matrix

    def _row_plan(self) -> list[tuple[str, int, str, dict[str, int], float | None, float | None, float | None]]:
        plan = self.__dict__.get("_plan")
        if plan is None:
            plan, position = [], 0
            for column in self.columns:
                lookup = {level: i for i, level in enumerate(column.categories)}
                if column.kind == "numeric":
                    plan.append((column.name, position, "numeric", lookup, column.impute, column.mean, column.std))
                elif column.encoding == "onehot":
                    plan.append((column.name, position, "onehot", lookup, None, None, None))
                else:
                    missing = float("nan") if column.encoding == "native" else _ORDINAL_MISSING
                    plan.append((column.name, position, "code", lookup, missing, None, None))
                position += len(column.output_names())
            self.__dict__["_plan"] = plan
        return plan

    def encode_target(self, series: pl.Series) -> np.ndarray:
        if self.task == "regression":
            return series.cast(pl.Float64).to_numpy()
        assert self.classes is not None
        codes = series.cast(pl.String).replace_strict(self.classes, list(range(len(self.classes))), default=None)
        if codes.null_count():
            unknown = series.filter(codes.is_null()).unique().head(5).to_list()
            raise DataError(f"Target values {unknown} were not seen in training")
        return codes.cast(pl.Int32).to_numpy()

    # ----------------------------------------------------------------- JSON

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def save(self, path: Path) -> None:
        path.write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Preprocessor:
        if state.get("version") != STATE_VERSION:
            raise DataError(f"Preprocessing state version {state.get('version')} is not supported; re-run prepare")
        columns = [ColumnState(**column) for column in state["columns"]]
        return cls(**{**state, "columns": columns})

    @classmethod
    def load(cls, path: Path) -> Preprocessor:
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))


def _fit_categorical(
    train: pl.LazyFrame, name: str, dtype: pl.DataType, nullable: bool, plan: EncodingPlan
) -> ColumnState:
    encoding, max_onehot_levels = plan.encoding, plan.max_onehot_levels
    values = train.select(pl.col(name).cast(pl.String)).drop_nulls()
    counts = values.group_by(name).agg(pl.len().alias("count")).collect(engine="streaming")
    if encoding == "onehot":
        # Most frequent levels first, ties by value, so the state is deterministic.
        counts = counts.sort(["count", name], descending=[True, False]).head(max_onehot_levels)
        categories = counts[name].to_list()
    else:
        categories = sorted(counts[name].to_list())
        if encoding == "native" and plan.max_native_levels is not None and len(categories) > plan.max_native_levels:
            encoding = "ordinal"
    return ColumnState(
        name=name, kind="categorical", dtype=str(dtype), nullable=nullable, encoding=encoding, categories=categories
    )


def _fit_numeric(
    train: pl.LazyFrame, name: str, dtype: pl.DataType, nullable: bool, imputation: str, scaling: str
) -> ColumnState:
    impute = mean = std = None
    if imputation in ("median", "mean") or scaling == "standard":
        # One chunk: a sum's rounding must not depend on how the column was read (memory, Parquet, stream).
        values = train.select(pl.col(name).cast(pl.Float64)).collect(engine="streaming")[name].rechunk()
        if imputation in ("median", "mean"):
            valid = values.drop_nulls().drop_nans()
            impute = float(valid.median() if imputation == "median" else valid.mean())  # type: ignore[arg-type]
        if scaling == "standard":
            filled = values.fill_null(impute) if impute is not None else values.drop_nulls().drop_nans()
            mean = float(filled.mean())  # type: ignore[arg-type]
            std = float(filled.std() or 0.0) or 1.0  # type: ignore[arg-type]
    if imputation == "zero":
        impute = 0.0
    return ColumnState(
        name=name, kind="numeric", dtype=str(dtype), nullable=nullable, impute=impute, mean=mean, std=std
    )


def _expressions(column: ColumnState) -> list[pl.Expr]:
    source = pl.col(column.name)
    if column.kind == "numeric":
        expr = source.cast(pl.Float64, strict=False).fill_nan(None)
        if column.impute is not None:
            expr = expr.fill_null(column.impute)
        if column.mean is not None and column.std is not None:
            expr = (expr - column.mean) / column.std
        return [expr.cast(pl.Float32).alias(column.name)]
    text = source.cast(pl.String)
    if column.encoding == "onehot":
        return [
            (text == level).fill_null(False).cast(pl.Float32).alias(f"{column.name}={level}")
            for level in column.categories
        ]
    missing_code = None if column.encoding == "native" else _ORDINAL_MISSING
    codes = text.replace_strict(
        column.categories, list(range(len(column.categories))), default=missing_code, return_dtype=pl.Float32
    )
    return [codes.fill_null(float("nan") if missing_code is None else missing_code).alias(column.name)]


def fold(values: np.ndarray, groups: list[str]) -> tuple[list[str], np.ndarray]:
    """Sum the last axis of ``values`` over model features that share a raw column."""
    names = list(dict.fromkeys(groups))
    if len(names) == len(groups):
        return names, values
    index = {name: i for i, name in enumerate(names)}
    folded = np.zeros((*values.shape[:-1], len(names)), dtype=values.dtype)
    for position, group in enumerate(groups):
        folded[..., index[group]] += values[..., position]
    return names, folded
