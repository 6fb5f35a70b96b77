"""CatBoost: native categoricals (category codes become CatBoost's categorical features), missing values,
early stopping, and exact SHAP values from ``get_feature_importance(type="ShapValues")``."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmp.model.adapters.base import (
    FRACTION,
    NON_NEGATIVE,
    PARAM_RANGES,
    Adapter,
    Range,
    class_path,
    invalid_params,
    load_class,
    split_bias,
    sum_to_one,
    weight_param,
)
from mmp.model.spec import FitData, FitResult, ModelSpec, OnIteration

if TYPE_CHECKING:
    from mmp.model.trained import TrainedModel

_MISSING_CODE = -1  # CatBoost's categorical features are integers or text, never NaN


class CatBoostAdapter(Adapter):
    key = "catboost"
    requirements = ("catboost",)
    early_stopping = True
    rounds_params = ("iterations", "n_estimators", "num_boost_round", "num_trees")
    param_ranges = {
        **PARAM_RANGES,
        "depth": Range(1, 16),
        "max_depth": Range(1, 16),
        "border_count": Range(1, 65535),
        "rsm": FRACTION,
        "bagging_temperature": NON_NEGATIVE,
        "random_strength": NON_NEGATIVE,
    }

    def known_params(self, spec: ModelSpec, task: str) -> dict[str, Any]:
        # CatBoost's get_params() lists only what was set; its constructor names every parameter.
        parameters = inspect.signature(load_class(class_path(spec, task)).__init__).parameters
        return {name: p.default for name, p in parameters.items() if name != "self"}

    def add_defaults(self, resolved: dict[str, Any], known: dict[str, Any], seed: int) -> None:
        if not {"random_seed", "random_state"} & set(resolved):
            resolved["random_seed"] = seed
        resolved.setdefault("verbose", False)
        resolved["allow_writing_files"] = False  # else it writes catboost_info/ into the working directory

    def fit(
        self, spec: ModelSpec, task: str, params: dict[str, Any], data: FitData, on_iteration: OnIteration | None
    ) -> FitResult:
        kwargs = dict(params)
        if data.class_weights is not None:  # CatBoost's own parameter: one weight per class code
            kwargs = weight_param(kwargs, "class_weights", data.class_weights, "auto_class_weights", "scale_pos_weight")
        if data.early_stopping_rounds:
            kwargs["early_stopping_rounds"] = data.early_stopping_rounds
        if on_iteration:
            kwargs["callbacks"] = [_Reporter(on_iteration)]
        cats = data.categorical_indices
        estimator = load_class(class_path(spec, task))(**kwargs)
        try:
            estimator.fit(
                _pool(data.x_train, cats, data.y_train),
                eval_set=_pool(data.x_valid, cats, data.y_valid),
                use_best_model=bool(data.early_stopping_rounds),
            )
        except Exception as exc:
            if (error := invalid_params(exc)) is not None:
                raise error from None
            raise
        raw = estimator.get_evals_result()
        names = {"learn": "train", "validation": "valid"}
        history = {names.get(k, k): list(next(iter(v.values()))) for k, v in raw.items() if v}
        best = estimator.get_best_iteration() if data.early_stopping_rounds else None
        return FitResult(estimator, best, history)

    def output(self, model: TrainedModel, x: np.ndarray) -> np.ndarray:
        pool = _pool(x, _categoricals(model.estimator))
        threads = getattr(model, "_threads", 0) or -1  # -1: every core
        if model.task == "regression":
            return np.asarray(model.estimator.predict(pool, thread_count=threads), dtype=float)
        return np.asarray(model.estimator.predict_proba(pool, thread_count=threads))

    def set_threads(self, estimator: Any, threads: int) -> None:
        """A fitted CatBoost model refuses new parameters: :meth:`output` passes the model's limit per call."""

    def importances(self, estimator: Any) -> np.ndarray | None:
        return sum_to_one(estimator.get_feature_importance())

    def explainer(self, model: TrainedModel) -> str:
        return "catboost.ShapValues"

    def contributions(
        self, model: TrainedModel, x: np.ndarray, background: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        pool = _pool(x, _categoricals(model.estimator))
        values = np.asarray(model.estimator.get_feature_importance(pool, type="ShapValues"))
        return split_bias(values)  # (rows, f+1) or (rows, classes, f+1): the bias is last

    def raw_output(self, model: TrainedModel, x: np.ndarray) -> np.ndarray:
        pool = _pool(x, _categoricals(model.estimator))
        return np.asarray(model.estimator.predict(pool, prediction_type="RawFormulaVal"))

    def save(self, estimator: Any, folder: Path) -> str:
        estimator.save_model(str(folder / "model.cbm"))
        return "model.cbm"

    def load(self, spec: ModelSpec, task: str, path: Path) -> Any:
        estimator = load_class(class_path(spec, task))()
        estimator.load_model(str(path))
        return estimator


def _categoricals(estimator: Any) -> list[int]:
    return list(estimator.get_cat_feature_indices())


def _pool(x: np.ndarray, categorical: list[int], y: np.ndarray | None = None) -> Any:
    """A CatBoost Pool of the encoded rows: category codes as integers (missing: -1), the rest as floats."""
    from catboost import Pool

    if not categorical:
        return Pool(x, label=y)
    import pandas as pd

    frame = pd.DataFrame(x)
    for index in categorical:
        codes = x[:, index]
        frame[index] = np.where(np.isnan(codes), _MISSING_CODE, codes).astype(np.int64)
    return Pool(frame, label=y, cat_features=categorical)


class _Reporter:
    """CatBoost's callback protocol: ``after_iteration(info)`` returns False to stop."""

    def __init__(self, on_iteration: OnIteration) -> None:
        self.on_iteration = on_iteration

    def after_iteration(self, info: Any) -> bool:
        valid = info.metrics.get("validation") or {}
        if valid:
            self.on_iteration(info.iteration, float(next(iter(valid.values()))[-1]))
        return True


ADAPTER = CatBoostAdapter()
SPECS = (
    ModelSpec(
        "catboost",
        "catboost",
        "catboost:CatBoostClassifier",
        "catboost:CatBoostRegressor",
        "native",
        handles_missing=True,
        native_categoricals=True,
    ),
)
