"""The model registry: which library class a recipe's ``model.name`` builds, and how it is fit,
saved, loaded and asked for predictions.

Heavy libraries are imported only when a model is built or loaded.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmp.errors import ConfigError

MODEL_INFO_FILE = "model_info.json"
LARGE_BATCH_ROWS = 1_000  # a prediction this large uses every core even where threads are limited
_PROBABILITY_OBJECTIVES = ("binary:logistic", "multi:softprob")


@dataclass(frozen=True)
class ModelFamily:
    """A recipe's ``model.name``: one library class per task, and how to treat its inputs."""

    name: str
    classifier: str | None  # "module:Class"
    regressor: str | None
    encoding: str  # preferred categorical encoding: native | ordinal | onehot
    handles_missing: bool  # NaN in numeric inputs is fine
    linear: bool = False  # wants one-hot, imputed, scaled inputs (linear and distance-based models)
    early_stopping: bool = False
    native_format: str = "skops"  # how the fitted model is saved
    # Parameters that only apply to one of the two classes (the linear family shares a recipe).
    classifier_only: tuple[str, ...] = ()
    regressor_only: tuple[str, ...] = ()
    fixed: dict[str, Any] = field(default_factory=dict)


FAMILIES: dict[str, ModelFamily] = {
    family.name: family
    for family in (
        ModelFamily(
            "xgboost",
            "xgboost:XGBClassifier",
            "xgboost:XGBRegressor",
            "native",
            True,
            early_stopping=True,
            native_format="xgboost",
        ),
        ModelFamily(
            "lightgbm",
            "lightgbm:LGBMClassifier",
            "lightgbm:LGBMRegressor",
            "native",
            True,
            early_stopping=True,
            native_format="lightgbm",
        ),
        ModelFamily(
            "random_forest",
            "sklearn.ensemble:RandomForestClassifier",
            "sklearn.ensemble:RandomForestRegressor",
            "ordinal",
            False,
        ),
        ModelFamily(
            "extra_trees",
            "sklearn.ensemble:ExtraTreesClassifier",
            "sklearn.ensemble:ExtraTreesRegressor",
            "ordinal",
            False,
        ),
        ModelFamily(
            "hist_gradient_boosting",
            "sklearn.ensemble:HistGradientBoostingClassifier",
            "sklearn.ensemble:HistGradientBoostingRegressor",
            "ordinal",  # not native: exact TreeSHAP cannot follow its categorical splits
            True,
        ),
        ModelFamily(
            "linear",
            "sklearn.linear_model:LogisticRegression",
            "sklearn.linear_model:Ridge",
            "onehot",
            False,
            linear=True,
            classifier_only=("C", "penalty", "l1_ratio", "class_weight", "multi_class"),
            regressor_only=("alpha",),
        ),
        ModelFamily(
            "logistic_regression", "sklearn.linear_model:LogisticRegression", None, "onehot", False, linear=True
        ),
        ModelFamily("ridge", None, "sklearn.linear_model:Ridge", "onehot", False, linear=True),
        ModelFamily("linear_regression", None, "sklearn.linear_model:LinearRegression", "onehot", False, linear=True),
        # Distance-based: wants one-hot, scaled inputs like a linear model. No exact SHAP explainer.
        ModelFamily(
            "k_neighbors",
            "sklearn.neighbors:KNeighborsClassifier",
            "sklearn.neighbors:KNeighborsRegressor",
            "onehot",
            False,
            linear=True,
        ),
    )
}

# Hyperparameters whose defaults are None in the library, so their type cannot be read off it.
_KNOWN_TYPES: dict[str, type] = {
    "n_estimators": int,
    "max_depth": int,
    "max_leaves": int,
    "max_bin": int,
    "num_parallel_tree": int,
    "learning_rate": float,
    "subsample": float,
    "colsample_bytree": float,
    "colsample_bylevel": float,
    "colsample_bynode": float,
    "min_child_weight": float,
    "gamma": float,
    "reg_alpha": float,
    "reg_lambda": float,
    "scale_pos_weight": float,
    "max_delta_step": float,
    "n_jobs": int,
    "random_state": int,
    "verbosity": int,
    "max_cat_to_onehot": int,
    "max_cat_threshold": int,
}


def check_model_name(name: str) -> ModelFamily:
    if name in FAMILIES:
        return FAMILIES[name]
    close = difflib.get_close_matches(name, FAMILIES, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ConfigError(f"Unknown model '{name}' in recipe.model.name; {hint}known models: {', '.join(FAMILIES)}")


def class_path(family: ModelFamily, task: str) -> str:
    path = family.regressor if task == "regression" else family.classifier
    if path is None:
        kind = "regression" if task == "regression" else "classification"
        raise ConfigError(
            f"Model '{family.name}' cannot do {kind} (task '{task}'); pick another recipe.model.name, e.g. 'linear'"
        )
    return path


def load_class(path: str) -> type:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def display_name(path: str) -> str:
    """'sklearn.ensemble:RandomForestClassifier' -> 'sklearn.ensemble.RandomForestClassifier'."""
    return path.replace(":", ".")


def _known_params(cls: type, family: ModelFamily) -> dict[str, Any]:
    """Parameter name -> default value, for the library class."""
    params = dict(cls().get_params())
    if family.name == "lightgbm":
        import lightgbm

        for name, aliases in lightgbm.basic._ConfigAliases._get_all_param_aliases().items():
            for alias in (name, *aliases):
                params.setdefault(alias, None)
    return params


def resolve_params(family: ModelFamily, task: str, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Check the recipe's hyperparameters against the library class and add mmp's fixed ones."""
    cls = load_class(class_path(family, task))
    known = _known_params(cls, family)
    skip = family.regressor_only if task != "regression" else family.classifier_only
    resolved: dict[str, Any] = {}
    for name, value in params.items():
        if name in skip:
            continue
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "see the library's documentation for its parameters"
            raise ConfigError(
                f"Unknown hyperparameter '{name}' for {display_name(class_path(family, task))} in "
                f"recipe.model.params; {hint}"
            )
        if family.native_format != "skops":  # scikit-learn validates its own parameters below
            _check_type(name, value, known[name])
        resolved[name] = value
    if "random_state" in known and "random_state" not in resolved:
        resolved["random_state"] = seed
    if family.name == "lightgbm":
        resolved.setdefault("verbose", -1)
    if family.native_format == "skops":
        from sklearn.utils._param_validation import InvalidParameterError

        try:
            cls(**resolved)._validate_params()
        except InvalidParameterError as exc:
            message = " ".join(str(exc).split())
            raise ConfigError(f"Invalid hyperparameter in recipe.model.params: {message}") from None
    return resolved


def check_params(family: ModelFamily, params: dict[str, Any], seed: int) -> None:
    """Check hyperparameters before any work, for every task the family can do."""
    for task, path in (("binary", family.classifier), ("regression", family.regressor)):
        if path is not None:
            resolve_params(family, task, params, seed)


def _check_type(name: str, value: Any, default: Any) -> None:
    expected = _KNOWN_TYPES.get(name) or (type(default) if default is not None else None)
    if expected is None or value is None:
        return
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    }.get(expected)
    if expected is str and isinstance(default, str):
        return  # string options may also take numbers (e.g. max_features: sqrt or 0.5)
    if ok is not None and not ok(value):
        # sklearn allows float fractions where the default is an int (max_features, max_samples)
        if expected is int and isinstance(value, float) and name not in _KNOWN_TYPES:
            return
        kind = {bool: "true or false", int: "an integer", float: "a number"}[expected]
        raise ConfigError(f"Hyperparameter recipe.model.params.{name} must be {kind}, got {value!r}")


# --------------------------------------------------------------------------- fitting


@dataclass
class FitResult:
    estimator: Any
    best_iteration: int | None
    history: dict[str, list[float]]  # per-iteration eval metric, by split, for boosted models


def build_and_fit(
    family: ModelFamily,
    task: str,
    params: dict[str, Any],
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    categorical_indices: list[int],
    early_stopping_rounds: int | None,
    on_iteration: Callable[[int, float], None] | None = None,
) -> FitResult:
    """Build the library estimator and fit it, early-stopping on the valid split where supported.

    ``on_iteration(step, valid_score)`` gets the valid split's eval metric after every boosting
    round (XGBoost and LightGBM); it may raise to stop the fit (a pruned search trial).
    """
    cls = load_class(class_path(family, task))
    kwargs = dict(params)
    fit_kwargs: dict[str, Any] = {}
    native_categoricals = bool(categorical_indices)
    if family.name == "xgboost":
        kwargs.setdefault("tree_method", "hist")
        if native_categoricals:
            feature_types = ["q"] * x_train.shape[1]
            for index in categorical_indices:
                feature_types[index] = "c"
            kwargs.update(enable_categorical=True, feature_types=feature_types)
        if early_stopping_rounds:
            kwargs["early_stopping_rounds"] = early_stopping_rounds
        # The train curve is scored on a 10,000-row sample: scoring a large train split every round costs
        # seconds (50,000 rows: +7% CPU on 1M rows) and changes nothing (early stopping watches valid).
        # LightGBM needs no sample: it is given the train set itself, whose score it keeps as it goes.
        sample = _curve_sample(len(x_train))
        fit_kwargs.update(eval_set=[(x_train[sample], y_train[sample]), (x_valid, y_valid)], verbose=False)
        if on_iteration:
            kwargs["callbacks"] = [*kwargs.get("callbacks", []), _xgboost_reporter(on_iteration)]
    elif family.name == "lightgbm":
        import lightgbm

        history: dict[str, Any] = {}
        callbacks = [lightgbm.record_evaluation(history)]
        if early_stopping_rounds:
            callbacks.append(lightgbm.early_stopping(early_stopping_rounds, verbose=False))
        if on_iteration:
            callbacks.append(_lightgbm_reporter(on_iteration))
        fit_kwargs.update(
            eval_X=(x_train, x_valid), eval_y=(y_train, y_valid), eval_names=["train", "valid"], callbacks=callbacks
        )
        if native_categoricals:
            fit_kwargs["categorical_feature"] = categorical_indices
    elif family.name == "hist_gradient_boosting" and native_categoricals:
        mask = np.zeros(x_train.shape[1], dtype=bool)
        mask[categorical_indices] = True
        kwargs["categorical_features"] = mask
    estimator = cls(**kwargs)
    try:
        estimator.fit(x_train, y_train, **fit_kwargs)
    except (ValueError, TypeError) as exc:
        if "parameter" in str(exc).lower():
            message = " ".join(str(exc).split())
            raise ConfigError(f"Invalid hyperparameter in recipe.model.params: {message}") from None
        raise
    return FitResult(estimator, _best_iteration(family, estimator), _history(family, estimator, fit_kwargs))


def _xgboost_reporter(on_iteration: Callable[[int, float], None]) -> Any:
    import xgboost

    class Reporter(xgboost.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, Any]) -> bool:
            valid = evals_log.get("validation_1") or {}
            if valid:
                on_iteration(epoch, float(next(iter(valid.values()))[-1]))
            return False

    return Reporter()


def _lightgbm_reporter(on_iteration: Callable[[int, float], None]) -> Callable[[Any], None]:
    def report(env: Any) -> None:
        for data_name, _metric, value, _higher_better in env.evaluation_result_list:
            if data_name == "valid":
                on_iteration(env.iteration, float(value))
                return

    return report


_CURVE_ROWS = 10_000
_CORES = os.cpu_count() or 1


def _curve_sample(n: int) -> slice | np.ndarray:
    if n <= _CURVE_ROWS:
        return slice(None)
    return np.sort(np.random.default_rng(0).choice(n, _CURVE_ROWS, replace=False))


def _best_iteration(family: ModelFamily, estimator: Any) -> int | None:
    if family.name == "xgboost":
        return getattr(estimator, "best_iteration", None)
    if family.name == "lightgbm":
        return getattr(estimator, "best_iteration_", None) or None
    return None


def _history(family: ModelFamily, estimator: Any, fit_kwargs: dict[str, Any]) -> dict[str, list[float]]:
    if family.name == "xgboost":
        raw = estimator.evals_result()
        names = {"validation_0": "train", "validation_1": "valid"}
        return {names.get(split, split): next(iter(scores.values())) for split, scores in raw.items() if scores}
    if family.name == "lightgbm":
        raw = getattr(estimator, "evals_result_", {}) or {}
        return {split: next(iter(scores.values())) for split, scores in raw.items() if scores}
    return {}


# --------------------------------------------------------------------------- saving and loading


@dataclass
class TrainedModel:
    """A fitted model with what is needed to predict from an encoded feature matrix."""

    family: ModelFamily
    task: str
    estimator: Any
    classes: list[Any]
    feature_means: list[float] | None = None  # train means of the encoded features (linear SHAP background)

    @property
    def class_path(self) -> str:
        return class_path(self.family, self.task)

    def limit_threads(self, threads: int) -> None:
        """Predict with at most ``threads`` threads.

        A server runs one process per core: an OpenMP team per request in each of them oversubscribes
        the cores and costs more than it gains on small batches (measured: 40 vs 790 requests/s).
        """
        estimator = self.estimator
        if isinstance(estimator, _LightGBMBooster):
            estimator.threads = threads
        elif hasattr(estimator, "get_params") and "n_jobs" in estimator.get_params():
            estimator.set_params(n_jobs=threads)
        if self.family.name == "xgboost":
            estimator.get_booster().set_param({"nthread": threads})
        self._threads = threads

    @contextlib.contextmanager
    def _batch_threads(self, rows: int) -> Iterator[None]:
        """Every core for a large batch: its work dwarfs an OpenMP team's start-up (10,000 rows: 71 -> 38 ms)."""
        limit = getattr(self, "_threads", 0)
        if not limit or limit >= _CORES or rows < LARGE_BATCH_ROWS:
            yield
            return
        self.limit_threads(_CORES)
        try:
            yield
        finally:
            self.limit_threads(limit)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes``."""
        with self._batch_threads(len(x)):
            return self._predict_proba(x)

    def _predict_proba(self, x: np.ndarray) -> np.ndarray:
        if predict := self._xgboost_probabilities:
            proba = predict(x)
            return np.column_stack([1.0 - proba, proba]) if proba.ndim == 1 else proba
        return np.asarray(self.estimator.predict_proba(x))

    @functools.cached_property
    def _xgboost_probabilities(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """XGBoost's booster as a function of the feature matrix, for objectives that predict the probability.

        XGBClassifier.predict_proba adds ~85 us a call, its get_params() ~300 us, and inplace_predict's
        Python ~100 us: all of it is done once here (:mod:`mmp.xgboost_predict`), not per request.
        """
        estimator = self.estimator
        if self.family.name != "xgboost" or estimator.get_params().get("objective") not in _PROBABILITY_OBJECTIVES:
            return None
        from mmp.model.adapters.xgboost_capi import dense_predictor

        try:
            iterations = (0, estimator.best_iteration + 1)
        except AttributeError:
            iterations = (0, 0)
        return dense_predictor(estimator.get_booster(), iterations)

    def predict_value(self, x: np.ndarray) -> np.ndarray:
        """Regression predictions."""
        with self._batch_threads(len(x)):
            return np.asarray(self.estimator.predict(x), dtype=float)

    def save(self, folder: Path, **extra: Any) -> None:
        """Write the native model file and ``model_info.json`` (plus ``extra`` fields, e.g. the run id)."""
        folder.mkdir(parents=True, exist_ok=True)
        if self.family.native_format == "xgboost":
            filename = "model.ubj"
            self.estimator.save_model(folder / filename)
        elif self.family.native_format == "lightgbm":
            filename = "model.txt"
            self.estimator.booster_.save_model(folder / filename)
        else:
            import skops.io

            filename = "model.skops"
            skops.io.dump(self.estimator, folder / filename)
        info = {
            "family": self.family.name,
            "class": display_name(self.class_path),
            "task": self.task,
            "classes": self.classes,
            "file": filename,
            "feature_means": self.feature_means,
            **extra,
        }
        (folder / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> TrainedModel:
        info = json.loads((folder / MODEL_INFO_FILE).read_text(encoding="utf-8"))
        family = FAMILIES[info["family"]]
        task = info["task"]
        path = folder / info["file"]
        if family.native_format == "xgboost":
            estimator = load_class(class_path(family, task))()
            estimator.load_model(path)
        elif family.native_format == "lightgbm":
            import lightgbm

            estimator = _LightGBMBooster(lightgbm.Booster(model_file=str(path)), task)
        else:
            import skops.io

            # The file is our own output; its types are the fitted sklearn estimator's.
            estimator = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
        return cls(family, task, estimator, info["classes"], info.get("feature_means"))


class _LightGBMBooster:
    """The predict/predict_proba face of a LightGBM booster loaded from its text file."""

    def __init__(self, booster: Any, task: str) -> None:
        self.booster = booster
        self.task = task
        self.threads = 0  # 0: LightGBM's default

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.booster.predict(x, num_threads=self.threads)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        proba = self.booster.predict(x, num_threads=self.threads)
        if proba.ndim == 1:
            return np.column_stack([1.0 - proba, proba])
        return proba
