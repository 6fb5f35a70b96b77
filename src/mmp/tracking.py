"""Mirroring stage runs to MLflow: the store, the experiment, runs, params, tags and lineage.

Every stage run is one MLflow run. Runs are linked by tags (``mmp.prepare_run_id`` on a train run,
``mmp.train_run_id`` on later stages) and, inside sweeps, by a parent run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from mmp.config import Config, flatten, tracking_root
from mmp.errors import Pruned, TrackingError
from mmp.outputs import file_lock

log = logging.getLogger(__name__)

TAG_PREFIX = "mmp."
KEY_PACKAGES = (
    "mlflow",
    "dvc",
    "hydra-core",
    "polars",
    "scikit-learn",
    "xgboost",
    "lightgbm",
    "shap",
    "numpy",
    "pandas",
)
_MAX_PARAM_LENGTH = 6000


def resolve_tracking_uri(uri: str, root: Path) -> str:
    """Make a relative local store path absolute against the project root.

    ``sqlite:///mlflow.db`` -> ``sqlite:////<root>/mlflow.db``; ``file:mlruns`` or a bare path
    likewise. Remote URIs are returned unchanged.
    """
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(root / uri[len('sqlite:///') :]).resolve()}"
    if uri.startswith("file:") and not uri.startswith("file:///"):
        return (root / uri[len("file:") :].lstrip("/")).resolve().as_uri()
    if "://" not in uri and ":" not in uri.split("/")[0]:
        return (root / uri).resolve().as_uri()
    return uri


def load_dotenv(root: Path) -> None:
    """Load ``.env`` from the project root into the environment (never overriding what is set)."""
    env_file = root / ".env"
    if env_file.is_file():
        from dotenv import load_dotenv as _load

        _load(env_file, override=False)


def setup(config: Config) -> str:
    """Point MLflow at the configured store and experiment; return the experiment id."""
    store_root = tracking_root(config.root)
    load_dotenv(store_root)
    # Fail in seconds, not minutes, when a tracking server is unreachable.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    uri = resolve_tracking_uri(config.mlflow.tracking_uri, store_root)
    mlflow.set_tracking_uri(uri)
    try:
        with _store_lock(uri):
            experiment_id = _experiment_id(config, uri, store_root)
        mlflow.set_experiment(experiment_id=experiment_id)
    except mlflow.exceptions.MlflowException as exc:
        raise TrackingError(_tracking_failure(uri, exc)) from None
    return experiment_id


def _experiment_id(config: Config, uri: str, store_root: Path) -> str:
    """The configured experiment's id, created (with mmp's artifact location) on first use."""
    import mlflow

    name = config.mlflow.experiment_name
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    artifact_location = None
    if config.mlflow.artifact_location and not uri.startswith(("http://", "https://", "databricks")):
        artifact_location = (store_root / config.mlflow.artifact_location / _safe(name)).resolve().as_uri()
    try:
        return str(mlflow.create_experiment(name, artifact_location=artifact_location))
    except mlflow.exceptions.MlflowException:
        # Another process (a remote client, or a job without the file lock) created it first.
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise the first use of a SQLite store across processes.

    MLflow creates and migrates the schema of a new mlflow.db on first use; parallel sweep jobs or
    queued DVC experiments doing that at once corrupt it ("duplicate column", alembic version errors).
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    database = Path(uri[len("sqlite:///") :])
    with file_lock(database.with_name(database.name + ".lock")):
        yield


def _tracking_failure(uri: str, exc: Exception) -> str:
    text = " ".join(str(exc).split())
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if "401" in text or "Unauthorized" in text:
        return f"MLflow at {uri} refused the credentials of user '{user}'; fix MLFLOW_TRACKING_PASSWORD in .env"
    if "403" in text or "Permission" in text:
        return f"User '{user}' may not write to the experiment at {uri}; ask an admin for EDIT permission"
    if "Max retries" in text or "Connection" in text or "timed out" in text.lower():
        return f"MLflow server {uri} is unreachable; start it or fix mlflow.tracking_uri"
    return f"MLflow store {uri} failed: {text[:300]}"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


# --------------------------------------------------------------------------- tags and params


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


def dvc_tags() -> dict[str, str]:
    names = {
        "DVC_EXP_NAME": "dvc.exp_name",
        "DVC_EXP_BASELINE_REV": "dvc.exp_baseline_rev",
        "DVC_STAGE": "dvc.stage",
    }
    return {f"{TAG_PREFIX}{tag}": os.environ[var] for var, tag in names.items() if os.environ.get(var)}


def effective_overrides(config: Config) -> list[str]:
    """The Hydra overrides that produced this config.

    When mmp composed the config itself it knows them. Under ``dvc repro``/``dvc exp run`` it reads
    params.yaml, so it reports how params.yaml differs from conf/'s defaults instead.
    """
    if config.overrides:
        return list(config.overrides)
    from mmp.config import compose

    # A recipe or data set that exists under conf/ is reported as the choice (recipe=lgbm-tuned);
    # values are then compared with that choice's own defaults.
    choices = [
        f"{group}={name}"
        for group, name in (("recipe", config.recipe.name), ("data", config.data.name))
        if (config.root / "conf" / group / f"{name}.yaml").is_file()
    ]
    try:
        defaults = flatten(compose(config.root, choices))
        default_choices = _default_choices(config.root)
    except Exception:  # a best-effort tag must never fail a run
        return []
    choices = [choice for choice in choices if default_choices.get(choice.split("=")[0]) != choice.split("=")[1]]
    current = flatten(config.as_dict())
    changed = [f"{key}={value}" for key, value in current.items() if defaults.get(key, object()) != value]
    changed += [f"~{key}" for key in defaults if key not in current]
    return choices + changed


def _default_choices(root: Path) -> dict[str, str]:
    """The group choices of conf/config.yaml's defaults list ({"recipe": "xgb-baseline", ...})."""
    import yaml

    defaults = yaml.safe_load((root / "conf" / "config.yaml").read_text(encoding="utf-8")).get("defaults", [])
    return {key: str(value) for entry in defaults if isinstance(entry, dict) for key, value in entry.items()}


def params_of(config: Config) -> dict[str, str]:
    """The flattened composed config, as MLflow params (paths and tracking settings left out)."""
    flat = flatten({k: v for k, v in config.as_dict().items() if k not in ("mlflow", "paths")})
    return {key: str(value)[:_MAX_PARAM_LENGTH] for key, value in flat.items()}


# --------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class RunContext:
    """Where a stage run sits: its parent (a sweep or a job's train run) and extra tags (sweep id, job)."""

    parent_run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


def common_tags(config: Config, stage: str) -> dict[str, str]:
    """The tags of every mmp run: stage, recipe, data, overrides, source, git, DVC and versions."""
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
    }


@contextlib.contextmanager
def stage_run(
    config: Config,
    stage: str,
    *,
    tags: dict[str, str] | None = None,
    context: RunContext | None = None,
) -> Iterator[Any]:
    """One MLflow run for one stage execution; FAILED (never RUNNING) if the stage raises."""
    import mlflow

    setup(config)
    run_tags = {**common_tags(config, stage), **(tags or {})}
    if context:
        run_tags.update(context.tags)
        if context.parent_run_id:
            run_tags["mlflow.parentRunId"] = context.parent_run_id
    run_name = f"{stage}-{config.recipe.name}"
    if job := run_tags.get(f"{TAG_PREFIX}sweep_job"):
        run_name = f"{run_name}-job{job}"
    if exp_name := os.environ.get("DVC_EXP_NAME"):
        run_name = f"{run_name}-{exp_name}"
    try:
        run = mlflow.start_run(run_name=run_name, tags=run_tags)
    except mlflow.exceptions.MlflowException as exc:
        raise TrackingError(_tracking_failure(mlflow.get_tracking_uri(), exc)) from None
    try:
        mlflow.log_params(params_of(config))
        yield run
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, (KeyboardInterrupt, Pruned)) else "FAILED"
        if isinstance(exc, Pruned):
            exc.run_id = run.info.run_id
            with contextlib.suppress(Exception):
                mlflow.set_tag(f"{TAG_PREFIX}pruned", "true")
        with contextlib.suppress(Exception):
            mlflow.set_tag(f"{TAG_PREFIX}error", " ".join(str(exc).split())[:1000])
        with contextlib.suppress(Exception):
            mlflow.end_run(status=status)
        raise
    else:
        mlflow.end_run(status="FINISHED")


def log_dataset(path: Path, digest: str, name: str, context: str, schema_frame: Any = None) -> None:
    """Record a data file as an MLflow dataset input of the active run."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    schema = None
    if schema_frame is not None:
        from mlflow.types.utils import _infer_schema

        schema = _infer_schema(schema_frame)
    with warnings.catch_warnings():
        # Local paths match two equivalent source classes; MLflow warns and picks one.
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(path.resolve()))
    dataset = MetaDataset(source=source, name=name, digest=digest, schema=schema)
    mlflow.log_input(dataset, context=context)


def run_url(run: Any) -> str:
    """The run's address in the UI, for messages ('#/experiments/<id>/runs/<id>')."""
    return f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"


def current_command() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
