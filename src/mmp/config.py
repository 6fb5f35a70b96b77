"""Loading, composing and validating the mmp config.

The config tree lives in ``conf/`` (Hydra); recipes in ``recipes/`` are its ``recipe`` group.
``dvc repro`` reads the composed copy in ``params.yaml``; the CLI and ad-hoc stage runs compose
``conf/`` with overrides. Either way the result is validated into the typed :class:`Config`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmp.errors import ConfigError

CONFIG_DIR = "conf"
CONFIG_NAME = "config"
PARAMS_FILE = "params.yaml"
CONFIG_ENV = "MMP_CONFIG"  # an environment config merged on top, for `dvc repro` (like -c)
TASKS = ("auto", "binary", "multiclass", "regression")
ENCODINGS = ("auto", "native", "onehot", "ordinal")
IMPUTATIONS = ("auto", "none", "median", "mean", "zero")
SCALINGS = ("auto", "standard", "none")


@dataclass(frozen=True)
class DataConfig:
    name: str
    path: str
    target: str
    positive_class: str | None = None
    id_columns: list[str] = field(default_factory=list)
    drop_columns: list[str] = field(default_factory=list)
    categorical_columns: list[str] = field(default_factory=list)
    query: str | None = None


@dataclass(frozen=True)
class SplitConfig:
    valid_size: float = 0.15
    test_size: float = 0.15
    stratify: bool = True


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


@dataclass(frozen=True)
class RecipeConfig:
    name: str
    model: ModelConfig
    task: str = "auto"
    preprocessing: PreprocessingConfig = field(default_factory=PreprocessingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


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
    paths: PathsConfig = field(default_factory=PathsConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
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


def project_root(start: Path | None = None) -> Path:
    """The project (workspace) root: the nearest folder holding ``conf/config.yaml``.

    ``MMP_PROJECT_ROOT`` overrides the search. Inside a DVC experiment's temporary copy this is
    the copy, which holds the data and outputs of that experiment.
    """
    if env_root := os.environ.get("MMP_PROJECT_ROOT"):
        return Path(env_root).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_DIR / f"{CONFIG_NAME}.yaml").is_file():
            return folder
    raise ConfigError(
        f"No mmp project found at or above {here} (no {CONFIG_DIR}/{CONFIG_NAME}.yaml); "
        "run mmp from the project root or set MMP_PROJECT_ROOT"
    )


def tracking_root(workspace: Path) -> Path:
    """Where the project's own MLflow store lives, also when DVC runs in a temporary copy.

    Queued and ``--temp`` experiments run in copies under ``.dvc/tmp/exps``; DVC points
    ``DVC_ROOT`` at the parent repository for them. Runs must land in the parent's store.
    """
    parts = workspace.resolve().parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    dvc_root = os.environ.get("DVC_ROOT")
    if dvc_root and Path(dvc_root).resolve() != workspace.resolve() and (Path(dvc_root) / CONFIG_DIR).is_dir():
        return Path(dvc_root).resolve()
    return workspace


# --------------------------------------------------------------------------- composing


def compose(root: Path, overrides: typing.Sequence[str] = ()) -> dict[str, Any]:
    """Compose ``conf/`` with Hydra overrides, resolved, exactly as ``dvc exp run`` does."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(str(root / CONFIG_DIR), version_base=None):
            cfg = hydra_compose(config_name=CONFIG_NAME, overrides=list(overrides))
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_hydra_message(exc, root)) from None
    return typing.cast(dict[str, Any], OmegaConf.to_container(cfg))


def _hydra_message(exc: Exception, root: Path) -> str:
    import re

    message = " ".join(str(exc).split())
    if match := re.search(r"Could not find '(\w+)/([^']+)'", message):
        group, option = match.groups()
        folder = root / ("recipes" if group == "recipe" else f"{CONFIG_DIR}/{group}")
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        extra = "; or pass a recipe file with -r PATH" if group == "recipe" else ""
        return f"Unknown {group} '{option}'; known: {known}{extra}"
    if match := re.search(r"Could not override '([^']+)'", message):
        key = match.group(1)
        return f"Unknown config key '{key}' in override; fix the typo, or write +{key}=... to add a new key"
    return f"Bad override or config: {message.split(' Config search path')[0]}"


def read_yaml(path: Path, what: str) -> dict[str, Any]:
    """Read a YAML mapping, with a clear error if it is missing or malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist; check the path") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read ({exc.strerror}); check its permissions") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{what} {path} is not valid YAML{where}; fix its syntax") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {path} must hold a YAML mapping, not a {type(loaded).__name__}")
    return loaded


def load_config(
    overrides: typing.Sequence[str] = (),
    *,
    config_file: str | Path | None = None,
    recipe_file: str | Path | None = None,
    data_path: str | None = None,
    from_params: bool = False,
    root: Path | None = None,
) -> Config:
    """Build the validated config.

    ``from_params`` reads the composed ``params.yaml`` (what ``dvc repro`` runs); otherwise
    ``conf/`` is composed with ``overrides``. Then ``config_file`` (by default the file named by
    ``$MMP_CONFIG``, which is how DVC stages get an environment config) is merged on top,
    ``recipe_file`` replaces the recipe, ``data_path`` replaces ``data.path``, and dotted overrides
    are applied again so that they win over the files.
    """
    root = root or project_root()
    if not config_file and (from_env := os.environ.get(CONFIG_ENV)):
        config_file = root / from_env  # relative to the project root, wherever DVC runs the stage
    if from_params:
        raw = read_yaml(root / PARAMS_FILE, "Params file")
    else:
        files = bool(config_file or recipe_file)
        raw = compose(root, [o for o in overrides if not (files and _is_value_override(o, root))])
    if config_file:
        raw = _deep_merge(raw, read_yaml(Path(config_file), "Config file"))
    if recipe_file:
        recipe = read_yaml(Path(recipe_file), "Recipe file")
        recipe.setdefault("name", Path(recipe_file).stem)
        raw["recipe"] = recipe
    if data_path:
        raw.setdefault("data", {})["path"] = str(Path(data_path).expanduser().resolve())
    if config_file or recipe_file:
        for override in overrides:
            if _is_value_override(override, root):
                key, value = override.lstrip("+").split("=", 1)
                _set_dotted(raw, key, yaml.safe_load(value) if value else None)
    return from_dict(raw, root=root, overrides=tuple(overrides))


def _is_value_override(override: str, root: Path) -> bool:
    """``a.b=1`` or ``seed=1`` set values; ``recipe=lgbm-tuned`` picks a config group option."""
    key = override.split("=", 1)[0].lstrip("+~")
    return "=" in override and ("." in key or not (root / CONFIG_DIR / key).is_dir())


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


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
        return str(value)
    return value


def _check_choice(path: str, value: str, choices: typing.Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"Config key '{path}' is '{value}'; choose one of {', '.join(choices)}")


def _check_values(config: Config) -> None:
    from mmp.models import check_model_name

    recipe = config.recipe
    _check_choice("recipe.task", recipe.task, TASKS)
    _check_choice("recipe.preprocessing.categorical_encoding", recipe.preprocessing.categorical_encoding, ENCODINGS)
    _check_choice("recipe.preprocessing.numeric_imputation", recipe.preprocessing.numeric_imputation, IMPUTATIONS)
    _check_choice("recipe.preprocessing.scaling", recipe.preprocessing.scaling, SCALINGS)
    check_model_name(recipe.model.name)
    split = config.split
    for key in ("valid_size", "test_size"):
        size = getattr(split, key)
        if not 0.0 < size < 1.0:
            raise ConfigError(f"Config key 'split.{key}' is {size}; use a fraction between 0 and 1")
    if split.valid_size + split.test_size >= 0.9:
        raise ConfigError("split.valid_size + split.test_size leave under 10% of rows to train on; lower them")
    if config.explain.sample_size < 1:
        raise ConfigError("explain.sample_size must be a positive number of rows")
    if recipe.model.early_stopping_rounds is not None and recipe.model.early_stopping_rounds < 1:
        raise ConfigError("recipe.model.early_stopping_rounds must be a positive integer or null")


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
