"""The scoring protocol, apart from any web framework: parse a request body into validated rows,
predict, and shape the response. Every client mistake is a :class:`RequestError` with the HTTP status
MLflow's scoring server would use and a message that names the column and the problem.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from mmp.data.preprocessing import ColumnState
from mmp.model.predictor import FLOAT32_MAX, PREDICT_METHODS, Prediction, Predictor

MLFLOW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
FRAME_MIN_ROWS = 1_000  # dataframe_split bodies this large are checked and encoded column-wise


class RequestError(Exception):
    """A bad request. ``error_code`` follows MLflow's names."""

    def __init__(self, message: str, status: int = 400, error_code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_code = error_code

    def body(self) -> dict[str, str]:
        return {"error_code": self.error_code, "message": self.message}


@dataclass(frozen=True)
class Limits:
    max_rows: int = 100_000
    unknown_columns: str = "reject"  # reject | ignore
    categorical_numbers: str = "warn"  # a number for a categorical column: warn (score it as text) | reject


Row = dict[str, Any]


# --------------------------------------------------------------------------- parsing


def rows_from_mlflow(payload: Any) -> tuple[list[Row], dict[str, Any]]:
    """An MLflow ``/invocations`` JSON body -> (rows, params)."""
    if not isinstance(payload, dict):
        raise RequestError(f"The JSON body must be an object with one of {', '.join(MLFLOW_FORMATS)}")
    present = [key for key in MLFLOW_FORMATS if key in payload]
    extra = [key for key in payload if key not in (*MLFLOW_FORMATS, "params")]
    if len(present) != 1 or extra:
        raise RequestError(
            f"The JSON body must have exactly one of {', '.join(MLFLOW_FORMATS)} (and optionally params); "
            f"got {', '.join(payload) or 'nothing'}"
        )
    params = payload.get("params") or {}
    if not isinstance(params, dict):
        raise RequestError('params must be a JSON object, e.g. {"predict_method": "predict_proba"}')
    key = present[0]
    data = payload[key]
    if key == "dataframe_split":
        return _split_rows(data), params
    if key == "inputs" and isinstance(data, dict):
        return _columnar_rows(data, key), params
    return _record_rows(data, key), params


def rows_from_predict(payload: Any) -> tuple[list[Row], bool]:
    """A ``/predict`` body: one record (an object) or many (a list). Returns (rows, single)."""
    if isinstance(payload, dict):
        return [payload], True
    if isinstance(payload, list):
        return _record_rows(payload, "body"), False
    raise RequestError("The body must be one record (a JSON object) or a list of records")


def _split_rows(data: Any) -> list[Row]:
    if not isinstance(data, dict) or "columns" not in data or "data" not in data:
        raise RequestError('dataframe_split must be {"columns": [...], "data": [[...], ...]}')
    columns, values = data["columns"], data["data"]
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise RequestError("dataframe_split.columns must be a list of column names")
    if not isinstance(values, list):
        raise RequestError("dataframe_split.data must be a list of rows")
    if len(set(columns)) != len(columns):
        duplicates = sorted({c for c in columns if columns.count(c) > 1})
        raise RequestError(f"dataframe_split.columns names {', '.join(map(repr, duplicates))} more than once")
    rows = []
    for index, row in enumerate(values):
        if not isinstance(row, list) or len(row) != len(columns):
            raise RequestError(f"dataframe_split.data row {index} must be a list of {len(columns)} values")
        rows.append(dict(zip(columns, row, strict=True)))
    return rows


def _columnar_rows(data: dict[str, Any], key: str) -> list[Row]:
    lengths = {len(v) if isinstance(v, list) else -1 for v in data.values()}
    if -1 in lengths or len(lengths) > 1:
        raise RequestError(f"{key} as an object must map every column to a list of the same length")
    n = lengths.pop() if lengths else 0
    return [{column: values[i] for column, values in data.items()} for i in range(n)]


def _record_rows(data: Any, key: str) -> list[Row]:
    if not isinstance(data, list):
        raise RequestError(f"{key} must be a list of records")
    for index, row in enumerate(data):
        if not isinstance(row, dict):
            raise RequestError(f"{key} item {index} must be an object mapping column names to values")
    return data


def matrix_from_split(payload: Any, predictor: Predictor, limits: Limits) -> tuple[np.ndarray, dict[str, Any]] | None:
    """A large, valid ``dataframe_split`` body -> (feature matrix, params), checked and encoded column-wise.

    None for anything else, or at the first doubt: the row-wise path then scores it or names the problem.
    """
    if not isinstance(payload, dict) or "dataframe_split" not in payload:
        return None
    if set(payload) - {"dataframe_split", "params"}:
        return None
    data, params = payload["dataframe_split"], payload.get("params") or {}
    if not isinstance(data, dict) or not isinstance(params, dict):
        return None
    names, values = data.get("columns"), data.get("data")
    if not isinstance(names, list) or not isinstance(values, list):
        return None
    if not FRAME_MIN_ROWS <= len(values) <= limits.max_rows:
        return None
    if not all(type(name) is str for name in names):
        return None  # the row-wise path names the problem
    width = len(names)
    if len(set(names)) != width or any(type(row) is not list or len(row) != width for row in values):
        return None
    pre = predictor.preprocessor
    strict = predictor.strict_columns
    known = {column.name for column in pre.columns}
    if limits.unknown_columns == "reject" and not set(names) <= known:
        return None
    by_name = dict(zip(names, zip(*values, strict=True), strict=True))
    series = []
    for column in pre.columns:
        cells = by_name.get(column.name)
        if cells is None:
            return None
        types = set(map(type, cells))
        has_null = type(None) in types
        if has_null and column.name in strict:
            return None
        if column.kind == "numeric":
            if not types <= {int, float, type(None)}:
                return None
            numbers = pl.Series(column.name, cells, dtype=pl.Float64)
            if float in types and (numbers.is_infinite().any() or numbers.is_nan().any()):
                return None
            if (numbers.abs().max() or 0) > FLOAT32_MAX:  # type: ignore[operator]
                return None
            series.append(numbers)
        elif types <= {str, type(None)}:
            series.append(pl.Series(column.name, cells, dtype=pl.String))
        else:
            return None  # numbers in a categorical column: the row path's str() is the reference
    return finite(predictor, pre.transform(pl.DataFrame(series))), params


# --------------------------------------------------------------------------- validation


def validate(rows: Sequence[Mapping[str, Any]], predictor: Predictor, limits: Limits) -> list[str]:
    """Check rows against the training schema; raise RequestError naming the column and the problem.

    Returns warnings for values that are scored but probably not what the client meant: a number sent for
    a categorical column that is not one of its categories (scored as an unseen category). With
    ``limits.categorical_numbers == "reject"`` those are a 400 instead.
    """
    if not rows:
        raise RequestError("No rows to score; send at least one record")
    if len(rows) > limits.max_rows:
        raise RequestError(f"{len(rows)} rows in one request; the limit is {limits.max_rows}, split the request")
    columns = predictor.preprocessor.columns
    known = {column.name for column in columns}
    strict = predictor.strict_columns
    odd: dict[str, list[Any]] = {}  # categorical column -> [first row, first value, count]
    for index, row in enumerate(rows):
        where = f" (row {index})" if len(rows) > 1 else ""
        if limits.unknown_columns == "reject":
            unknown = [name for name in row if name not in known]
            if unknown:
                raise RequestError(
                    f"Unknown column(s) {', '.join(map(repr, unknown))}{where}; the model takes "
                    f"{', '.join(sorted(known))}"
                )
        for column in columns:
            if column.name not in row:
                raise RequestError(f"Missing column '{column.name}'{where}; every model input column is required")
            value = row[column.name]
            if _check_value(column, value, where, column.name in strict):
                if limits.categorical_numbers == "reject":
                    raise RequestError(
                        f"Column '{column.name}' is categorical and takes text{where}, got the number {value!r} "
                        f"(not one of its categories); send its category as a string"
                    )
                seen = odd.setdefault(column.name, [index, value, 0])
                seen[2] += 1
    return [
        f"Column '{name}' got {count} number(s) that are not among its categories (first: {value!r}"
        f"{f' in row {index}' if len(rows) > 1 else ''}); they were scored as an unseen (missing) category"
        for name, (index, value, count) in odd.items()
    ]


def _check_value(column: ColumnState, value: Any, where: str, strict: bool) -> bool:
    """Raise RequestError for a value the model cannot take; True for a number that is not a known category."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if strict:
            raise RequestError(
                f"Column '{column.name}' is null{where}, but the model cannot take a missing value there "
                "(trained without missing values, no imputer, no native missing-value support)"
            )
        return False
    if column.kind == "numeric":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RequestError(f"Column '{column.name}' must be a number{where}, got {_short(value)}")
        if isinstance(value, float) and math.isinf(value):
            raise RequestError(f"Column '{column.name}' must be finite{where}, got {value!r}")
        if abs(value) > FLOAT32_MAX:
            raise RequestError(
                f"Column '{column.name}' must be within the model's float32 range (+/-{FLOAT32_MAX:.4g}){where}, "
                f"got {_short(value)}"
            )
        return False
    if isinstance(value, str):
        return False
    if not isinstance(value, (int, float, bool)):
        raise RequestError(f"Column '{column.name}' must be a text value{where}, got {type(value).__name__}")
    return str(value) not in _categories(column)


def _categories(column: ColumnState) -> frozenset[str]:
    known = column.__dict__.get("_known")
    if known is None:
        known = column.__dict__["_known"] = frozenset(column.categories)
    return known


def _short(value: Any, limit: int = 60) -> str:
    """A client's value for a message: repr, cut short (a 1 MB string does not come back whole)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def finite(predictor: Predictor, x: np.ndarray) -> np.ndarray:
    """The encoded matrix, or a RequestError naming the column whose value overflowed to infinity in
    float32 (a scaled column near float32's limit): every model takes float32 inputs."""
    if np.isinf(x).any():
        column = predictor.preprocessor.feature_groups[int(np.flatnonzero(np.isinf(x).any(axis=0))[0])]
        raise RequestError(f"Column '{column}' has a value too large for the model (float32) once scaled")
    return x


# --------------------------------------------------------------------------- predicting


Observe = Callable[[Prediction], None]  # sees each request's prediction (the server's metrics)


def predict_mlflow(
    predictor: Predictor, rows: list[Row], params: dict[str, Any], observe: Observe | None = None
) -> dict[str, Any]:
    """The MLflow response: what ``pyfunc.load_model(...).predict`` returns, JSON-encoded."""
    x = finite(predictor, predictor.preprocessor.encode_rows(rows))
    return predict_mlflow_matrix(predictor, x, params, observe=observe)


def predict_mlflow_matrix(
    predictor: Predictor, x: np.ndarray, params: dict[str, Any], observe: Observe | None = None
) -> dict[str, Any]:
    """:func:`predict_mlflow` from an encoded feature matrix."""
    method = params.get("predict_method", "predict")
    if method not in PREDICT_METHODS:
        raise RequestError(f"params.predict_method must be one of {', '.join(PREDICT_METHODS)}, got {_short(method)}")
    prediction = predictor.predict_encoded(x)
    if observe is not None:
        observe(prediction)
    return {"predictions": prediction.values(method)}


def predict_records(predictor: Predictor, rows: list[Row], observe: Observe | None = None) -> list[dict[str, Any]]:
    """``/predict``: a prediction per row, with labelled class probabilities for classifiers."""
    prediction = predictor.predict_encoded(finite(predictor, predictor.preprocessor.encode_rows(rows)))
    if observe is not None:
        observe(prediction)
    return prediction.records()


def explain_records(predictor: Predictor, rows: list[Row], top_k: int, background: np.ndarray | None) -> dict[str, Any]:
    """``/explain``: per-row SHAP contributions (all features and the top k) plus the base value.

    Multiclass rows are explained for their predicted class.
    """
    from mmp.explanation import shap

    pre, model = predictor.preprocessor, predictor.model
    x = finite(predictor, pre.encode_rows(rows))
    explanation = shap.explain(model, x, pre.feature_groups, background=background)
    predictions = predictor.predict_encoded(x).records()
    classes = [str(c) for c in predictor.classes]
    items = []
    for i, prediction in enumerate(predictions):
        values, base = explanation.values[i], explanation.base_values
        item: dict[str, Any] = dict(prediction)
        if explanation.output_names is not None:
            k = classes.index(prediction["prediction"])
            values, base = values[k], base[k]
            item["explained_class"] = classes[k]
        contributions = {name: float(v) for name, v in zip(explanation.feature_names, values, strict=True)}
        top = sorted(contributions.items(), key=lambda kv: -abs(kv[1]))[:top_k]
        item.update(
            base_value=float(base),
            contributions=contributions,
            top=[{"feature": name, "contribution": value} for name, value in top],
        )
        items.append(item)
    return {"explainer": explanation.explainer, "output_space": explanation.output_space, "explanations": items}
