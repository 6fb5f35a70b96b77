"""The typed config: one frozen dataclass per section, and the validation that turns a YAML-shaped
mapping into them with one-line errors naming the key.

Model names and hyperparameters are checked by :mod:`mmp.model.registry`, which knows the libraries.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmp.errors import ConfigError

TASKS = ("auto", "binary", "multiclass", "regression")
ENCODINGS = ("auto", "native", "onehot", "ordinal")
IMPUTATIONS = ("auto", "none", "median", "mean", "zero")
SCALINGS = ("auto", "standard", "none")
DATA_SOURCES = ("file", "sql")
COMPUTE_ENGINES = ("local", "dask")
SPLIT_STRATEGIES = ("random", "stratified", "temporal", "group")
CALIBRATIONS = ("none", "isotonic", "sigmoid")
CALIBRATION_METHODS = ("oof", "holdout")
THRESHOLD_METRICS = ("f1", "cost")
THRESHOLD_COSTS = ("false_positive", "false_negative")


@dataclass(frozen=True)
class DataConfig:
    name: str
    path: str | None  # a local file or an s3:// gs:// az:// URL (source file); null for source sql
    target: str
    positive_class: str | None = None
    id_columns: list[str] = field(default_factory=list)
    drop_columns: list[str] = field(default_factory=list)
    categorical_columns: list[str] = field(default_factory=list)
    query: str | None = None
    # issue 18: data from SQL and object stores (mmp.data.sources)
    source: str = "file"  # file | sql
    uri: str | None = None  # sql: connection URI without a password (postgresql://user@host:5432/db)
    uri_env: str | None = None  # sql: or the environment variable (.env) holding the URI, password included
    sql: str | None = None  # sql: the query ...
    sql_file: str | None = None  # ... or a file holding it, relative to the project root
    sql_params: Any = None  # sql: a list of values the driver binds to the query's placeholders ($1 / ?)
    snapshot: str | None = None  # the Parquet copy of the source that `mmp ingest` writes and prepare reads


@dataclass(frozen=True)
class SplitConfig:
    valid_size: float = 0.15
    test_size: float = 0.15
    stratify: bool = True  # false: strategy stratified behaves as random (the key predates strategy)
    strategy: str = "stratified"  # random | stratified | temporal | group
    time_column: str | None = None  # temporal: the column to order by
    group_column: str | None = None  # group: rows sharing its value stay in one split


@dataclass(frozen=True)
class CvConfig:
    folds: int = 0  # k >= 2: k-fold cross-validation on train+valid, folds as split.strategy says; 0 or 1: off


@dataclass(frozen=True)
class ModelConfig:
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    early_stopping_rounds: int | None = None


@dataclass(frozen=True)
class PreprocessingConfig:
    categorical_encoding: str = "auto"
    numeric_imputation: str = "auto"
    scaling: str = "auto"
    max_onehot_levels: int = 30


@dataclass(frozen=True)
class MetricsConfig:
    primary: str = "auto"
    # The train split's metrics are taken on a seeded sample of this many rows when it is larger (null: every
    # row): scoring 700,000 train rows took a third of a LightGBM fit's time. Valid and test are always exact.
    train_sample_rows: int | None = 100_000


@dataclass(frozen=True)
class RecipeConfig:
    name: str
    model: ModelConfig
    task: str = "auto"
    preprocessing: PreprocessingConfig = field(default_factory=PreprocessingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    class_weight: Any = "none"  # none | balanced | {label: weight}
    threshold: Any = 0.5  # binary: a probability of the positive class, or auto (chosen on valid)
    threshold_metric: str = "f1"  # what auto maximises: f1, or cost (threshold_costs)
    threshold_costs: dict[str, float] = field(default_factory=lambda: {"false_positive": 1.0, "false_negative": 1.0})
    calibration: str = "none"  # none | isotonic | sigmoid
    calibration_force: bool = False  # keep the calibrator even when the valid Brier score does not improve
    calibration_method: str = "oof"  # oof: fitted on out-of-fold predictions of the train split | holdout
    calibration_folds: int = 5  # oof: cross-fitting folds (cv.folds, when set, brings its own)
    calibration_size: float = 0.2  # holdout: share of the train split held out of the fit to calibrate on
    calibration_bins: int = 10  # bins of the expected calibration error and the reliability diagram


@dataclass(frozen=True)
class MlflowConfig:
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment_name: str = "mmp"
    artifact_location: str | None = "mlruns"


@dataclass(frozen=True)
class ExplainConfig:
    sample_size: int = 2000
    dependence_top_k: int = 5
    max_display: int = 15


@dataclass(frozen=True)
class MonitoringConfig:
    drift_threshold: float = 0.2


@dataclass(frozen=True)
class ComputeConfig:
    """Where the model fits: in this process (local), or on a Dask cluster (dask)."""

    engine: str = "local"  # local | dask
    scheduler_address: str | None = None  # dask: tcp://host:8786 of a running cluster; null starts a local one
    n_workers: int = 2  # dask, local cluster: worker processes
    threads_per_worker: int = 1


@dataclass(frozen=True)
class PathsConfig:
    prepared_dir: str = "data/prepared"
    model_dir: str = "models"
    metrics_file: str = "metrics.json"
    plots_dir: str = "plots"
    explain_dir: str = "explain"


@dataclass(frozen=True)
class Config:
    data: DataConfig
    recipe: RecipeConfig
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    seed: int = 42
    split: SplitConfig = field(default_factory=SplitConfig)
    cv: CvConfig = field(default_factory=CvConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    # Not part of the YAML: where the config came from.
    root: Path = field(default=Path("."), metadata={"internal": True})
    overrides: tuple[str, ...] = field(default=(), metadata={"internal": True})

    def resolve(self, relative: str | Path) -> Path:
        """A config path, resolved against the project root (never the working directory)."""
        path = Path(relative).expanduser()
        return path if path.is_absolute() else self.root / path

    def as_dict(self) -> dict[str, Any]:
        """The YAML-shaped config (what is logged as params and written as the composed config)."""
        return {
            f.name: _to_plain(getattr(self, f.name)) for f in dataclasses.fields(self) if not f.metadata.get("internal")
        }


# --------------------------------------------------------------------------- project layout


# --------------------------------------------------------------------------- composing


# --------------------------------------------------------------------------- validation


def from_dict(raw: dict[str, Any], *, root: Path, overrides: tuple[str, ...] = ()) -> Config:
    """Validate a YAML-shaped mapping into a :class:`Config`; raise ConfigError naming the key."""
    raw = {k: v for k, v in raw.items() if k != "hydra"}
    config = _build(Config, raw, "")
    config = dataclasses.replace(config, root=root, overrides=overrides)
    _check_values(config)
    return config


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {raw!r}; fix the YAML")
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    hints = typing.get_type_hints(cls)
    unknown = [key for key in raw if key not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, fields, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(fields)}"
        raise ConfigError(f"Unknown config key '{_join(where, key)}'; {hint}")
    values = {}
    for name, spec in fields.items():
        path = _join(where, name)
        if name not in raw:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise ConfigError(f"Missing config key '{path}'; add it to the config or recipe")
            continue
        values[name] = _coerce(hints[name], raw[name], path)
    return cls(**values)


def _coerce(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        hint = next(option for option in options if option is not type(None))
        origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if origin is list:
        if value is None:
            return []
        if isinstance(value, str) or not isinstance(value, list):
            raise ConfigError(f"Config key '{path}' must be a list, got {value!r}; write it as [a, b]")
        return [str(item) for item in value]
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"Config key '{path}' must be a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"Config key '{path}' must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"Config key '{path}' must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"Config key '{path}' must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if value is None or isinstance(value, (dict, list)):
            raise ConfigError(f"Config key '{path}' must be a string, got {value!r}")
        if isinstance(value, bool):  # YAML's own spelling, as a boolean column's values read: "true", not "True"
            return "true" if value else "false"
        return str(value)
    return value


def _check_choice(path: str, value: str, choices: typing.Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"Config key '{path}' is '{value}'; choose one of {', '.join(choices)}")


def _check_data_source(data: DataConfig) -> None:
    _check_choice("data.source", data.source, DATA_SOURCES)
    if data.source == "file" and not data.path:
        raise ConfigError("data.path is missing; set it to a CSV or Parquet file (or an s3://, gs://, az:// URL)")
    if data.source == "sql":
        if not (data.uri or data.uri_env) or not (data.sql or data.sql_file):
            raise ConfigError(
                "data.source sql needs data.uri (or data.uri_env) and data.sql (or data.sql_file); set them"
            )
        # A password in the config would be logged with the params and written to params.yaml.
        if data.uri and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/@\s]*:[^@/\s]+@", data.uri):
            raise ConfigError(
                "data.uri holds a password; put the whole URI in .env as a variable and name it in data.uri_env"
            )
    if data.sql_params is not None and (
        not isinstance(data.sql_params, list) or any(isinstance(v, (dict, list)) for v in data.sql_params)
    ):
        raise ConfigError(f"data.sql_params must be a list of values, e.g. [2020, 'EU'], got {data.sql_params!r}")


def _check_values(config: Config) -> None:
    _check_data_source(config.data)
    recipe = config.recipe
    _check_choice("recipe.task", recipe.task, TASKS)
    _check_choice("recipe.preprocessing.categorical_encoding", recipe.preprocessing.categorical_encoding, ENCODINGS)
    _check_choice("recipe.preprocessing.numeric_imputation", recipe.preprocessing.numeric_imputation, IMPUTATIONS)
    _check_choice("recipe.preprocessing.scaling", recipe.preprocessing.scaling, SCALINGS)
    split = config.split
    for key in ("valid_size", "test_size"):
        size = getattr(split, key)
        if not 0.0 < size < 1.0:
            raise ConfigError(f"Config key 'split.{key}' is {size}; use a fraction between 0 and 1")
    _check_choice("split.strategy", split.strategy, SPLIT_STRATEGIES)
    for strategy, key in (("temporal", "time_column"), ("group", "group_column")):
        if split.strategy == strategy and not getattr(split, key):
            raise ConfigError(f"split.strategy {strategy} needs split.{key}; name the column: split.{key}=<column>")
    if config.cv.folds < 0 or config.cv.folds > 100:
        raise ConfigError(f"cv.folds is {config.cv.folds}; use 0 (no cross-validation) or 2 to 100 folds")
    if split.valid_size + split.test_size >= 0.9:
        raise ConfigError("split.valid_size + split.test_size leave under 10% of rows to train on; lower them")
    _check_choice("compute.engine", config.compute.engine, COMPUTE_ENGINES)
    if config.compute.n_workers < 1 or config.compute.threads_per_worker < 1:
        raise ConfigError("compute.n_workers and compute.threads_per_worker must be positive integers")
    _check_class_weight(recipe.class_weight)
    _check_threshold(recipe)
    _check_choice("recipe.calibration", recipe.calibration, CALIBRATIONS)
    _check_choice("recipe.calibration_method", recipe.calibration_method, CALIBRATION_METHODS)
    if not 2 <= recipe.calibration_folds <= 20:
        raise ConfigError(f"recipe.calibration_folds is {recipe.calibration_folds}; use 2 to 20 folds")
    if not 0.0 < recipe.calibration_size < 1.0:
        raise ConfigError(
            f"recipe.calibration_size is {recipe.calibration_size}; use a fraction of the train split between 0 and 1"
        )
    if recipe.calibration_bins < 2:
        raise ConfigError(f"recipe.calibration_bins is {recipe.calibration_bins}; use at least 2 bins")
    if recipe.metrics.train_sample_rows is not None and recipe.metrics.train_sample_rows < 1:
        raise ConfigError(
            "recipe.metrics.train_sample_rows must be a positive number of rows, or null to score every train row"
        )
    if config.explain.sample_size < 1:
        raise ConfigError("explain.sample_size must be a positive number of rows")
    if not config.monitoring.drift_threshold > 0:
        raise ConfigError(
            f"monitoring.drift_threshold is {config.monitoring.drift_threshold}; use a positive PSI, e.g. 0.2"
        )
    if recipe.model.early_stopping_rounds is not None and recipe.model.early_stopping_rounds < 1:
        raise ConfigError("recipe.model.early_stopping_rounds must be a positive integer or null")


def _check_class_weight(value: Any) -> None:
    if isinstance(value, dict):
        for label, weight in value.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < float("inf"):
                raise ConfigError(f"recipe.class_weight.{label} is {weight!r}; class weights must be positive numbers")
        return
    if value not in ("none", "balanced"):
        raise ConfigError(
            f"recipe.class_weight is {value!r}; use none, balanced or a mapping of class label to weight, "
            "e.g. {survived: 3.0}"
        )


def _check_threshold(recipe: RecipeConfig) -> None:
    value = recipe.threshold
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (value == "auto" or (number and 0.0 < value < 1.0)):
        raise ConfigError(f"recipe.threshold is {value!r}; use auto or a probability between 0 and 1, e.g. 0.5")
    _check_choice("recipe.threshold_metric", recipe.threshold_metric, THRESHOLD_METRICS)
    for key, cost in recipe.threshold_costs.items():
        _check_choice("recipe.threshold_costs", key, THRESHOLD_COSTS)
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not 0 <= cost < float("inf"):
            raise ConfigError(f"recipe.threshold_costs.{key} is {cost!r}; use a cost of 0 or more")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, the shape MLflow params take."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def dump_yaml(mapping: dict[str, Any]) -> str:
    return yaml.safe_dump(mapping, sort_keys=False, default_flow_style=False)
