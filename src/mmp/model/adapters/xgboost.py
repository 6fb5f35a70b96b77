"""XGBoost: native categoricals and missing values, early stopping, exact TreeSHAP through ``pred_contribs``,
small-batch probabilities through XGBoost's C API, and saved models loaded and run through that C library
without importing the package and scikit-learn (:mod:`.xgboost_capi`)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmp.model.adapters.base import (
    Adapter,
    class_path,
    curve_sample,
    invalid_params,
    load_class,
    split_bias,
    weight_param,
)
from mmp.model.adapters.xgboost_capi import MARGIN, NativeBooster, open_native
from mmp.model.spec import FitData, FitResult, ModelSpec, OnIteration
from mmp.model.weighting import sample_weights

if TYPE_CHECKING:
    from mmp.model.distributed import ClusterData
    from mmp.model.trained import TrainedModel

_PROBABILITY_OBJECTIVES = ("binary:logistic", "multi:softprob")


class XGBoostAdapter(Adapter):
    key = "xgboost"
    requirements = ("xgboost", "scikit-learn")  # XGBClassifier is a scikit-learn estimator
    early_stopping = True
    distributed = True

    def fit(
        self, spec: ModelSpec, task: str, params: dict[str, Any], data: FitData, on_iteration: OnIteration | None
    ) -> FitResult:
        kwargs = _fit_kwargs(params, data.x_train.shape[1], data.categorical_indices, data.early_stopping_rounds)
        if on_iteration:
            kwargs["callbacks"] = [*kwargs.get("callbacks", []), _reporter(on_iteration)]
        sample = curve_sample(len(data.x_train))
        fit_kwargs: dict[str, Any] = {}
        if data.class_weights is not None:  # per-row weights: scale_pos_weight only covers binary tasks
            weight_param(params, "sample_weight", None, "scale_pos_weight")
            fit_kwargs["sample_weight"] = sample_weights(data.class_weights, data.y_train)
        estimator = load_class(class_path(spec, task))(**kwargs)
        try:
            estimator.fit(
                data.x_train,
                data.y_train,
                **fit_kwargs,
                eval_set=[(data.x_train[sample], data.y_train[sample]), (data.x_valid, data.y_valid)],
                verbose=False,
            )
        except (ValueError, TypeError) as exc:
            raise (invalid_params(exc) or exc) from None
        names = {"validation_0": "train", "validation_1": "valid"}
        history = {names.get(k, k): next(iter(v.values())) for k, v in estimator.evals_result().items() if v}
        return FitResult(estimator, getattr(estimator, "best_iteration", None), history)

    def fit_distributed(
        self, client: Any, spec: ModelSpec, task: str, params: dict[str, Any], data: ClusterData
    ) -> FitResult:
        import xgboost.dask  # noqa: F401  (xgboost does not import its Dask module by itself)

        # A worker's threads are the cluster's setting (more OpenMP threads than cores spin and stall every round).
        params = {key: value for key, value in params.items() if key not in ("n_jobs", "nthread")}
        kwargs = _fit_kwargs(params, data.local.x_train.shape[1], data.categorical_indices, data.early_stopping_rounds)
        module, name = class_path(spec, task).split(":")
        estimator = load_class(f"{module}.dask:Dask{name}")(**kwargs)
        estimator.client = client
        try:
            estimator.fit(data.x_train, data.y_train, eval_set=[(data.x_valid, data.y_valid)], verbose=False)
        except (ValueError, TypeError) as exc:
            raise (invalid_params(exc) or exc) from None
        evals = estimator.evals_result().get("validation_0") or {}
        history = {"valid": next(iter(evals.values()))} if evals else {}
        # The same local estimator a local fit gives: its booster, with best_iteration among its attributes.
        local = load_class(class_path(spec, task))(**kwargs)
        local.load_model(bytearray(estimator.get_booster().save_raw("ubj")))
        return FitResult(local, getattr(local, "best_iteration", None), history)

    def output(self, model: TrainedModel, x: np.ndarray) -> np.ndarray:
        native = _native(model.estimator)
        if native is not None and (model.task == "regression" or native.objective in _PROBABILITY_OBJECTIVES):
            values = native.predict(x)  # what XGBRegressor.predict and predict_proba take the values from
            return _probabilities(values) if model.task != "regression" else np.asarray(values, dtype=float)
        if model.task != "regression" and (predict := _fast_probabilities(model)):
            return _probabilities(predict(x))
        return super().output(model, x)

    def set_threads(self, estimator: Any, threads: int) -> None:
        if (native := _native(estimator)) is not None:
            native.set_threads(threads)
            return
        super().set_threads(estimator, threads)
        estimator.get_booster().set_param({"nthread": threads})

    def explainer(self, model: TrainedModel) -> str:
        return "xgboost.pred_contribs"

    def contributions(
        self, model: TrainedModel, x: np.ndarray, background: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if (native := _native(model.estimator)) is not None:
            return split_bias(native.contributions(x))
        import xgboost

        estimator = model.estimator
        booster = estimator.get_booster()
        matrix = xgboost.DMatrix(
            x, feature_types=booster.feature_types, enable_categorical=True, nthread=estimator.n_jobs
        )
        contributions = booster.predict(matrix, pred_contribs=True, iteration_range=_iterations(estimator))
        return split_bias(contributions)  # (rows, f+1) or (rows, classes, f+1)

    def raw_output(self, model: TrainedModel, x: np.ndarray) -> np.ndarray:
        if (native := _native(model.estimator)) is not None:
            return native.predict(x, MARGIN)
        return np.asarray(model.estimator.predict(x, output_margin=True))

    def save(self, estimator: Any, folder: Path) -> str:
        estimator.save_model(folder / "model.ubj")
        return "model.ubj"

    def load(self, spec: ModelSpec, task: str, path: Path) -> Any:
        """The model through XGBoost's C library (no scikit-learn import); the package's estimator on demand."""
        return open_native(path, partial(_load_estimator, class_path(spec, task), path))


def _load_estimator(path_of_class: str, path: Path) -> Any:
    estimator = load_class(path_of_class)()
    estimator.load_model(path)
    return estimator


def _native(estimator: Any) -> NativeBooster | None:
    return estimator if isinstance(estimator, NativeBooster) else None


def _probabilities(values: np.ndarray) -> np.ndarray:
    """predict_proba's columns: a binary model's positive-class probability becomes two columns."""
    return np.column_stack([1.0 - values, values]) if values.ndim == 1 else values


def _fit_kwargs(
    params: dict[str, Any], n_features: int, categorical: list[int], early_stopping_rounds: int | None
) -> dict[str, Any]:
    kwargs = {"tree_method": "hist", **params}
    if categorical:
        feature_types = ["q"] * n_features
        for index in categorical:
            feature_types[index] = "c"
        kwargs.update(enable_categorical=True, feature_types=feature_types)
    if early_stopping_rounds:
        kwargs["early_stopping_rounds"] = early_stopping_rounds
    return kwargs


def _iterations(estimator: Any) -> tuple[int, int]:
    if (native := _native(estimator)) is not None:
        return native.iteration_range
    best = getattr(estimator, "best_iteration", None)
    return (0, best + 1) if best is not None else (0, 0)


def _fast_probabilities(model: TrainedModel) -> Any:
    """The booster as a function of the feature matrix, built once per model (None for other objectives).

    XGBClassifier.predict_proba adds about 85 us a call, its get_params() 300 us and inplace_predict's Python
    100 us: the C call of :mod:`.xgboost_capi` does without them, which matters for one-row requests.
    """
    cache = model.__dict__
    if "_xgboost_probabilities" not in cache:
        estimator = model.estimator
        predict = None
        if estimator.get_params().get("objective") in _PROBABILITY_OBJECTIVES:
            from mmp.model.adapters.xgboost_capi import dense_predictor

            predict = dense_predictor(estimator.get_booster(), _iterations(estimator))
        cache["_xgboost_probabilities"] = predict
    return cache["_xgboost_probabilities"]


def _reporter(on_iteration: OnIteration) -> Any:
    import xgboost

    class Reporter(xgboost.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, Any]) -> bool:
            valid = evals_log.get("validation_1") or {}
            if valid:
                on_iteration(epoch, float(next(iter(valid.values()))[-1]))
            return False

    return Reporter()


ADAPTER = XGBoostAdapter()
SPECS = (
    ModelSpec(
        "xgboost",
        "xgboost",
        "xgboost:XGBClassifier",
        "xgboost:XGBRegressor",
        "native",
        handles_missing=True,
        native_categoricals=True,
    ),
)
