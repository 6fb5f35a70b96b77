"""scikit-learn: forests, histogram gradient boosting, linear and nearest-neighbour models.

Exact SHAP: for forests, TreeSHAP run by XGBoost's C library (:mod:`.forest_shap`, the values of
``shap.TreeExplainer`` without importing shap); ``shap.TreeExplainer`` for histogram gradient boosting;
``shap.LinearExplainer``'s formula for the linear ones; nearest neighbours have none. Fitted models are saved
with skops (no pickles).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import numpy as np

from mmp.errors import ConfigError, ExplainError
from mmp.model.adapters import forest_shap
from mmp.model.adapters.base import (
    Adapter,
    class_path,
    display_name,
    invalid_params,
    load_class,
    split_bias,
    weight_param,
)
from mmp.model.spec import FitData, FitResult, ModelSpec, OnIteration
from mmp.model.weighting import sample_weights

if TYPE_CHECKING:
    from mmp.model.trained import TrainedModel

_TREES = {"random_forest", "extra_trees", "hist_gradient_boosting"}
_PROBABILITY_TREES = {"random_forest", "extra_trees"}  # explained in probability space, not log-odds
FOREST_EXPLAINER = "treeshap.xgboost_c"  # the forests' TreeSHAP, run by XGBoost's C library (no shap import)


class SklearnAdapter(Adapter):
    key = "sklearn"
    requirements = ("scikit-learn", "skops")
    checks_own_params = True

    def validate(self, spec: ModelSpec, task: str, resolved: dict[str, Any]) -> None:
        from sklearn.utils._param_validation import InvalidParameterError

        try:
            load_class(class_path(spec, task))(**resolved)._validate_params()
        except InvalidParameterError as exc:
            raise ConfigError(f"Invalid hyperparameter in recipe.model.params: {' '.join(str(exc).split())}") from None

    def fit(
        self, spec: ModelSpec, task: str, params: dict[str, Any], data: FitData, on_iteration: OnIteration | None
    ) -> FitResult:
        kwargs = dict(params)
        if data.categorical_indices:  # histogram gradient boosting's native categories
            mask = np.zeros(data.x_train.shape[1], dtype=bool)
            mask[data.categorical_indices] = True
            kwargs["categorical_features"] = mask
        fit_kwargs: dict[str, Any] = {}
        cls = load_class(class_path(spec, task))
        if data.class_weights is not None:
            if "class_weight" in cls().get_params():  # the estimator's own parameter, keyed by class code
                kwargs = weight_param(kwargs, "class_weight", dict(enumerate(data.class_weights)))
            elif "sample_weight" in inspect.signature(cls.fit).parameters:
                fit_kwargs["sample_weight"] = sample_weights(data.class_weights, data.y_train)
            else:
                raise ConfigError(
                    f"{display_name(class_path(spec, task))} takes no class or sample weights; "
                    "set recipe.class_weight to none or pick another model"
                )
        estimator = cls(**kwargs)
        try:
            estimator.fit(data.x_train, data.y_train, **fit_kwargs)
        except (ValueError, TypeError) as exc:
            raise (invalid_params(exc) or exc) from None
        return FitResult(estimator, None, {})

    def explainer(self, model: TrainedModel) -> str:
        if model.spec.name in _TREES:
            categorical = getattr(model.estimator, "is_categorical_", None)
            if categorical is not None and categorical.any():
                raise ExplainError(
                    "shap's TreeExplainer cannot explain HistGradientBoosting's native categorical splits exactly; "
                    "set recipe.preprocessing.categorical_encoding=ordinal"
                )
            if model.spec.name in _PROBABILITY_TREES and forest_shap.usable():
                return FOREST_EXPLAINER
            return "shap.TreeExplainer"
        if model.spec.linear and hasattr(model.estimator, "coef_"):
            return "linear.exact"  # shap.LinearExplainer's formula, computed here
        return super().explainer(model)

    def output_space(self, model: TrainedModel) -> str:
        if model.task != "regression" and model.spec.name in _PROBABILITY_TREES:
            return "probability"
        return super().output_space(model)

    def contributions(
        self, model: TrainedModel, x: np.ndarray, background: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        explainer = self.explainer(model)
        if explainer == FOREST_EXPLAINER:
            return _forest_contributions(model, x)
        if explainer == "shap.TreeExplainer":
            import shap

            explainer = model.cached("tree", lambda: shap.TreeExplainer(model.estimator))
            values = np.asarray(explainer.shap_values(x, check_additivity=False))
            base = np.atleast_1d(np.asarray(explainer.expected_value, dtype=float))
        else:
            if background is None:
                raise ExplainError("A linear model needs a background sample (the train split) to be explained")
            values, base = _linear_contributions(model.estimator, x, background)
        if values.ndim == 3:  # (rows, features, classes)
            values = np.moveaxis(values, 2, 1)
            if model.task == "binary" and values.shape[1] == 2:  # forests explain both classes
                return values[:, 1, :], base[1]
            return values, base
        return values, base[0] if base.size == 1 else base

    def raw_output(self, model: TrainedModel, x: np.ndarray) -> np.ndarray:
        estimator = model.estimator
        if model.task == "regression":
            return np.asarray(estimator.predict(x))
        if self.output_space(model) == "probability":
            proba = np.asarray(estimator.predict_proba(x))
            return proba[:, 1] if model.task == "binary" else proba
        return np.asarray(estimator.decision_function(x))


def _forest_contributions(model: TrainedModel, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A forest's exact SHAP values (:mod:`.forest_shap`): the positive class's for binary, every class's for
    multiclass, in probability space, as shap.TreeExplainer gives them."""
    if model.task == "regression":
        outputs = [0]
    elif model.task == "binary":
        outputs = [len(model.estimator.classes_) - 1]
    else:
        outputs = list(range(len(model.estimator.classes_)))
    return split_bias(forest_shap.contributions(model.estimator, x, outputs))


def _linear_contributions(estimator: Any, x: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact SHAP values of a linear model with independent features: ``coef * (x - mean(background))``,
    the formula of ``shap.LinearExplainer``, without importing shap (2-3 s). Values are (rows, features) for
    one output, else (rows, features, outputs)."""
    coef = np.atleast_2d(np.asarray(estimator.coef_, dtype=float))  # (outputs, features)
    mean = np.asarray(background, dtype=float).mean(axis=0)
    values = (np.asarray(x, dtype=float) - mean)[:, :, None] * coef.T[None, :, :]
    base = np.atleast_1d(np.asarray(estimator.intercept_, dtype=float)) + coef @ mean
    return (values[:, :, 0], base) if coef.shape[0] == 1 else (values, base)


ADAPTER = SklearnAdapter()
_LINEAR = {"encoding": "onehot", "handles_missing": False, "linear": True}
SPECS = (
    ModelSpec(
        "random_forest",
        "sklearn",
        "sklearn.ensemble:RandomForestClassifier",
        "sklearn.ensemble:RandomForestRegressor",
        "ordinal",
        handles_missing=False,
    ),
    ModelSpec(
        "extra_trees",
        "sklearn",
        "sklearn.ensemble:ExtraTreesClassifier",
        "sklearn.ensemble:ExtraTreesRegressor",
        "ordinal",
        handles_missing=False,
    ),
    ModelSpec(
        "hist_gradient_boosting",
        "sklearn",
        "sklearn.ensemble:HistGradientBoostingClassifier",
        "sklearn.ensemble:HistGradientBoostingRegressor",
        "ordinal",  # not native by default: exact TreeSHAP cannot follow its categorical splits
        handles_missing=True,
        native_categoricals=True,
        max_native_levels=250,  # native categories must fit its 255 bins
    ),
    ModelSpec(
        "linear",
        "sklearn",
        "sklearn.linear_model:LogisticRegression",
        "sklearn.linear_model:Ridge",
        **_LINEAR,
        classifier_only=("C", "penalty", "l1_ratio", "class_weight", "multi_class"),
        regressor_only=("alpha",),
    ),
    ModelSpec("logistic_regression", "sklearn", "sklearn.linear_model:LogisticRegression", None, **_LINEAR),
    ModelSpec("ridge", "sklearn", None, "sklearn.linear_model:Ridge", **_LINEAR),
    ModelSpec("linear_regression", "sklearn", None, "sklearn.linear_model:LinearRegression", **_LINEAR),
    # Distance-based: wants one-hot, scaled inputs like a linear model. No exact SHAP explainer.
    ModelSpec(
        "k_neighbors",
        "sklearn",
        "sklearn.neighbors:KNeighborsClassifier",
        "sklearn.neighbors:KNeighborsRegressor",
        **_LINEAR,
    ),
)
