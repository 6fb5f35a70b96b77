"""SHAP explanations with the fastest exact explainer for each model.

- XGBoost and LightGBM: the libraries' own contributions (``pred_contribs`` / ``pred_contrib``),
  exact TreeSHAP in C++, in the model's raw (margin) space.
- scikit-learn forests and histogram gradient boosting: ``shap.TreeExplainer``.
- Linear models: ``shap.LinearExplainer`` on a background sample of the train split.

Values are computed per model feature, then folded back to the user's columns (one-hot groups summed),
which keeps them additive: ``base + sum(values) == raw model output``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmp.data.preprocessing import fold
from mmp.errors import MmpError
from mmp.model.registry import TrainedModel

log = logging.getLogger(__name__)

_TREE_FAMILIES = {"random_forest", "extra_trees", "hist_gradient_boosting"}
_LINEAR_FAMILIES = {"linear", "logistic_regression", "ridge", "linear_regression"}
_CHUNK = 10_000  # rows per SHAP call: large enough to amortise per-call set-up, small enough for a progress bar


class ExplainError(MmpError):
    """The model cannot be explained exactly."""


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
    """Which explainer mmp uses for the model; raises ExplainError when none is exact."""
    family = model.family.name
    if family == "xgboost":
        return "xgboost.pred_contribs"
    if family == "lightgbm":
        return "lightgbm.pred_contrib"
    if family in _TREE_FAMILIES:
        if getattr(model.estimator, "is_categorical_", None) is not None and model.estimator.is_categorical_.any():
            raise ExplainError(
                "shap's TreeExplainer cannot explain HistGradientBoosting's native categorical splits exactly; "
                "set recipe.preprocessing.categorical_encoding=ordinal"
            )
        return "shap.TreeExplainer"
    if family in _LINEAR_FAMILIES:
        return "shap.LinearExplainer"
    raise ExplainError(
        f"No exact SHAP explainer for {model.class_path.replace(':', '.')}; use a tree or linear model "
        "(xgboost, lightgbm, random_forest, extra_trees, hist_gradient_boosting, linear), "
        "or stop before explain with `dvc repro train`"
    )


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
    compute = {
        "xgboost.pred_contribs": _xgboost_contributions,
        "lightgbm.pred_contrib": _lightgbm_contributions,
        "shap.TreeExplainer": _tree_explainer,
        "shap.LinearExplainer": _linear_explainer,
    }[name]
    values, base = _in_chunks(lambda rows: compute(model, rows, background), x, progress)
    multiclass = model.task == "multiclass"
    names, folded = fold(values, groups)
    space = "value" if model.task == "regression" else "log-odds"
    if name == "shap.TreeExplainer" and model.task != "regression" and model.family.name != "hist_gradient_boosting":
        space = "probability"
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
    estimator = model.estimator
    family = model.family.name
    if family == "xgboost":
        return np.asarray(estimator.predict(x, output_margin=True))
    if family == "lightgbm":
        return np.asarray(_lightgbm_booster(model).predict(x, raw_score=True))
    if family in _LINEAR_FAMILIES:
        if model.task == "regression":
            return np.asarray(estimator.predict(x))
        return np.asarray(estimator.decision_function(x))
    if family == "hist_gradient_boosting":
        if model.task == "regression":
            return np.asarray(estimator.predict(x))
        return np.asarray(estimator.decision_function(x))
    if model.task == "regression":
        return np.asarray(estimator.predict(x))
    proba = np.asarray(estimator.predict_proba(x))
    return proba[:, 1] if model.task == "binary" else proba


# --------------------------------------------------------------------------- explainers


def _in_chunks(compute: Any, x: np.ndarray, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    from tqdm.auto import tqdm

    parts, base = [], None
    starts = range(0, len(x), _CHUNK)
    for start in tqdm(starts, desc="SHAP", unit="chunk", disable=not progress or len(starts) < 2):
        values, base = compute(x[start : start + _CHUNK])
        parts.append(values)
    return np.concatenate(parts, axis=0), np.asarray(base)


def _split_bias(contributions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Library contributions end with the bias column; it is the same for every row."""
    values = contributions[..., :-1]
    base = contributions[0, ..., -1]
    return values, base


def _xgboost_contributions(model: TrainedModel, x: np.ndarray, _background: Any) -> tuple[np.ndarray, np.ndarray]:
    import xgboost

    estimator = model.estimator
    booster = estimator.get_booster()
    matrix = xgboost.DMatrix(x, feature_types=booster.feature_types, enable_categorical=True, nthread=estimator.n_jobs)
    best = getattr(estimator, "best_iteration", None)
    iteration_range = (0, best + 1) if best is not None else (0, 0)
    contributions = booster.predict(matrix, pred_contribs=True, iteration_range=iteration_range)
    return _split_bias(contributions)  # (rows, f+1) or (rows, classes, f+1)


def _lightgbm_booster(model: TrainedModel) -> Any:
    estimator = model.estimator
    return estimator.booster_ if hasattr(estimator, "booster_") else estimator.booster


def _lightgbm_contributions(model: TrainedModel, x: np.ndarray, _background: Any) -> tuple[np.ndarray, np.ndarray]:
    booster = _lightgbm_booster(model)
    contributions = np.asarray(booster.predict(x, pred_contrib=True))
    if model.task == "multiclass":
        n_classes = len(model.classes)
        contributions = contributions.reshape(len(x), n_classes, -1)
    return _split_bias(contributions)


def _tree_explainer(model: TrainedModel, x: np.ndarray, _background: Any) -> tuple[np.ndarray, np.ndarray]:
    import shap

    explainer = _cached(model, "tree", lambda: shap.TreeExplainer(model.estimator))
    values = np.asarray(explainer.shap_values(x, check_additivity=False))
    base = np.atleast_1d(np.asarray(explainer.expected_value, dtype=float))
    if values.ndim == 3:  # forests: (rows, features, classes)
        values = np.moveaxis(values, 2, 1)
        if model.task == "binary":
            return values[:, 1, :], base[1]
        return values, base
    return values, base[0] if base.size == 1 else base


def _linear_explainer(model: TrainedModel, x: np.ndarray, background: Any) -> tuple[np.ndarray, np.ndarray]:
    import shap

    if background is None:
        raise ExplainError("A linear model needs a background sample (the train split) to be explained")
    explainer = _cached(
        model, "linear", lambda: shap.LinearExplainer(model.estimator, shap.maskers.Independent(background, 1000))
    )
    values = np.asarray(explainer.shap_values(x))
    base = np.atleast_1d(np.asarray(explainer.expected_value, dtype=float))
    if values.ndim == 3:  # multinomial: (rows, features, classes)
        return np.moveaxis(values, 2, 1), base
    return values, base[0] if base.size == 1 else base


def _cached(model: TrainedModel, key: str, build: Any) -> Any:
    """Build an explainer once per model (serving explains many small requests)."""
    cache = model.__dict__.setdefault("_explainers", {})
    if key not in cache:
        cache[key] = build()
    return cache[key]
