"""The interface every model library answers, so that nothing outside an adapter asks which library it is.

An adapter owns, for its library: building and fitting (early stopping, per-iteration curves), predicting,
exact SHAP contributions, native categoricals, the pip requirements of a logged model, saving and loading,
and thread limits. Libraries are imported only inside the methods that need them.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmp.errors import ConfigError, ExplainError, MmpError
from mmp.model.spec import FitData, FitResult, ModelSpec, OnIteration
from mmp.model.weighting import sample_weights

if TYPE_CHECKING:
    from mmp.model.distributed import ClusterData
    from mmp.model.trained import TrainedModel

# Modules whose types a saved scikit-learn model may hold beyond those skops trusts by default.
TRUSTED_MODULES = ("sklearn.",)

# Hyperparameters whose defaults are None in the libraries, so their type cannot be read off them.
KNOWN_TYPES: dict[str, type] = {
    "n_estimators": int,
    "iterations": int,
    "max_depth": int,
    "depth": int,
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
    "l2_leaf_reg": float,
    "scale_pos_weight": float,
    "max_delta_step": float,
    "n_jobs": int,
    "thread_count": int,
    "random_state": int,
    "random_seed": int,
    "verbosity": int,
    "max_cat_to_onehot": int,
    "max_cat_threshold": int,
    "one_hot_max_size": int,
}


@dataclass(frozen=True)
class Range:
    """The values a numeric hyperparameter may take, as its library documents them."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is excluded
    high_open: bool = False

    def admits(self, value: float) -> bool:
        if value != value:  # NaN
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"{'<' if self.high_open else '<='} {self.high:g}"


COUNT = Range(1)  # a positive count: trees, rounds
RATE = Range(0, low_open=True)  # > 0: a learning rate, a weight ratio
FRACTION = Range(0, 1, low_open=True)  # a sampled share of rows or columns: (0, 1]
NON_NEGATIVE = Range(0)  # regularisation, minimum weights and gains

# Ranges shared by the boosting libraries (their documentation); an adapter adds or overrides its own
# (``Adapter.param_ranges``). None: any value of the type (e.g. LightGBM's max_depth, where <= 0 means no limit).
PARAM_RANGES: dict[str, Range | None] = {
    "n_estimators": COUNT,
    "iterations": COUNT,
    "num_parallel_tree": COUNT,
    "learning_rate": RATE,
    "eta": RATE,
    "scale_pos_weight": RATE,
    "subsample": FRACTION,
    "colsample_bytree": FRACTION,
    "colsample_bylevel": FRACTION,
    "colsample_bynode": FRACTION,
    "max_depth": NON_NEGATIVE,  # XGBoost: 0 is no limit
    "max_leaves": NON_NEGATIVE,
    "max_bin": Range(2),
    "min_child_weight": NON_NEGATIVE,
    "min_child_samples": NON_NEGATIVE,
    "min_split_gain": NON_NEGATIVE,
    "gamma": NON_NEGATIVE,
    "reg_alpha": NON_NEGATIVE,
    "reg_lambda": NON_NEGATIVE,
    "l2_leaf_reg": NON_NEGATIVE,
    "max_delta_step": NON_NEGATIVE,
    "max_cat_to_onehot": COUNT,
    "max_cat_threshold": COUNT,
    "one_hot_max_size": NON_NEGATIVE,
}


def load_class(path: str) -> type:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def display_name(path: str) -> str:
    """'sklearn.ensemble:RandomForestClassifier' -> 'sklearn.ensemble.RandomForestClassifier'."""
    return path.replace(":", ".")


def class_path(spec: ModelSpec, task: str) -> str:
    path = spec.regressor if task == "regression" else spec.classifier
    if path is None:
        kind = "regression" if task == "regression" else "classification"
        raise ConfigError(
            f"Model '{spec.name}' cannot do {kind} (task '{task}'); pick another recipe.model.name, e.g. 'linear'"
        )
    return path


class Adapter:
    """Defaults shared by the libraries; each adapter overrides what its library does differently."""

    key: str = ""  # ModelSpec.library
    requirements: tuple[str, ...] = ()  # pip distributions a logged model of this library imports
    early_stopping: bool = False
    distributed: bool = False  # fit_distributed: the library's own Dask trainer (compute.engine dask)
    checks_own_params: bool = False  # the library validates its parameters itself (scikit-learn)
    param_ranges: dict[str, Range | None] = PARAM_RANGES  # documented ranges, checked before any data is read
    # The number of boosting rounds (first) and its aliases: a cross-validated refit sets the first, drops the rest.
    rounds_params: tuple[str, ...] = ("n_estimators",)

    # ----------------------------------------------------------------- building

    def known_params(self, spec: ModelSpec, task: str) -> dict[str, Any]:
        """Parameter name -> default value, for the library class."""
        return dict(load_class(class_path(spec, task))().get_params())

    def resolve_params(self, spec: ModelSpec, task: str, params: dict[str, Any], seed: int) -> dict[str, Any]:
        """Check the recipe's hyperparameters against the library class and add mmp's fixed ones."""
        known = self.known_params(spec, task)
        skip = spec.regressor_only if task != "regression" else spec.classifier_only
        resolved: dict[str, Any] = {}
        for name, value in params.items():
            if name in skip:
                continue
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean '{close[0]}'?" if close else "see the library's documentation for its parameters"
                raise ConfigError(
                    f"Unknown hyperparameter '{name}' for {display_name(class_path(spec, task))} in "
                    f"recipe.model.params; {hint}"
                )
            if not self.checks_own_params:
                check_type(name, value, known[name])
                check_range(name, value, self.param_ranges.get(name))
            resolved[name] = value
        resolved = {**spec.fixed, **resolved}
        self.add_defaults(resolved, known, seed)
        self.validate(spec, task, resolved)
        return resolved

    def add_defaults(self, resolved: dict[str, Any], known: dict[str, Any], seed: int) -> None:
        """mmp's own defaults: the seed, and quiet logs."""
        if "random_state" in known and "random_state" not in resolved:
            resolved["random_state"] = seed

    def validate(self, spec: ModelSpec, task: str, resolved: dict[str, Any]) -> None:
        """Library-specific checks of the resolved parameters, before any data is read."""

    def fit(
        self, spec: ModelSpec, task: str, params: dict[str, Any], data: FitData, on_iteration: OnIteration | None
    ) -> FitResult:
        estimator = load_class(class_path(spec, task))(**params)
        weights = sample_weights(data.class_weights, data.y_train)
        estimator.fit(data.x_train, data.y_train, **({} if weights is None else {"sample_weight": weights}))
        return FitResult(estimator, None, {})

    def fit_distributed(
        self, client: Any, spec: ModelSpec, task: str, params: dict[str, Any], data: ClusterData
    ) -> FitResult:
        """Fit on a Dask cluster (``client``); the result holds the library's local estimator."""
        raise NotImplementedError(f"{self.key} has no distributed trainer")

    # ----------------------------------------------------------------- predicting

    def output(self, model: TrainedModel, x: np.ndarray) -> np.ndarray:
        """Class probabilities (rows, classes) for classifiers, values (rows,) for regressors."""
        if model.task == "regression":
            return np.asarray(model.estimator.predict(x), dtype=float)
        return np.asarray(model.estimator.predict_proba(x))

    def set_threads(self, estimator: Any, threads: int) -> None:
        if hasattr(estimator, "get_params") and "n_jobs" in estimator.get_params():
            estimator.set_params(n_jobs=threads)

    def importances(self, estimator: Any) -> np.ndarray | None:
        """One importance per model feature, or None: ``feature_importances_`` or absolute coefficients."""
        if (raw := getattr(estimator, "feature_importances_", None)) is not None:
            return np.asarray(raw, dtype=float)
        if (coef := getattr(estimator, "coef_", None)) is not None:
            values = np.abs(np.asarray(coef, dtype=float))
            return values.mean(axis=0) if values.ndim == 2 else values
        return None

    # ----------------------------------------------------------------- explaining

    def explainer(self, model: TrainedModel) -> str:
        """The exact explainer's name; ExplainError when the model has none."""
        raise ExplainError(
            f"No exact SHAP explainer for {display_name(model.class_path)}; use a tree or linear model "
            "(xgboost, lightgbm, catboost, random_forest, extra_trees, hist_gradient_boosting, linear), "
            "or stop before explain with `dvc repro train`"
        )

    def output_space(self, model: TrainedModel) -> str:
        """What the contributions add up to: "log-odds", "probability" or "value"."""
        return "value" if model.task == "regression" else "log-odds"

    def contributions(
        self, model: TrainedModel, x: np.ndarray, background: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact SHAP values per model feature, (rows, features) or (rows, classes, features), and the base."""
        raise ExplainError(self.explainer(model))

    def raw_output(self, model: TrainedModel, x: np.ndarray) -> np.ndarray:
        """The output the contributions add up to: (rows,) or (rows, classes)."""
        raise ExplainError(self.explainer(model))

    # ----------------------------------------------------------------- files

    def save(self, estimator: Any, folder: Path) -> str:
        """Write the fitted estimator into ``folder``; return the file's name."""
        import skops.io

        skops.io.dump(estimator, folder / "model.skops")
        return "model.skops"

    def load(self, spec: ModelSpec, task: str, path: Path) -> Any:
        import skops.io

        # skops refuses types it does not know to be safe. A fitted forest, boosted or neighbours model holds
        # scikit-learn's own (trees, KD-trees, distance metrics): those are trusted, and nothing else is, so a
        # tampered model file in a shared artifact store cannot run code where the model is served.
        untrusted = skops.io.get_untrusted_types(file=path)
        foreign = sorted(name for name in untrusted if not name.startswith(TRUSTED_MODULES))
        if foreign:
            raise MmpError(
                f"The model file {path.name} holds types mmp does not load ({', '.join(foreign[:5])}): it was not "
                "written by mmp's training; retrain the model with mmp train or dvc repro"
            )
        return skops.io.load(path, trusted=untrusted)


def check_type(name: str, value: Any, default: Any) -> None:
    """A hyperparameter's value must have its default's type (or the documented type of a None default)."""
    expected = KNOWN_TYPES.get(name) or (type(default) if default is not None else None)
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
        # scikit-learn allows float fractions where the default is an int (max_features, max_samples)
        if expected is int and isinstance(value, float) and name not in KNOWN_TYPES:
            return
        kind = {bool: "true or false", int: "an integer", float: "a number"}[expected]
        raise ConfigError(f"Hyperparameter recipe.model.params.{name} must be {kind}, got {value!r}")


def check_range(name: str, value: Any, allowed: Range | None) -> None:
    """A numeric hyperparameter must lie in its documented range (one-line ConfigError naming it)."""
    if allowed is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if not allowed.admits(float(value)):
        raise ConfigError(f"Hyperparameter recipe.model.params.{name} must be {allowed.describe()}, got {value!r}")


def weight_param(params: dict[str, Any], name: str, value: Any, *conflicting: str) -> dict[str, Any]:
    """``params`` with the library's class-weight parameter set from ``recipe.class_weight``; both set is an error."""
    clash = [key for key in (name, *conflicting) if params.get(key) is not None]
    if clash:
        raise ConfigError(
            f"recipe.class_weight and recipe.model.params.{clash[0]} both weight the classes; keep one of them"
        )
    return {**params, name: value}


def sum_to_one(values: Any) -> np.ndarray:
    """Importances scaled to sum to 1 (gain totals read like the other libraries' importances)."""
    values = np.asarray(values, dtype=float)
    total = values.sum()
    return values / total if total > 0 else values


def split_bias(contributions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Library contributions end with the bias column; it is the same for every row."""
    return contributions[..., :-1], contributions[0, ..., -1]


def invalid_params(exc: Exception) -> ConfigError | None:
    """A library's complaint about a parameter, as the one-line config error; None for anything else."""
    if "parameter" in str(exc).lower():
        return ConfigError(f"Invalid hyperparameter in recipe.model.params: {' '.join(str(exc).split())}")
    return None


CURVE_ROWS = 10_000


def curve_sample(n: int) -> slice | np.ndarray:
    """The rows whose train score a boosted fit records each round: all of a small split, 10,000 of a large one.

    Scoring a large train split every round costs seconds and changes nothing: early stopping watches valid.
    """
    if n <= CURVE_ROWS:
        return slice(None)
    return np.sort(np.random.default_rng(0).choice(n, CURVE_ROWS, replace=False))
