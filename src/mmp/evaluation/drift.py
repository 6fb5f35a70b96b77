"""Drift: the training distribution saved with a model, and the population stability index (PSI) of new rows.

At train time :func:`fit_reference` records, per input column, fixed buckets and the share of train rows in
each: quantile edges for a numeric column (open-ended at both ends) or the most frequent categories (plus
"other" for a category never seen and "missing"), and the same for the model's prediction (the positive
class's probability, the predicted class, or the predicted value). Batch inference and the server count new
rows into the same buckets (:class:`DriftCounts`) and compare them with :func:`psi`. Counts add up, so the
server's workers can each keep a window and sum them.

Everything here is pure (numpy/polars) except :func:`write_report` and :func:`write_chart`.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mmp.model.predictor import Predictor

REFERENCE_FILE = "drift_reference.json"  # in the model folder, so that the logged pyfunc carries it
REFERENCE_VERSION = 1
PREDICTION = "prediction"  # the reference's name for the model's output
DEFAULT_BINS = 10
DEFAULT_THRESHOLD = 0.2  # PSI above 0.2: a shift worth a look (the usual rule of thumb)
DEFAULT_WINDOW = 1000  # rows in each server worker's sliding window
MAX_CATEGORIES = 30  # rarer categories share the "other" bucket
_EPS = 1e-4  # an empty bucket's share, so that the logarithm stays finite
OTHER, MISSING = "(other)", "(missing)"


# --------------------------------------------------------------------------- the reference


def numeric_spec(values: np.ndarray, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Buckets for a numeric column: interior edges at train quantiles; the ends are open."""
    finite = values[np.isfinite(values)]
    edges: list[float] = []
    if finite.size:
        quantiles = np.quantile(finite, np.arange(1, bins) / bins)
        edges = sorted({float(q) for q in quantiles})
    spec: dict[str, Any] = {"kind": "numeric", "edges": edges}
    spec["expected"] = _shares(numeric_buckets(spec, values), n_buckets(spec))
    return spec


def categorical_spec(values: Sequence[Any], max_categories: int = MAX_CATEGORIES) -> dict[str, Any]:
    """Buckets for a categorical column: its most frequent train categories, then "other" and "missing"."""
    series = pl.Series(values, dtype=pl.String, strict=False) if not isinstance(values, pl.Series) else values
    frequent = series.drop_nulls().value_counts(sort=True).head(max_categories)
    categories = sorted(str(v) for v in frequent[frequent.columns[0]].to_list())
    spec: dict[str, Any] = {"kind": "categorical", "categories": categories}
    spec["expected"] = _shares(categorical_buckets(spec, series), n_buckets(spec))
    return spec


def prediction_values(task: str, classes: Sequence[str], output: np.ndarray) -> tuple[str, Any]:
    """What drift watches of a prediction: (kind, values).

    Regression: the value; binary: the positive (last) class's probability; multiclass: the predicted class.
    """
    if task == "regression":
        return "numeric", np.asarray(output, dtype=float)
    if task == "binary":
        return "numeric", np.asarray(output[:, -1], dtype=float)
    return "categorical", [str(classes[i]) for i in np.asarray(output).argmax(axis=1)]


def fit_reference(
    frame: pl.DataFrame,
    kinds: Mapping[str, str],
    prediction: tuple[str, Any],
    bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """The training distribution: ``kinds`` maps each input column to numeric or categorical."""
    features = {name: spec_for(kind, column_values(frame[name], kind), bins) for name, kind in kinds.items()}
    kind, values = prediction
    return {
        "version": REFERENCE_VERSION,
        "rows": frame.height,
        "bins": bins,
        "features": features,
        PREDICTION: spec_for(kind, values, bins),
    }


def training_reference(
    predictor: Predictor, frame: pl.DataFrame, output: np.ndarray, bins: int = DEFAULT_BINS
) -> dict[str, Any]:
    """The reference of a model trained on ``frame`` (its raw train rows), whose output there was ``output``."""
    kinds = {column.name: column.kind for column in predictor.preprocessor.columns}
    return fit_reference(frame, kinds, prediction_values(predictor.task, predictor.classes, output), bins)


def spec_for(kind: str, values: Any, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    return numeric_spec(np.asarray(values, dtype=float), bins) if kind == "numeric" else categorical_spec(values)


def column_values(series: pl.Series, kind: str) -> Any:
    """A column as drift buckets it: floats (null -> NaN) for numeric, strings for categorical."""
    if kind == "numeric":
        return series.cast(pl.Float64, strict=False).fill_null(float("nan")).to_numpy()
    return series.cast(pl.String, strict=False)


# --------------------------------------------------------------------------- bucketing


def n_buckets(spec: Mapping[str, Any]) -> int:
    """Numeric: len(edges) + 1 ranges, then missing; categorical: categories, other, missing."""
    if spec["kind"] == "numeric":
        return len(spec["edges"]) + 2
    return len(spec["categories"]) + 2


def bucket_labels(spec: Mapping[str, Any]) -> list[str]:
    if spec["kind"] == "categorical":
        return [*spec["categories"], OTHER, MISSING]
    edges = spec["edges"]
    if not edges:
        return ["(-inf, inf)", MISSING]
    bounds = ["-inf", *(f"{e:.4g}" for e in edges), "inf"]
    ranges = [f"({lo}, {hi}]" for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    ranges[-1] = ranges[-1][:-1] + ")"  # open-ended
    return [*ranges, MISSING]


def numeric_buckets(spec: Mapping[str, Any], values: np.ndarray) -> np.ndarray:
    """Bucket of each value: i for (edge[i-1], edge[i]], the last but one for above the top edge, last for NaN."""
    values = np.asarray(values, dtype=float)
    edges = np.asarray(spec["edges"], dtype=float)
    buckets = np.searchsorted(edges, values, side="left")
    return np.where(np.isnan(values), len(edges) + 1, buckets)


def categorical_buckets(spec: Mapping[str, Any], values: pl.Series) -> np.ndarray:
    categories = spec["categories"]
    index = pl.Series(categories, dtype=pl.String)
    positions = values.cast(pl.String, strict=False).replace_strict(
        index, pl.Series(range(len(categories)), dtype=pl.Int64), default=len(categories), return_dtype=pl.Int64
    )
    return positions.fill_null(len(categories) + 1).to_numpy() if values.null_count() else positions.to_numpy()


def spec_buckets(spec: Mapping[str, Any], values: Any) -> np.ndarray:
    """The bucket of each value (numpy array or polars Series of values)."""
    if spec["kind"] == "numeric":
        return numeric_buckets(spec, np.asarray(values, dtype=float))
    series = values if isinstance(values, pl.Series) else pl.Series(values, dtype=pl.String, strict=False)
    return categorical_buckets(spec, series)


def bucket_counts(spec: Mapping[str, Any], values: Any) -> np.ndarray:
    """How many values fall in each of the spec's buckets (numpy array or polars Series of values)."""
    return np.bincount(spec_buckets(spec, values), minlength=n_buckets(spec)).astype(np.int64)


def value_bucket(spec: Mapping[str, Any], value: Any) -> int:
    """The bucket of one raw value (a request's row): the same answer as the vectorised functions."""
    if spec["kind"] == "numeric":
        edges = spec["edges"]
        try:
            number = float(value)
        except (TypeError, ValueError):
            return len(edges) + 1
        return len(edges) + 1 if math.isnan(number) else bisect.bisect_left(edges, number)
    categories = spec["categories"]
    if value is None:
        return len(categories) + 1
    position = _category_index(spec).get(str(value).lower() if isinstance(value, bool) else str(value))
    return len(categories) if position is None else position


def _category_index(spec: Mapping[str, Any]) -> dict[str, int]:
    index = spec.get("_index")
    if index is None:
        index = {category: i for i, category in enumerate(spec["categories"])}
        spec["_index"] = index  # type: ignore[index]  # cached on the loaded spec
    return index


# --------------------------------------------------------------------------- comparing


def psi(expected: Sequence[float], counts: Sequence[float]) -> float | None:
    """Population stability index of ``counts`` against the ``expected`` shares; None with no rows."""
    total = float(np.sum(counts))
    if total <= 0:
        return None
    actual = np.maximum(np.asarray(counts, dtype=float) / total, _EPS)
    base = np.maximum(np.asarray(expected, dtype=float), _EPS)
    return float(np.sum((actual - base) * np.log(actual / base)))


class DriftCounts:
    """Bucket counts of new rows for every input column and the prediction, against a reference."""

    def __init__(self, reference: Mapping[str, Any]) -> None:
        self.reference = reference
        self.specs: dict[str, Mapping[str, Any]] = {**reference["features"], PREDICTION: reference[PREDICTION]}
        self.counts = {name: np.zeros(n_buckets(spec), dtype=np.int64) for name, spec in self.specs.items()}

    def add_frame(self, frame: pl.DataFrame, prediction: Any) -> None:
        """A chunk of raw rows and the prediction's values (:func:`prediction_values`)."""
        for name, spec in reference_features(self.reference).items():
            if name in frame.columns:
                self.counts[name] += bucket_counts(spec, column_values(frame[name], spec["kind"]))
        self.counts[PREDICTION] += bucket_counts(self.specs[PREDICTION], prediction)

    def report(self, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
        return drift_report(self.reference, self.counts, threshold)


def reference_features(reference: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return dict(reference["features"])


def drift_report(
    reference: Mapping[str, Any], counts: Mapping[str, Sequence[float]], threshold: float = DEFAULT_THRESHOLD
) -> dict[str, Any]:
    """Per column and for the prediction: PSI, whether it is above ``threshold``, and the buckets' shares."""
    specs = {**reference["features"], PREDICTION: reference[PREDICTION]}
    columns = {}
    for name, spec in specs.items():
        observed = np.asarray(counts.get(name, np.zeros(n_buckets(spec))), dtype=float)
        value = psi(spec["expected"], observed)
        total = float(observed.sum())
        columns[name] = {
            "kind": spec["kind"],
            "psi": None if value is None else round(value, 6),
            "drifted": value is not None and value > threshold,
            "rows": int(total),
            "buckets": [
                {
                    "bucket": label,
                    "expected": round(float(e), 6),
                    "observed": round(float(o) / total, 6) if total else None,
                }
                for label, e, o in zip(bucket_labels(spec), spec["expected"], observed, strict=True)
            ],
        }
    drifted = [name for name, column in columns.items() if column["drifted"]]
    return {
        "threshold": threshold,
        "rows": int(max((c["rows"] for c in columns.values()), default=0)),
        "drifted": drifted,
        "columns": columns,
    }


def psi_by_column(report: Mapping[str, Any]) -> dict[str, float]:
    """``{column: psi}`` for the columns that had rows (what is logged as metrics)."""
    return {name: column["psi"] for name, column in report["columns"].items() if column["psi"] is not None}


def _shares(buckets: np.ndarray, size: int) -> list[float]:
    counts = np.bincount(buckets, minlength=size).astype(float)
    total = counts.sum()
    return (counts / total).tolist() if total else [0.0] * size


# --------------------------------------------------------------------------- files


def save_reference(folder: Path, reference: Mapping[str, Any]) -> Path:
    path = folder / REFERENCE_FILE
    path.write_text(json.dumps(reference, indent=1) + "\n", encoding="utf-8")
    return path


def load_reference(folder: Path) -> dict[str, Any] | None:
    """The reference saved with a model, or None for a model trained before drift was recorded."""
    path = folder / REFERENCE_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def write_chart(report: Mapping[str, Any], path: Path) -> None:
    """A horizontal bar chart of PSI per column, the threshold as a dashed line, drifted bars in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [(name, column["psi"] or 0.0) for name, column in report["columns"].items()]
    threshold = report["threshold"]
    figure, axes = plt.subplots(figsize=(7, 0.35 * len(items) + 1.5))
    names = [name for name, _ in items]
    values = [value for _, value in items]
    axes.barh(names, values, color=["#c0392b" if v > threshold else "#2e86c1" for v in values])
    axes.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    axes.invert_yaxis()
    axes.set_xlabel("PSI (population stability index) against the training data")
    axes.set_title(f"Drift of {report['rows']} rows")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
