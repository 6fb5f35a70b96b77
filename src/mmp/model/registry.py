"""The model catalogue: every recipe ``model.name``, the adapter of its library, and the checks that run
before any data is read (the name, the hyperparameters, the inputs the model wants)."""

from __future__ import annotations

import difflib
from typing import Any

from mmp.config import PreprocessingConfig
from mmp.data.preprocessing import EncodingPlan
from mmp.errors import ConfigError
from mmp.model.adapters import catboost, lightgbm, sklearn, xgboost
from mmp.model.adapters.base import Adapter, class_path, display_name
from mmp.model.spec import ModelSpec

_LIBRARIES = (xgboost, lightgbm, sklearn, catboost)  # each module: ADAPTER and its SPECS; libraries load lazily
ADAPTERS: dict[str, Adapter] = {module.ADAPTER.key: module.ADAPTER for module in _LIBRARIES}
MODELS: dict[str, ModelSpec] = {spec.name: spec for module in _LIBRARIES for spec in module.SPECS}


def adapter_for(spec: ModelSpec) -> Adapter:
    return ADAPTERS[spec.library]


def check_model_name(name: str) -> ModelSpec:
    if name in MODELS:
        return MODELS[name]
    close = difflib.get_close_matches(name, MODELS, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ConfigError(f"Unknown model '{name}' in recipe.model.name; {hint}known models: {', '.join(MODELS)}")


def class_name(spec: ModelSpec, task: str) -> str:
    """The library class that the model is for this task, e.g. 'xgboost.XGBClassifier'."""
    return display_name(class_path(spec, task))


def resolve_params(spec: ModelSpec, task: str, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """The recipe's hyperparameters checked against the library class, with mmp's own added."""
    class_path(spec, task)  # the model must be able to do the task
    return adapter_for(spec).resolve_params(spec, task, params, seed)


def check_params(spec: ModelSpec, params: dict[str, Any], seed: int) -> None:
    """Check hyperparameters before any work, for every task the model can do."""
    for task, path in (("binary", spec.classifier), ("regression", spec.regressor)):
        if path is not None:
            resolve_params(spec, task, params, seed)


def encoding_plan(spec: ModelSpec, settings: PreprocessingConfig) -> EncodingPlan:
    """How the preprocessing prepares inputs for this model: the recipe's choices, ``auto`` resolved."""
    encoding = spec.encoding if settings.categorical_encoding == "auto" else settings.categorical_encoding
    if encoding == "native" and not spec.native_categoricals:
        encoding = "ordinal"
    if spec.linear:
        encoding = "onehot"  # integer codes mean nothing to a linear or distance-based model
    imputation = settings.numeric_imputation
    if imputation == "auto":
        imputation = "none" if spec.handles_missing else "median"
    scaling = settings.scaling
    if scaling == "auto":
        scaling = "standard" if spec.linear else "none"
    return EncodingPlan(encoding, imputation, scaling, settings.max_onehot_levels, spec.max_native_levels)
