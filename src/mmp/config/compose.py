"""One way to load config: Hydra composes ``conf/`` (or the composed ``params.yaml``) with the
overrides, then :func:`mmp.config.schema.from_dict` validates it into a :class:`Config`.

The CLI, the stage scripts and the sweeps all come through :func:`compose` / :func:`load_config`.
The files given on the command line join the same composition, so an override behaves the same on
every route:

- ``-c FILE`` (or ``$MMP_CONFIG``): an environment config, appended to the defaults list after
  ``conf/config.yaml`` itself, so it is merged on top of everything ``conf/`` composes;
- ``-r FILE``: a recipe, chosen as an option of the ``recipe`` group (it replaces the recipe whole);
- ``-d FILE``: a neutral option of the ``data`` group (named after the file, no other data set's
  columns), unless ``data=<name>`` is given too, and then it only sets that data set's path;
- dotted overrides are applied by Hydra after all of that, so they win over every file.

The files become nodes of Hydra's ConfigStore for the time of one composition.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import typing
from pathlib import Path
from typing import Any

import yaml

from mmp.config.schema import Config, from_dict
from mmp.errors import ConfigError
from mmp.files import scan_table
from mmp.redaction import redact

CONFIG_DIR = "conf"
CONFIG_NAME = "config"
PARAMS_FILE = "params.yaml"
CONFIG_ENV = "MMP_CONFIG"  # an environment config merged on top, for `dvc repro` (like -c)

OPEN_MAPPINGS = ("recipe.model.params",)  # keys that take any name: the model registry checks them
_FILE_OPTION = "_mmp_file"  # the -r recipe / the -d data set, as an option of its group
_PARAMS_NAME = "_mmp_params"  # params.yaml, as the primary config
_ENV_GROUP = "_mmp_env"  # -c FILE / $MMP_CONFIG, merged on top (package _global_)
_CLI_GROUP = "_mmp_cli"  # what -d sets, merged last (before the dotted overrides)
_LOCK = threading.Lock()  # Hydra's global state and the ConfigStore entries are per process


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


# --------------------------------------------------------------------------- overrides


def hydra_overrides(overrides: typing.Sequence[str]) -> list[str]:
    """The overrides as Hydra is given them: a key under an open mapping (``recipe.model.params``) is
    added if it is not there yet (``++``), so that a hyperparameter's name is checked by the model
    registry, which knows the library and suggests the right name, rather than refused by Hydra.

    Sweeps that launch Hydra themselves should pass their overrides through this too.
    """
    rewritten = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+")
        if "=" in override and not override.startswith("~") and key.startswith(tuple(f"{m}." for m in OPEN_MAPPINGS)):
            override = "++" + override.lstrip("+")
        rewritten.append(override)
    return rewritten


def _chosen_groups(overrides: typing.Sequence[str]) -> set[str]:
    """The config groups an override list picks an option of (``data=penguins`` -> ``data``)."""
    return {o.split("=", 1)[0].lstrip("+") for o in overrides if "=" in o and not o.startswith("~")}


# --------------------------------------------------------------------------- composing


def compose(
    root: Path,
    overrides: typing.Sequence[str] = (),
    *,
    config_file: str | Path | None = None,
    recipe_file: str | Path | None = None,
    data_path: str | Path | None = None,
    from_params: bool = False,
) -> dict[str, Any]:
    """Compose ``conf/`` (or, with ``from_params``, the composed ``params.yaml``) with Hydra, resolved.

    With no files, this is what ``dvc exp run -S ...`` writes to params.yaml (except that a key under
    ``recipe.model.params`` needs no ``+``). ``config_file``, ``recipe_file`` and ``data_path``
    (relative to the working directory) join the composition as described in the module docstring.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    chosen = _chosen_groups(overrides)
    nodes: list[tuple[str | None, str, dict[str, Any], str | None]] = []  # (group, name, node, package)
    choices: list[str] = []
    primary = CONFIG_NAME
    params: dict[str, Any] | None = None
    if from_params:
        params = read_yaml(root / PARAMS_FILE, "Params file")
        primary = _PARAMS_NAME

    def choose(group: str, node: dict[str, Any]) -> None:
        nodes.append((group, _FILE_OPTION, node, None))
        if params is None:
            choices.append(f"{group}={_FILE_OPTION}")
        else:  # params.yaml has no defaults list: its own section gives way to the group option
            params.pop(group, None)
            choices.append(f"+{group}={_FILE_OPTION}")

    if recipe_file:
        if "recipe" in chosen:
            raise ConfigError("Both -r FILE and recipe=<name> choose the recipe; give only one of them")
        recipe = read_yaml(Path(recipe_file), "Recipe file")
        recipe.setdefault("name", Path(recipe_file).stem)
        choose("recipe", recipe)
    data_file = Path(data_path).expanduser().resolve() if data_path else None
    if data_file and "data" not in chosen:
        choose("data", _neutral_data(data_file))
    if config_file:
        nodes.append((_ENV_GROUP, "file", read_yaml(Path(config_file), "Config file"), "_global_"))
        choices.append(f"+{_ENV_GROUP}=file")
    if data_file:  # -d wins over the environment config's data.path
        nodes.append((_CLI_GROUP, "args", {"data": {"path": str(data_file)}}, "_global_"))
        choices.append(f"+{_CLI_GROUP}=args")
    if params is not None:
        nodes.append((None, _PARAMS_NAME, params, None))

    store = ConfigStore.instance()
    with _LOCK:
        for group, name, node, package in nodes:
            store.store(name=name, node=node, group=group, package=package)
        try:
            with initialize_config_dir(str((root / CONFIG_DIR).resolve()), version_base=None):
                cfg = hydra_compose(config_name=primary, overrides=[*choices, *hydra_overrides(overrides)])
            if data_file and "data" in cfg and OmegaConf.is_missing(cfg.data, "target"):
                cfg.data.target = _default_target(str(data_path), data_file)
            OmegaConf.resolve(cfg)
        except (HydraException, OmegaConfBaseException) as exc:
            raise ConfigError(_hydra_message(exc, root)) from None
        finally:
            for group, name, _, _ in nodes:
                _forget(store.repo, group, name)
    return typing.cast(dict[str, Any], OmegaConf.to_container(cfg))


def _forget(repo: dict[str, Any], group: str | None, name: str) -> None:
    """Take one of our nodes out of the ConfigStore again (and its group, if ours and now empty)."""
    folder = repo.get(group, {}) if group else repo
    folder.pop(f"{name}.yaml", None)
    if group and group.startswith("_mmp_") and not folder:
        repo.pop(group, None)


def _neutral_data(path: Path) -> dict[str, Any]:
    """``-d FILE`` alone: a data set of its own, with none of the default data set's settings."""
    return {
        "name": path.stem,
        "path": str(path),
        "target": "???",  # named by data.target=..., or 'target' when the file has that column
        "positive_class": None,
        "id_columns": [],
        "drop_columns": [],
        "categorical_columns": [],
        "query": None,
    }


def _default_target(given: str, path: Path) -> str:
    columns = _data_columns(path)
    if "target" in columns:
        return "target"
    shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
    raise ConfigError(
        f"-d {given} needs its target column: add data.target=<column> "
        f"(the file has no column named 'target'; its columns: {shown})"
    )


def _data_columns(path: Path) -> list[str]:
    """The column names of a CSV or Parquet file, read from its header."""
    return scan_table(path, ConfigError).collect_schema().names()


def _hydra_message(exc: Exception, root: Path) -> str:
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


# --------------------------------------------------------------------------- YAML files


class _Yaml12Loader(yaml.SafeLoader):
    """YAML read as Hydra reads ``conf/`` (floats such as ``1e-3``, dates stay text, no duplicate keys),
    except that only ``true``/``false`` are booleans, as in YAML 1.2: ``yes``, ``no``, ``on`` and
    ``off`` stay text, as they do in Hydra overrides and in the params.yaml that DVC writes.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key '{key_node.value}'",
                        key_node.start_mark,
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


_BOOL, _FLOAT, _TIMESTAMP = (f"tag:yaml.org,2002:{t}" for t in ("bool", "float", "timestamp"))
_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL, _TIMESTAMP)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Yaml12Loader.add_implicit_resolver(  # OmegaConf's: 1e-3 is a number, as in conf/
    _FLOAT,
    re.compile(
        r"""^(?:[-+]?[0-9]+(?:_[0-9]+)*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9]+(?:_[0-9]+)*(?:[eE][-+]?[0-9]+)
        |\.[0-9]+(?:_[0-9]+)*(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """Parse YAML text the way mmp reads every config file (see :class:`_Yaml12Loader`)."""
    return yaml.load(text, Loader=_Yaml12Loader)  # a SafeLoader subclass


def read_yaml(path: Path, what: str) -> dict[str, Any]:
    """Read a YAML mapping, with a clear error if it is missing or malformed.

    ``yes``/``no``/``on``/``off`` stay strings (YAML 1.2 booleans are only ``true`` and ``false``).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist; check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a folder; give the path of a YAML file") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read ({exc.strerror}); check its permissions") from None
    try:
        loaded = parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None)
        detail = f" ({problem})" if problem else ""
        raise ConfigError(f"{what} {path} is not valid YAML{where}{detail}; fix its syntax") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {path} must hold a YAML mapping, not a {type(loaded).__name__}")
    return loaded


# --------------------------------------------------------------------------- the config


def load_config(
    overrides: typing.Sequence[str] = (),
    *,
    config_file: str | Path | None = None,
    recipe_file: str | Path | None = None,
    data_path: str | Path | None = None,
    from_params: bool = False,
    root: Path | None = None,
) -> Config:
    """Build the validated config.

    ``from_params`` starts from the composed ``params.yaml`` (what ``dvc repro`` runs); otherwise from
    ``conf/``. ``config_file`` (by default the file named by ``$MMP_CONFIG``, relative to the project
    root: how DVC stages get an environment config) is merged on top, ``recipe_file`` replaces the
    recipe, ``data_path`` is the data file (see :func:`compose`), and the overrides win over all of them.
    """
    root = root or project_root()
    if not config_file and (from_env := os.environ.get(CONFIG_ENV)):
        config_file = root / from_env  # relative to the project root, wherever DVC runs the stage
    raw = compose(
        root,
        overrides,
        config_file=config_file,
        recipe_file=recipe_file,
        data_path=data_path,
        from_params=from_params,
    )
    if isinstance(raw.get("mlflow"), dict):
        raw["mlflow"] = tracking_settings(raw["mlflow"], root)
    return from_dict(raw, root=root, overrides=tuple(overrides))


# --------------------------------------------------------------------------- the tracking store

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
# mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; mmp notes here what it set, so that its own choice
# (inherited by the next config loaded in this process, or by a child process) is not taken for the user's.
OWN_TRACKING_URI_ENV = "MMP_OWN_TRACKING_URI"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# MMP 1.x's local default: an MLflow file store in ./mlruns, which MLflow 3 refuses (maintenance mode).
LEGACY_FILE_STORES = {f"{scheme}{path}" for scheme in ("", "file:") for path in ("mlruns", "./mlruns")}
_noticed: set[str] = set()  # notices are printed once per process (sweeps load the config per job)


def tracking_settings(mlflow: dict[str, Any], root: Path) -> dict[str, Any]:
    """The ``mlflow`` section with the store it will really use.

    ``MLFLOW_TRACKING_URI`` (environment, or the project's ``.env``) wins over the config, as it does for
    every MLflow client. MMP 1.x's ``./mlruns`` file store becomes the default local store: SQLite
    ``mlflow.db`` at the project root, artifacts under ``mlruns/`` (``mmp migrate-store`` moves old runs).
    Each substitution prints one notice line.
    """
    configured = str(mlflow.get("tracking_uri") or DEFAULT_TRACKING_URI)
    from_env = os.environ.get(TRACKING_URI_ENV)
    if from_env and from_env == os.environ.get(OWN_TRACKING_URI_ENV):
        from_env = None
    from_env = from_env or _dotenv_value(root, TRACKING_URI_ENV)
    if from_env and from_env != configured:
        _notice(
            f"{TRACKING_URI_ENV} is set: runs go to {redact(from_env)}, not mlflow.tracking_uri ({redact(configured)})"
        )
    uri = from_env or configured
    if uri.rstrip("/") in LEGACY_FILE_STORES:
        _notice(
            f"tracking_uri {uri} is MMP 1.x's file store; using the default local store instead: "
            f"{DEFAULT_TRACKING_URI} at the project root, artifacts under mlruns/"
        )
        return {
            **mlflow,
            "tracking_uri": DEFAULT_TRACKING_URI,
            "artifact_location": mlflow.get("artifact_location") or "mlruns",
        }
    return {**mlflow, "tracking_uri": uri}


def _dotenv_value(root: Path, key: str) -> str | None:
    env_file = root / ".env"
    if not env_file.is_file():
        return None
    from dotenv import dotenv_values

    return dotenv_values(env_file).get(key)


def _notice(message: str) -> None:
    if message not in _noticed:
        _noticed.add(message)
        logging.getLogger("mmp").warning(message)
