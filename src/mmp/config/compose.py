"""One way to load config: compose ``conf/`` with Hydra overrides (or read the composed ``params.yaml``),
then validate it into :class:`mmp.config.schema.Config`. The CLI, the stage scripts and the sweeps all
come through :func:`load_config`.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Any

import yaml

from mmp.config.schema import Config, from_dict
from mmp.errors import ConfigError

CONFIG_DIR = "conf"
CONFIG_NAME = "config"
PARAMS_FILE = "params.yaml"
CONFIG_ENV = "MMP_CONFIG"  # an environment config merged on top, for `dvc repro` (like -c)


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
