"""How well probabilities are calibrated (Brier score, expected calibration error, reliability diagram), and a
binary model's decision threshold chosen on held-out predictions. Pure functions, plus the plot writers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmp.evaluation.metrics import ranked_counts

RELIABILITY_FILES = ("reliability.csv", "reliability.png")
THRESHOLD_METRICS = ("f1", "cost")


def brier(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean squared distance between the probabilities and the one-hot truth; binary: of the positive class."""
    codes = np.asarray(y, dtype=np.int64)
    if proba.shape[1] == 2:
        return float(np.mean((proba[:, 1] - codes) ** 2))
    onehot = np.eye(proba.shape[1])[codes]
    return float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))


def _confidence(y: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(predicted probability, outcome) pairs: the positive class (binary), the top class (multiclass)."""
    codes = np.asarray(y, dtype=np.int64)
    if proba.shape[1] == 2:
        return proba[:, 1], (codes == 1).astype(float)
    return proba.max(axis=1), (proba.argmax(axis=1) == codes).astype(float)


def reliability(y: np.ndarray, proba: np.ndarray, bins: int) -> list[dict[str, float]]:
    """Per non-empty equal-width bin of predicted probability: its centre, mean prediction, observed rate, rows."""
    predicted, outcome = _confidence(y, proba)
    index = np.minimum((predicted * bins).astype(np.int64), bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        if inside.any():
            rows.append(
                {
                    "bin": (b + 0.5) / bins,
                    "predicted": float(predicted[inside].mean()),
                    "observed": float(outcome[inside].mean()),
                    "rows": int(inside.sum()),
                }
            )
    return rows


def ece(y: np.ndarray, proba: np.ndarray, bins: int) -> float:
    """Expected calibration error: the row-weighted mean gap between prediction and outcome over ``bins`` bins."""
    table = reliability(y, proba, bins)
    total = sum(row["rows"] for row in table)
    return float(sum(row["rows"] * abs(row["predicted"] - row["observed"]) for row in table) / total)


def choose_threshold(
    y: np.ndarray, positive: np.ndarray, metric: str = "f1", costs: dict[str, float] | None = None
) -> tuple[float, float]:
    """The threshold on the positive class's probability that maximises F1 (or minimises the mean cost of
    false positives and false negatives), and that score (F1, or the cost per row).

    Predicting positive for every probability above a distinct score: the threshold returned lies midway
    between that score and the next lower one, so small changes in a probability do not flip the decision.
    """
    truth = np.asarray(y, dtype=np.int64) == 1
    scores = np.asarray(positive, dtype=float)
    true_pos, false_pos, ranked = ranked_counts(truth, scores)  # predicting positive for scores >= ranked[i]
    positives = truth.sum()
    if metric == "f1":
        value = 2 * true_pos / np.maximum(positives + true_pos + false_pos, 1)
        best = int(np.argmax(value))
        score = float(value[best])
    else:
        costs = costs or {}
        cost = costs.get("false_positive", 1.0) * false_pos + costs.get("false_negative", 1.0) * (positives - true_pos)
        # Predicting no positive at all is a candidate too.
        none_cost = costs.get("false_negative", 1.0) * positives
        if none_cost < cost.min():
            return 1.0, float(none_cost / truth.size)
        best = int(np.argmin(cost))
        score = float(cost[best] / truth.size)
    lower = ranked[best + 1] if best + 1 < ranked.size else 0.0
    return float((ranked[best] + lower) / 2), score


def write_reliability_plot(
    folder: Path, y: np.ndarray, before: np.ndarray, after: np.ndarray, bins: int, split: str = "test"
) -> list[Path]:
    """``reliability.csv`` (a DVC plot: observed rate by bin, uncalibrated and calibrated) and ``reliability.png``."""
    import polars as pl

    from mmp.evaluation.plots import _figure, save_png

    folder.mkdir(parents=True, exist_ok=True)
    tables = {"uncalibrated": reliability(y, before, bins), "calibrated": reliability(y, after, bins)}
    by_bin: dict[float, dict[str, Any]] = {}
    for name, table in tables.items():
        for row in table:
            by_bin.setdefault(row["bin"], {"bin": row["bin"]})[name] = row["observed"]
    records = [r for _, r in sorted(by_bin.items()) if "uncalibrated" in r and "calibrated" in r]
    csv = folder / RELIABILITY_FILES[0]
    pl.DataFrame(records, schema={"bin": pl.Float64, "uncalibrated": pl.Float64, "calibrated": pl.Float64}).write_csv(
        csv
    )
    what = "positive class" if before.shape[1] == 2 else "top class"
    fig, ax = _figure(f"Reliability ({split}, {bins} bins)", f"predicted probability ({what})", "observed rate")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    for name, table in tables.items():
        ece_value = ece(y, before if name == "uncalibrated" else after, bins)
        ax.plot(
            [r["predicted"] for r in table],
            [r["observed"] for r in table],
            marker="o",
            label=f"{name} (ECE {ece_value:.3f})",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper left")
    png = folder / RELIABILITY_FILES[1]
    save_png(fig, png)
    return [csv, png]
