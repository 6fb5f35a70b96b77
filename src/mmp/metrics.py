"""Evaluation metrics per task. Pure functions of labels and predictions."""

from __future__ import annotations

import math

import numpy as np

PRIMARY = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "rmse"}
# Metrics where lower is better (sweeps and `mmp runs` sort by them).
LOWER_IS_BETTER = {"log_loss", "rmse", "mae", "mape"}


def primary_metric(task: str, configured: str = "auto") -> str:
    return PRIMARY[task] if configured == "auto" else configured


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """``y_true``: class codes 0..k-1; ``proba``: (rows, k) probabilities."""
    from sklearn import metrics

    n_classes = proba.shape[1]
    predicted = proba.argmax(axis=1)
    labels = list(range(n_classes))
    result = {
        "accuracy": metrics.accuracy_score(y_true, predicted),
        "precision_macro": metrics.precision_score(y_true, predicted, average="macro", labels=labels, zero_division=0),
        "recall_macro": metrics.recall_score(y_true, predicted, average="macro", labels=labels, zero_division=0),
        "f1_macro": metrics.f1_score(y_true, predicted, average="macro", labels=labels, zero_division=0),
        "log_loss": metrics.log_loss(y_true, np.clip(proba, 1e-15, 1.0), labels=labels),
    }
    present = np.unique(y_true)
    if len(present) == n_classes:  # AUC needs every class in this split
        if n_classes == 2:
            result["roc_auc"] = metrics.roc_auc_score(y_true, proba[:, 1])
        else:
            result["roc_auc"] = metrics.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=labels)
    return {name: float(value) for name, value in result.items()}


def regression_metrics(y_true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    from sklearn import metrics

    result = {
        "rmse": math.sqrt(metrics.mean_squared_error(y_true, predicted)),
        "mae": metrics.mean_absolute_error(y_true, predicted),
        "r2": metrics.r2_score(y_true, predicted),
    }
    if not np.any(y_true == 0):  # MAPE is undefined when a true value is zero
        result["mape"] = metrics.mean_absolute_percentage_error(y_true, predicted)
    return {name: float(value) for name, value in result.items()}


def flat_metrics(by_split: dict[str, dict[str, float]]) -> dict[str, float]:
    """``{"test": {"roc_auc": .9}}`` -> ``{"test_roc_auc": .9}`` (MLflow metric names)."""
    return {f"{split}_{name}": value for split, values in by_split.items() for name, value in values.items()}
