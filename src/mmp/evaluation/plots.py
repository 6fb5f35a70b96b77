"""Evaluation plots of a trained model on the test split: DVC plot data files and PNG images.

Pure functions of labels, predictions, importances and training history; no MLflow and no config.
File names are fixed (:data:`PLOT_FILES`) so that dvc.yaml can declare them. Figures are drawn on
``matplotlib.figure.Figure`` objects, which render with Agg and never touch pyplot's global state,
so neither the caller's backend nor its figure registry is changed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from mmp.evaluation.metrics import ranked_counts

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from mmp.model.trained import TrainedModel

TASKS = ("binary", "multiclass", "regression")
CURVE_POINTS = 500  # points kept per ROC / precision-recall curve
SAMPLE_ROWS = 5_000  # rows kept in the regression CSVs and scatter plots
SAMPLE_SEED = 0
TOP_FEATURES = 20  # bars in the importance PNG (the JSON keeps every feature)
MAX_LEGEND = 10  # per-class curves beyond this are drawn without legend entries
FIGSIZE = (6.0, 4.5)
DPI = 100

CLASSIFICATION_FILES = (
    "confusion_matrix.csv",
    "confusion_matrix.png",
    "roc_curve.json",
    "roc_curve.png",
    "precision_recall.json",
    "precision_recall.png",
)
REGRESSION_FILES = ("predictions.csv", "predicted_vs_actual.png", "residuals.csv", "residuals.png")
IMPORTANCE_FILES = ("feature_importance.json", "feature_importance.png")
LEARNING_CURVE_FILES = ("learning_curve.csv", "learning_curve.png")
PLOT_FILES = CLASSIFICATION_FILES + REGRESSION_FILES + IMPORTANCE_FILES + LEARNING_CURVE_FILES


def write_evaluation_plots(
    out_dir: Path,
    *,
    task: str,
    classes: list[str] | None,
    y_true: np.ndarray,
    proba: np.ndarray | None,
    predicted: np.ndarray | None,
    feature_names: list[str],
    importances: np.ndarray | None,
    history: dict[str, list[float]],
    history_metric: str,
    threshold: float | None = None,
) -> list[Path]:
    """Write the plots that apply to this model into ``out_dir``; return every file written.

    Classification needs ``classes`` and ``proba`` (``y_true`` holds class codes); regression needs
    ``predicted``. Importances and the learning curve are written when given. Files are drawn in a
    scratch folder and moved in only when all succeeded; plot files of :data:`PLOT_FILES` left in
    ``out_dir`` by an earlier model that do not apply to this one are removed, so the folder never
    mixes two models' plots.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        if task == "regression":
            if predicted is None:
                raise ValueError("regression plots need `predicted`")
            _regression_plots(scratch, np.asarray(y_true), np.asarray(predicted))
        else:
            if classes is None or proba is None:
                raise ValueError(f"{task} plots need `classes` and `proba`")
            _classification_plots(scratch, [str(c) for c in classes], np.asarray(y_true), np.asarray(proba), threshold)
        if importances is not None:
            _importance_plot(scratch, list(feature_names), np.asarray(importances))
        if any(len(values) for values in history.values()):
            _learning_curve(scratch, history, history_metric)
        return _publish(scratch, out_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _publish(scratch: Path, out_dir: Path) -> list[Path]:
    written = []
    for name in PLOT_FILES:
        target = out_dir / name
        if (scratch / name).is_file():
            os.replace(scratch / name, target)
            written.append(target)
        else:
            target.unlink(missing_ok=True)
    return written


# --------------------------------------------------------------------------- importances


def feature_importances(model: TrainedModel, n_features: int) -> np.ndarray | None:
    """One importance per model feature, as the model's library defines it (its adapter), or None."""
    values = model.importances()
    if values is None:
        return None
    values = np.asarray(values, dtype=float).ravel()
    if values.size != n_features:
        raise ValueError(f"{model.class_name} gives {values.size} importances for {n_features} features")
    return values


def fold_importances(values: np.ndarray, groups: list[str]) -> tuple[list[str], np.ndarray]:
    """Sum the importances of model features that come from one raw column (e.g. one-hot levels).

    ``groups`` names, per model feature, its raw column (``Preprocessor.feature_groups``); columns keep
    the order of their first feature.
    """
    values = np.asarray(values, dtype=float).ravel()
    if values.size != len(groups):
        raise ValueError(f"{values.size} importances for {len(groups)} feature groups")
    from mmp.data.preprocessing import fold

    return fold(values, groups)


def _importance_plot(folder: Path, names: list[str], importances: np.ndarray) -> None:
    values = np.nan_to_num(importances.astype(float).ravel())  # a NaN would make the JSON invalid
    if values.size != len(names):
        raise ValueError(f"{values.size} importances for {len(names)} feature names")
    order = np.argsort(-values, kind="stable")
    records = [{"feature": names[i], "importance": _number(values[i])} for i in order]
    _write_records(folder / "feature_importance.json", "importance", records)

    top = order[:TOP_FEATURES][::-1]  # barh draws bottom-up: largest on top
    shown = f"top {len(top)} of {len(names)}" if len(names) > len(top) else f"{len(names)} features"
    fig, ax = _figure(f"Feature importance ({shown})", "importance", "")
    ax.barh(np.arange(len(top)), values[top], color="tab:blue")
    ax.set_yticks(np.arange(len(top)), [short_label(names[i]) for i in top], fontsize=8)
    save_png(fig, folder / "feature_importance.png")


# --------------------------------------------------------------------------- classification


@dataclass
class _Curve:
    """A ROC or precision-recall curve, thinned to at most CURVE_POINTS points."""

    x: np.ndarray
    y: np.ndarray
    thresholds: np.ndarray  # NaN where no threshold gives the point
    area: float  # ROC AUC, or average precision


def _classification_plots(
    folder: Path, classes: list[str], y_true: np.ndarray, proba: np.ndarray, threshold: float | None = None
) -> None:
    codes = y_true.astype(int).ravel()
    proba = proba.astype(float)
    k = len(classes)
    if proba.ndim != 2 or proba.shape != (codes.size, k):
        raise ValueError(f"proba must have shape ({codes.size}, {k}), got {proba.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= k):
        raise ValueError(f"y_true must hold class codes 0..{k - 1}")
    # A binary model's decision threshold (recipe.threshold) decides, as it does for every prediction.
    predicted = (proba[:, 1] > threshold).astype(int) if threshold is not None and k == 2 else proba.argmax(axis=1)
    _confusion(folder, classes, codes, predicted)

    binary = k == 2
    if binary:
        truth, scores = codes == 1, proba[:, 1]
    else:  # micro-average: every (row, class) pair is one one-vs-rest decision
        truth, scores = (codes[:, None] == np.arange(k)).ravel(), proba.ravel()
    roc, prc = _curves(truth, scores)
    _write_records(folder / "roc_curve.json", "roc", _records(roc, ("fpr", "tpr")))
    _write_records(folder / "precision_recall.json", "prc", _records(prc, ("recall", "precision")))

    per_class: list[tuple[str, _Curve | None, _Curve | None]] = []
    if binary:
        per_class.append((classes[1], roc, prc))
    else:
        for c, label in enumerate(classes):
            per_class.append((label, *_curves(codes == c, proba[:, c])))
    positive = f" (positive class: {short_label(classes[1])})" if binary else ""
    _curve_png(
        folder / "roc_curve.png",
        f"ROC curve, test{positive}",
        "false positive rate",
        "true positive rate",
        [(label, r) for label, r, _ in per_class],
        None if binary else roc,
        "AUC",
        diagonal=True,
    )
    _curve_png(
        folder / "precision_recall.png",
        f"Precision-recall curve, test{positive}",
        "recall",
        "precision",
        [(label, p) for label, _, p in per_class],
        None if binary else prc,
        "AP",
        diagonal=False,
    )


def _confusion(folder: Path, classes: list[str], codes: np.ndarray, predicted: np.ndarray) -> None:
    # One row per test row, as DVC's confusion template counts the pairs itself.
    labels = pl.Series(classes, dtype=pl.String)
    pl.DataFrame({"actual": labels.gather(codes), "predicted": labels.gather(predicted)}).write_csv(
        folder / "confusion_matrix.csv"
    )

    k = len(classes)
    counts = np.bincount(codes * k + predicted, minlength=k * k).reshape(k, k)
    fig, ax = _figure(f"Confusion matrix, test ({codes.size:,} rows)", "predicted", "actual")
    image = ax.imshow(counts, cmap="Blues", aspect="auto")
    fig.colorbar(image, ax=ax, label="rows")
    names = [short_label(c, 20) for c in classes]
    ax.set_xticks(np.arange(k), names, rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center", fontsize=8)
    ax.set_yticks(np.arange(k), names, fontsize=8)
    if k <= 15:
        dark = counts.max() / 2 if counts.size else 0
        for (row, column), count in np.ndenumerate(counts):
            color = "white" if count > dark else "black"
            ax.text(column, row, f"{count:,}", ha="center", va="center", color=color, fontsize=8)
    save_png(fig, folder / "confusion_matrix.png")


def _curves(truth: np.ndarray, scores: np.ndarray) -> tuple[_Curve | None, _Curve | None]:
    """The ROC and precision-recall curves of boolean ``truth`` against ``scores``, thinned.

    ROC is None when the split lacks positives or negatives, precision-recall when it lacks positives:
    the curves are then undefined. The counts are scikit-learn's, computed here from one sort for both
    curves: its input checks cost more than the sort on a large test split, and a micro-average has
    rows x classes scores. The first point of each curve lies above every score and has no threshold.
    """
    if not truth.any():
        return None, None
    true_pos, false_pos, distinct = ranked_counts(truth, scores)
    thresholds = np.r_[np.nan, distinct]
    recall = np.r_[0.0, true_pos / true_pos[-1]]
    precision = np.r_[1.0, true_pos / (true_pos + false_pos)]
    average_precision = float(np.sum(np.diff(recall) * precision[1:]))
    keep = _thin(recall.size)
    prc = _Curve(recall[keep], precision[keep], thresholds[keep], average_precision)
    if truth.all():
        return None, prc
    fpr = np.r_[0.0, false_pos / false_pos[-1]]
    roc = _Curve(fpr[keep], recall[keep], thresholds[keep], float(np.trapezoid(recall, fpr)))
    return roc, prc


def _records(curve: _Curve | None, names: tuple[str, str]) -> list[dict[str, float | None]]:
    """DVC plot records; empty when the curve is undefined on this split."""
    if curve is None:
        return []
    x_name, y_name = names
    return [
        {x_name: _number(x), y_name: _number(y), "threshold": _number(t)}
        for x, y, t in zip(curve.x, curve.y, curve.thresholds, strict=True)
    ]


def _curve_png(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    curves: list[tuple[str, _Curve | None]],
    micro: _Curve | None,
    area_name: str,
    *,
    diagonal: bool,
) -> None:
    fig, ax = _figure(title, xlabel, ylabel)
    if diagonal:
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    drawn = 0
    for index, (label, curve) in enumerate(curves):
        if curve is None:
            continue
        legend = f"{short_label(label, 20)} ({area_name} {curve.area:.3f})" if index < MAX_LEGEND else None
        ax.plot(curve.x, curve.y, linewidth=1.5 if len(curves) == 1 else 1, label=legend)
        drawn += 1
    if micro is not None:
        label = f"micro-average ({area_name} {micro.area:.3f})"
        ax.plot(micro.x, micro.y, color="black", linestyle="--", linewidth=1.5, label=label)
        drawn += 1
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    if drawn == 0:
        ax.text(0.5, 0.5, "undefined: the test split lacks one of the classes", ha="center", va="center", fontsize=9)
    else:
        ax.legend(loc="lower right" if diagonal else "lower left", fontsize=7)
    save_png(fig, path)


# --------------------------------------------------------------------------- regression


def _regression_plots(folder: Path, y_true: np.ndarray, predicted: np.ndarray) -> None:
    actual = y_true.astype(float).ravel()
    predicted = predicted.astype(float).ravel()
    if actual.size != predicted.size:
        raise ValueError(f"y_true has {actual.size} rows but predicted has {predicted.size}")
    rows = _sample(actual.size)
    actual, predicted = actual[rows], predicted[rows]
    residual = actual - predicted
    pl.DataFrame({"actual": actual, "predicted": predicted}).write_csv(folder / "predictions.csv")
    pl.DataFrame({"predicted": predicted, "residual": residual}).write_csv(folder / "residuals.csv")

    shown = f"{rows.size:,} of {y_true.size:,} rows" if rows.size < y_true.size else f"{rows.size:,} rows"
    style = {"s": 8, "alpha": 0.6 if rows.size < 1000 else 0.3, "linewidths": 0}
    fig, ax = _figure(f"Predicted vs actual, test ({shown})", "actual", "predicted")
    ax.scatter(actual, predicted, **style)
    finite = np.concatenate([actual, predicted])
    finite = finite[np.isfinite(finite)]
    if finite.size:
        low, high = float(finite.min()), float(finite.max())
        ax.plot([low, high], [low, high], color="black", linestyle="--", linewidth=1, label="y = x")
        ax.legend(loc="upper left", fontsize=7)
    save_png(fig, folder / "predicted_vs_actual.png")

    fig, ax = _figure(f"Residuals, test ({shown})", "predicted", "residual (actual - predicted)")
    ax.scatter(predicted, residual, **style)
    ax.axhline(0.0, color="black", linestyle="--", linewidth=1)
    save_png(fig, folder / "residuals.png")


def _sample(n: int) -> np.ndarray:
    """Row indices, at most SAMPLE_ROWS, the same for the same n, in their original order."""
    if n <= SAMPLE_ROWS:
        return np.arange(n)
    return np.sort(np.random.default_rng(SAMPLE_SEED).choice(n, size=SAMPLE_ROWS, replace=False))


# --------------------------------------------------------------------------- learning curve


def _learning_curve(folder: Path, history: dict[str, list[float]], metric: str) -> None:
    splits = [s for s in ("train", "valid") if len(history.get(s, ()))]
    splits += [s for s, values in history.items() if s not in splits and len(values)]
    steps = max(len(history[s]) for s in splits)
    columns: dict[str, list[float | None]] = {"step": list(range(steps))}
    for split in splits:
        values = [float(v) for v in history[split]]
        columns[split] = values + [None] * (steps - len(values))  # splits should match; pad if not
    schema = {"step": pl.Int64, **dict.fromkeys(splits, pl.Float64)}
    pl.DataFrame(columns, schema=schema).write_csv(folder / "learning_curve.csv")

    fig, ax = _figure(f"Learning curve ({metric})", "iteration", metric)
    for split in splits:
        ax.plot(np.arange(len(history[split])), np.asarray(history[split], dtype=float), label=split)
    ax.legend(fontsize=7)
    save_png(fig, folder / "learning_curve.png")


# --------------------------------------------------------------------------- helpers


def _figure(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig, ax


def save_png(fig: Figure, path: Path) -> None:
    """Write one chart (the SHAP charts use it too), its margins sized from its tick labels' lengths.

    ``tight_layout`` measures the text by drawing the figure an extra time: a third of a chart's cost.
    """
    _fit_margins(fig)
    fig.savefig(path, format="png")
    fig.clear()  # free the artists now: a Figure outside pyplot needs no plt.close


_CHAR_INCHES = 0.075  # an average character of a 10-point tick label
_LABEL_INCHES = 0.5  # an axis label, its padding and the ticks


def _fit_margins(fig: Figure) -> None:
    width, height = fig.get_size_inches()
    ax = fig.axes[0]
    y_chars = max((len(label.get_text()) for label in ax.get_yticklabels()), default=0)
    x_labels = ax.get_xticklabels()
    rotated = max((abs(np.sin(np.radians(label.get_rotation()))) for label in x_labels), default=0.0)
    x_chars = max((len(label.get_text()) for label in x_labels), default=0) * rotated
    fig.subplots_adjust(
        left=min(0.6, (_LABEL_INCHES + _CHAR_INCHES * max(y_chars, 4)) / width),
        bottom=min(0.6, (_LABEL_INCHES + 0.1 + _CHAR_INCHES * max(x_chars, 1.5)) / height),
        right=1 - 0.25 / width,
        top=1 - 0.35 / height,
    )


def _thin(n: int, limit: int = CURVE_POINTS) -> np.ndarray:
    """At most ``limit`` evenly spaced indices into ``n`` points, keeping the first and the last."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def _number(value: float) -> float | None:
    """A JSON-safe number with 6 significant digits; None for NaN and infinities."""
    value = float(value)
    return float(f"{value:.6g}") if np.isfinite(value) else None


def short_label(text: str, width: int = 40) -> str:
    """Cut in the middle: long labels often differ only at the end (``town=north``, ``town=south``)."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return f"{text[:head]}…{text[head + 1 - width :]}"


def _write_records(path: Path, key: str, records: list[dict[str, Any]]) -> None:
    """``{key: [record, ...]}``, one record a line: DVC finds the list, and diffs stay readable."""
    lines = ",\n".join(f"  {json.dumps(record, allow_nan=False)}" for record in records)
    path.write_text(f'{{"{key}": [\n{lines}\n]}}\n' if records else f'{{"{key}": []}}\n', encoding="utf-8")
