"""LightGBM: native categoricals and missing values, early stopping, exact TreeSHAP through ``pred_contrib``.

A saved model is LightGBM's text file; loaded, it is :class:`LoadedBooster`, which predicts and explains through
LightGBM's C library without importing the package (:mod:`.lightgbm_capi`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmp.model.adapters.base import (
    PARAM_RANGES,
    Adapter,
    Range,
    class_path,
    curve_sample,
    invalid_params,
    load_class,
    split_bias,
    sum_to_one,
    weight_param,
)
from mmp.model.adapters.lightgbm_capi import CONTRIBUTIONS, NORMAL, RAW_SCORE, NativeModel
from mmp.model.spec import FitData, FitResult, ModelSpec, OnIteration

if TYPE_CHECKING:
    from mmp.model.distributed import ClusterData
    from mmp.model.trained import TrainedModel

log = logging.getLogger(__name__)


class LightGBMAdapter(Adapter):
    key = "lightgbm"
    requirements = ("lightgbm", "scikit-learn")
    early_stopping = True
    rounds_params = ("n_estimators", "num_iterations", "num_boost_round", "num_trees", "num_round", "n_iter")
    distributed = True
    # max_depth <= 0 is no limit; subsample_freq <= 0 turns bagging off.
    param_ranges = {**PARAM_RANGES, "max_depth": None, "num_leaves": Range(2, 131072), "subsample_freq": None}

    def known_params(self, spec: ModelSpec, task: str) -> dict[str, Any]:
        import lightgbm

        params = super().known_params(spec, task)
        for name, aliases in lightgbm.basic._ConfigAliases._get_all_param_aliases().items():
            for alias in (name, *aliases):
                params.setdefault(alias, None)
        return params

    def add_defaults(self, resolved: dict[str, Any], known: dict[str, Any], seed: int) -> None:
        super().add_defaults(resolved, known, seed)
        resolved.setdefault("verbose", -1)

    def fit(
        self, spec: ModelSpec, task: str, params: dict[str, Any], data: FitData, on_iteration: OnIteration | None
    ) -> FitResult:
        import lightgbm

        history: dict[str, Any] = {}
        callbacks = [lightgbm.record_evaluation(history)]
        if data.early_stopping_rounds:
            callbacks.append(lightgbm.early_stopping(data.early_stopping_rounds, verbose=False))
        if on_iteration:
            callbacks.append(_reporter(on_iteration))
        # The train curve on a sample, as XGBoost's: LightGBM reuses its train set's scores only when the eval
        # set is that very array, which eval_y's re-encoded labels never are for a classifier, and even then
        # the loss over every train row each round costs 6 s in a 23 s fit on 700,000 rows.
        sample = curve_sample(len(data.x_train))
        fit_kwargs: dict[str, Any] = {
            "eval_X": (data.x_train[sample], data.x_valid),
            "eval_y": (data.y_train[sample], data.y_valid),
            "eval_names": ["train", "valid"],
            "callbacks": callbacks,
        }
        if data.categorical_indices:
            fit_kwargs["categorical_feature"] = data.categorical_indices
        if data.class_weights is not None:  # LightGBM's own parameter, keyed by the class codes it is fitted on
            weights = dict(enumerate(data.class_weights))
            params = weight_param(params, "class_weight", weights, "is_unbalance", "scale_pos_weight")
        estimator = load_class(class_path(spec, task))(**params)
        try:
            estimator.fit(data.x_train, data.y_train, **fit_kwargs)
        except (ValueError, TypeError) as exc:
            raise (invalid_params(exc) or exc) from None
        raw = getattr(estimator, "evals_result_", {}) or {}
        curves = {split: next(iter(scores.values())) for split, scores in raw.items() if scores}
        return FitResult(estimator, getattr(estimator, "best_iteration_", None) or None, curves)

    def fit_distributed(
        self, client: Any, spec: ModelSpec, task: str, params: dict[str, Any], data: ClusterData
    ) -> FitResult:
        # A worker's threads are the cluster's setting (more OpenMP threads than cores spin and stall every round).
        params = {key: value for key, value in params.items() if key not in ("n_jobs", "num_threads")}
        module, name = class_path(spec, task).split(":")
        estimator = load_class(f"{module}:Dask{name}")(**params, client=client)
        fit_kwargs = {"categorical_feature": data.categorical_indices} if data.categorical_indices else {}
        try:
            estimator.fit(data.x_train, data.y_train, **fit_kwargs)
        except (ValueError, TypeError) as exc:
            raise (invalid_params(exc) or exc) from None
        local = estimator.to_local()
        if not data.early_stopping_rounds:
            return FitResult(local, None, {})
        # lightgbm.dask has no early stopping (each worker sees only its share of the valid split): every round
        # is trained, then the round that does best on the whole valid split is kept, as early stopping would.
        curve = _valid_curve(local.booster_, data.local.x_valid, data.local.y_valid, task)
        best = int(np.argmin(curve)) + 1
        local.booster_.best_iteration = local._best_iteration = best  # predict and save_model stop there
        return FitResult(local, best, {"valid": curve})

    def set_threads(self, estimator: Any, threads: int) -> None:
        if isinstance(estimator, LoadedBooster):
            estimator.threads = threads
        else:
            super().set_threads(estimator, threads)

    def importances(self, estimator: Any) -> np.ndarray | None:
        """Total gain, normalised to sum to 1 so that it reads like the other libraries' importances."""
        return sum_to_one(_booster(estimator).feature_importance(importance_type="gain"))

    def explainer(self, model: TrainedModel) -> str:
        return "lightgbm.pred_contrib"

    def contributions(
        self, model: TrainedModel, x: np.ndarray, background: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        contributions = _scores(model.estimator, x, CONTRIBUTIONS)
        if model.task == "multiclass":
            contributions = contributions.reshape(len(x), len(model.classes), -1)
        return split_bias(contributions)

    def raw_output(self, model: TrainedModel, x: np.ndarray) -> np.ndarray:
        return _scores(model.estimator, x, RAW_SCORE)

    def save(self, estimator: Any, folder: Path) -> str:
        _booster(estimator).save_model(folder / "model.txt")
        return "model.txt"

    def load(self, spec: ModelSpec, task: str, path: Path) -> Any:
        return LoadedBooster(path.read_text(encoding="utf-8"), task)


class LoadedBooster:
    """The predict/predict_proba face of a LightGBM model loaded from its text file.

    It predicts through LightGBM's C library (:mod:`.lightgbm_capi`: no import of the package, which imports
    scikit-learn and pandas); the package's ``Booster`` is loaded on first use for anything else
    (importances), or for everything where the C library is not the version checked here.
    """

    def __init__(self, text: str, task: str) -> None:
        self.text = text
        self.task = task
        self.threads = 0  # 0: LightGBM's default
        self._booster: Any = None
        try:
            self.native: NativeModel | None = NativeModel(text)
        except Exception:  # another LightGBM, or no library file where the package keeps it
            log.debug("LightGBM model loaded through the package", exc_info=True)
            self.native = None

    @property
    def booster(self) -> Any:
        if self._booster is None:
            import lightgbm

            self._booster = lightgbm.Booster(model_str=self.text)
        return self._booster

    def scores(self, x: np.ndarray, kind: int = NORMAL) -> np.ndarray:
        """``Booster.predict``'s values, raw scores or SHAP contributions."""
        if self.native is not None:
            return self.native.predict(x, kind, self.threads)
        options = {"raw_score": kind == RAW_SCORE, "pred_contrib": kind == CONTRIBUTIONS}
        return np.asarray(self.booster.predict(x, num_threads=self.threads, **options))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.scores(x)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        proba = self.scores(x)
        return np.column_stack([1.0 - proba, proba]) if proba.ndim == 1 else proba

    def __getstate__(self) -> dict[str, Any]:
        return {"text": self.text, "task": self.task, "threads": self.threads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["text"], state["task"])  # type: ignore[misc]
        self.threads = state["threads"]


def _scores(estimator: Any, x: np.ndarray, kind: int) -> np.ndarray:
    if isinstance(estimator, LoadedBooster):
        return estimator.scores(x, kind)
    options = {"raw_score": kind == RAW_SCORE, "pred_contrib": kind == CONTRIBUTIONS}
    return np.asarray(estimator.booster_.predict(x, **options))


def _booster(estimator: Any) -> Any:
    return estimator.booster if isinstance(estimator, LoadedBooster) else estimator.booster_


def _valid_curve(booster: Any, x: np.ndarray, y: np.ndarray, task: str) -> list[float]:
    """The valid split's loss after each round (logloss, multi-class logloss or RMSE), one tree at a time."""
    raw: np.ndarray | None = None
    curve = []
    for round_ in range(booster.current_iteration()):
        step = np.asarray(booster.predict(x, raw_score=True, start_iteration=round_, num_iteration=1))
        raw = step if raw is None else raw + step
        if task == "regression":
            curve.append(float(np.sqrt(np.mean((raw - y) ** 2))))
        elif raw.ndim == 1:  # binary: raw is the log-odds of class 1
            curve.append(float(np.mean(np.logaddexp(0.0, np.where(y == 1, -raw, raw)))))
        else:
            log_norm = np.logaddexp.reduce(raw, axis=1)
            curve.append(float(np.mean(log_norm - raw[np.arange(len(y)), y])))
    return curve


def _reporter(on_iteration: OnIteration) -> Any:
    def report(env: Any) -> None:
        for data_name, _metric, value, _higher_better in env.evaluation_result_list:
            if data_name == "valid":
                on_iteration(env.iteration, float(value))
                return

    return report


ADAPTER = LightGBMAdapter()
SPECS = (
    ModelSpec(
        "lightgbm",
        "lightgbm",
        "lightgbm:LGBMClassifier",
        "lightgbm:LGBMRegressor",
        "native",
        handles_missing=True,
        native_categoricals=True,
    ),
)
