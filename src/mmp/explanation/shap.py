"""SHAP explanations with the fastest exact explainer for each model.

Each library's adapter (:mod:`mmp.model.adapters`) computes exact contributions: XGBoost's ``pred_contribs``,
LightGBM's ``pred_contrib`` and CatBoost's ``ShapValues`` (TreeSHAP in C++, in the model's raw margin),
TreeSHAP run by XGBoost's C library for scikit-learn's forests, ``shap.TreeExplainer`` for its histogram
gradient boosting and, for linear models, ``shap.LinearExplainer``'s formula
(``coef * (x - mean)``, exact for independent features) computed without importing shap.

Values are computed per model feature, then folded back to the user's columns (one-hot groups summed),
which keeps them additive: ``base + sum(values) == raw model output``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmp.data.preprocessing import fold
from mmp.errors import ExplainError
from mmp.model.trained import TrainedModel

log = logging.getLogger(__name__)

_CHUNK = 10_000  # rows per SHAP call: large enough to amortise per-call set-up, small enough for a progress bar


@dataclass
class Explanation:
    """SHAP values of a sample, folded to the user's columns.

    ``values`` is (rows, features) for binary and regression models and (rows, classes, features) for
    multiclass ones; ``base_values`` is a scalar or one per class. Binary models are explained in their
    raw output for the positive class (log-odds for boosted and logistic models, probability for forests).
    """

    values: np.ndarray
    base_values: np.ndarray
    feature_names: list[str]
    output_names: list[str] | None  # class labels for multiclass, else None
    explainer: str
    output_space: str  # "log-odds", "probability" or "value"

    def mean_abs(self) -> dict[str, float]:
        """Mean |SHAP| per feature (averaged over classes for multiclass), largest first."""
        magnitude = np.abs(self.values)
        per_feature = magnitude.mean(axis=0) if magnitude.ndim == 2 else magnitude.mean(axis=(0, 1))
        order = np.argsort(-per_feature, kind="stable")
        return {self.feature_names[i]: float(per_feature[i]) for i in order}


def explainer_name(model: TrainedModel) -> str:
    """Which exact explainer the model's library offers; raises ExplainError when there is none."""
    return model.adapter.explainer(model)


def explain(
    model: TrainedModel,
    x: np.ndarray,
    groups: list[str],
    *,
    background: np.ndarray | None = None,
    progress: bool = False,
) -> Explanation:
    """SHAP values of the encoded rows ``x``, folded by ``groups`` (the raw column of each model feature)."""
    name = explainer_name(model)
    adapter = model.adapter
    values, base = _in_chunks(lambda rows: adapter.contributions(model, rows, background), x, progress)
    multiclass = model.task == "multiclass"
    names, folded = fold(values, groups)
    space = adapter.output_space(model)
    return Explanation(
        values=folded,
        base_values=np.asarray(base, dtype=float),
        feature_names=names,
        output_names=[str(c) for c in model.classes] if multiclass else None,
        explainer=name,
        output_space=space,
    )


def raw_output(model: TrainedModel, x: np.ndarray) -> np.ndarray:
    """The model output the SHAP values add up to: (rows,) or (rows, classes)."""
    return model.raw_output(x)


# --------------------------------------------------------------------------- explainers


def _in_chunks(compute: Any, x: np.ndarray, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    parts, base = [], None
    starts: Any = range(0, len(x), _CHUNK)
    if progress and len(starts) > 1:  # tqdm.auto is imported only for a bar (50-200 ms)
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="SHAP", unit="chunk")
    for start in starts:
        values, base = compute(x[start : start + _CHUNK])
        parts.append(values)
    return np.concatenate(parts, axis=0), np.asarray(base)


__all__ = ["ExplainError", "Explanation", "explain", "explainer_name", "raw_output"]
