"""What every run records about itself: tags (stage, recipe, data, git, DVC, versions) and params."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import subprocess
import sys
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from mmp.config import Config, flatten
from mmp.redaction import redact

TAG_PREFIX = "mmp."


KEY_PACKAGES = (
    "mlflow",
    "dvc",
    "hydra-core",
    "polars",
    "scikit-learn",
    "xgboost",
    "lightgbm",
    "catboost",
    "shap",
    "numpy",
    "pandas",
)


_MAX_PARAM_LENGTH = 6000


def git_tags(root: Path) -> dict[str, str]:
    """Commit, branch and dirty flag of the project's git checkout (empty outside git)."""

    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    tags = {"mlflow.source.git.commit": commit}
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    if branch:
        tags["mlflow.source.git.branch"] = branch
    status = git("status", "--porcelain", "--untracked-files=no")
    if status is not None:
        tags[f"{TAG_PREFIX}git.dirty"] = str(bool(status)).lower()
    return tags


def environment_tags() -> dict[str, str]:
    tags = {f"{TAG_PREFIX}python": platform.python_version()}
    for package in KEY_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            tags[f"{TAG_PREFIX}version.{package}"] = metadata.version(package)
    with contextlib.suppress(metadata.PackageNotFoundError):
        tags[f"{TAG_PREFIX}version.mmp"] = metadata.version("mmp")
    return tags


EXPS_TAG = f"{TAG_PREFIX}dvc.exps"  # " name1 name2 ": the DVC experiments whose outputs a run produced
EXECUTION_TAG = f"{TAG_PREFIX}execution"  # what the stage runs of one pipeline execution share
EXECUTION_ENV = "MMP_EXECUTION"


def dvc_tags() -> dict[str, str]:
    names = {
        "DVC_EXP_NAME": "dvc.exp_name",
        "DVC_EXP_BASELINE_REV": "dvc.exp_baseline_rev",
        "DVC_STAGE": "dvc.stage",
    }
    tags = {f"{TAG_PREFIX}{tag}": os.environ[var] for var, tag in names.items() if os.environ.get(var)}
    if name := os.environ.get("DVC_EXP_NAME"):
        tags[EXPS_TAG] = f" {name} "  # padded, so `LIKE '% name %'` matches whole names; restores append
    return tags


def execution_id() -> str | None:
    """The id that the stages of one pipeline execution share, so their runs find one parent run.

    ``MMP_EXECUTION`` when set (``mmp train`` sets it for its three stages and their recorders); under DVC,
    the process that launched the stage: DVC runs every stage of one ``dvc repro`` / ``dvc exp run`` (and
    of each queued experiment) from one process, which gives the stages no shared id of its own, but is the
    nearest ancestor whose environment has no ``DVC_STAGE``. None for a stage run by hand.
    """
    if value := os.environ.get(EXECUTION_ENV):
        return value
    if not os.environ.get("DVC_STAGE"):
        return None
    from mmp.tracking.orphans import process_started

    pid = os.getppid()
    for _ in range(16):  # stage script <- (shell) <- DVC; a recorder adds one level
        if pid <= 1:
            return None
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return None  # no /proc: each stage stands alone
        if not any(entry.startswith(b"DVC_STAGE=") for entry in environ):
            started = process_started(pid)
            return f"dvc:{platform.node()}:{pid}:{started}" if started else None
        pid = _parent_pid(pid)
    return None


@contextlib.contextmanager
def execution(source: str) -> Iterator[None]:
    """Stages run inside the block (and their recorder processes) join one pipeline run."""
    previous = os.environ.get(EXECUTION_ENV)
    os.environ[EXECUTION_ENV] = f"{source}:{uuid.uuid4().hex}"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(EXECUTION_ENV, None)
        else:
            os.environ[EXECUTION_ENV] = previous


def _parent_pid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return 0
    fields = stat[stat.rfind(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return int(fields[1]) if len(fields) > 1 else 0


def effective_overrides(config: Config) -> list[str]:
    """The Hydra overrides that produced this config.

    When mmp composed the config itself it knows them. Under ``dvc repro``/``dvc exp run`` it reads
    params.yaml, so it reports how params.yaml differs from conf/'s defaults instead.
    """
    if config.overrides:
        return list(config.overrides)
    # A recipe or data set that exists under conf/ is reported as the choice (recipe=lgbm-tuned);
    # values are then compared with that choice's own defaults.
    choices = [
        f"{group}={name}"
        for group, name in (("recipe", config.recipe.name), ("data", config.data.name))
        if (config.root / "conf" / group / f"{name}.yaml").is_file()
    ]
    try:
        defaults = _composed_defaults(config.root, tuple(choices))
        default_choices = _default_choices(config.root)
    except Exception:  # a best-effort tag must never fail a run
        return []
    choices = [choice for choice in choices if default_choices.get(choice.split("=")[0]) != choice.split("=")[1]]
    current = flatten(config.as_dict())
    changed = [f"{key}={value}" for key, value in current.items() if defaults.get(key, object()) != value]
    changed += [f"~{key}" for key in defaults if key not in current]
    return choices + changed


@functools.lru_cache(maxsize=16)
def _composed_defaults(root: Path, choices: tuple[str, ...]) -> dict[str, Any]:
    """conf/'s defaults with these group choices, flattened; composed once per process (each of `mmp train`'s
    three stages and every sweep job asks; Hydra takes 0.3-1 s a time). Read-only for callers."""
    from mmp.config import compose, from_dict

    # Validated, so that keys conf/ leaves to the schema's defaults compare equal to the run's config.
    return flatten(from_dict(compose(root, list(choices)), root=root).as_dict())


def _default_choices(root: Path) -> dict[str, str]:
    """The group choices of conf/config.yaml's defaults list ({"recipe": "xgb-baseline", ...})."""
    import yaml

    defaults = yaml.safe_load((root / "conf" / "config.yaml").read_text(encoding="utf-8")).get("defaults", [])
    return {key: str(value) for entry in defaults if isinstance(entry, dict) for key, value in entry.items()}


def params_of(config: Config) -> dict[str, str]:
    """The flattened composed config, as MLflow params (paths and tracking settings left out)."""
    flat = flatten({k: v for k, v in config.as_dict().items() if k not in ("mlflow", "paths")})
    return {key: str(value)[:_MAX_PARAM_LENGTH] for key, value in flat.items()}


def common_tags(config: Config, stage: str) -> dict[str, str]:
    """The tags of every mmp run: stage, recipe, data, overrides, source, git, DVC, versions and the owning
    process (:mod:`.orphans`)."""
    from mmp.tracking.orphans import owner_tags

    script = f"stages/{stage}.py"
    return {
        f"{TAG_PREFIX}stage": stage,
        f"{TAG_PREFIX}recipe": config.recipe.name,
        f"{TAG_PREFIX}data": config.data.name,
        f"{TAG_PREFIX}overrides": " ".join(effective_overrides(config))[:5000],
        "mlflow.source.name": script if (config.root / script).is_file() else current_command(),
        **git_tags(config.root),
        **dvc_tags(),
        **environment_tags(),
        **owner_tags(),
    }


def run_name(config: Config, stage: str, run_tags: dict[str, str]) -> str:
    """``train · lgbm-tuned · penguins``, then the sweep job or DVC experiment when there is one."""
    parts = [stage, config.recipe.name, config.data.name]
    if job := run_tags.get(f"{TAG_PREFIX}sweep_job"):
        parts.append(f"job {job}")
    if exp_name := os.environ.get("DVC_EXP_NAME"):
        parts.append(exp_name)
    return " · ".join(parts)


def loggable_config(config: Config) -> dict[str, Any]:
    """The composed config as logged to MLflow (``config.yaml``): credentials in a URI masked."""
    raw = config.as_dict()
    raw["mlflow"] = {**raw["mlflow"], "tracking_uri": redact(raw["mlflow"]["tracking_uri"])}
    return raw


def current_command() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
