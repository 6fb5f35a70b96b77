"""Mirroring stage runs to MLflow: the store, the experiment, runs, params, tags and lineage.

Every stage run is one MLflow run. Runs are linked by tags (``mmp.prepare_run_id`` on a train run,
``mmp.train_run_id`` on later stages) and, inside sweeps, by a parent run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmp.config import Config, flatten, tracking_root
from mmp.errors import Pruned, TrackingError
from mmp.outputs import file_lock
from mmp.redaction import redact

if TYPE_CHECKING:
    from mmp.recorder import RecordedRun, Recorder

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
    # Fail in seconds, not minutes, when a tracking server is unreachable (3 tries, 2 s apart).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
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
    except Exception as exc:  # everything here talks to the store: any failure is the store's
        raise TrackingError(describe_failure(uri, exc, config.mlflow.experiment_name)) from None
    return experiment_id


def preflight(config: Config) -> None:
    """Fail at once on a tracking server that is down or refuses our login: one plain HTTP request.

    Stages call this before any data work. It does not import MLflow (seconds), which meanwhile loads
    in the background while the stage reads its data; local stores need no check here.
    """
    store_root = tracking_root(config.root)
    load_dotenv(store_root)
    uri = resolve_tracking_uri(config.mlflow.tracking_uri, store_root)
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    name = config.mlflow.experiment_name
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    headers = {}
    if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    verify: bool | str = os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() != "true"
    if verify and (cert := os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")):
        verify = cert
    try:
        response = requests.get(
            f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/get-by-name",
            params={"experiment_name": name},
            auth=(user, password) if user and password else None,
            headers=headers,
            timeout=float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")),
            verify=verify,
        )
    except requests.RequestException as exc:
        raise TrackingError(describe_failure(uri, exc, name)) from None
    if response.status_code in (401, 403) or response.status_code >= 500:
        raise TrackingError(describe_failure(uri, Exception(f"error code {response.status_code}"), name))


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


# --------------------------------------------------------------------------- failures

_HTTP_STATUS = re.compile(r"error code (\d{3})\b|\b(\d{3}) (?:Client|Server) Error\b|status code (\d{3})\b")
_UNREACHABLE = (
    ("Connection refused", "connection refused"),
    ("Failed to resolve", "unknown host"),
    ("Name or service not known", "unknown host"),
    ("timed out", "timed out"),
    ("Timeout", "timed out"),
    ("Max retries exceeded", "no answer"),
    ("Connection aborted", "connection lost"),
    ("RemoteDisconnected", "connection lost"),
)


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an MLflow or requests error reports, if any."""
    match = _HTTP_STATUS.search(str(exc))
    return int(next(group for group in match.groups() if group)) if match else None


def is_store_failure(exc: BaseException) -> bool:
    """True when the tracking store (not mmp, not the data) failed: unreachable, refused, or erroring."""
    import requests

    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return False  # a missing output file is mmp's problem, not the store's
    if isinstance(exc, (OSError, requests.RequestException)):
        return True
    text = str(exc)
    status = http_status(exc)
    return (status is not None and (status in (401, 403, 429) or status >= 500)) or any(
        pattern in text for pattern, _ in _UNREACHABLE
    )


def describe_failure(uri: str, exc: BaseException, experiment: str | None = None) -> str:
    """One line naming the store, the user and the fix; never the password."""
    uri = redact(uri)
    text = " ".join(str(exc).split())
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    status = http_status(exc)
    where = f"experiment '{experiment}'" if experiment else "the experiment"
    if status == 401:
        if not user:
            return (
                f"MLflow at {uri} requires a login; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
                "in .env (see .env.example)"
            )
        return (
            f"MLflow at {uri} refused the credentials of user '{user}'; "
            "put the right MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD in .env"
        )
    if status == 403:
        return f"User '{user}' may not write to {where} at {uri}; ask an MLflow admin for EDIT permission on it"
    for pattern, reason in _UNREACHABLE:
        if pattern in text:
            return (
                f"MLflow server {uri} is unreachable ({reason}); start it (docs/mlflow.md) "
                "or fix mlflow.tracking_uri in your config"
            )
    if status is not None and status >= 500:
        return f"MLflow server {uri} answered HTTP {status}; see the server's log"
    local = not uri.startswith(("http://", "https://"))
    if "unable to open database file" in text or (local and isinstance(exc, OSError)):
        return (
            f"MLflow store {uri} cannot be opened; its folder must exist and be writable by you "
            "(check the permissions of a mounted folder)"
        )
    return redact(f"MLflow store {uri} failed: {text[:300]}")


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


class MirrorDeferred(Exception):
    """The store failed while a finished stage was being mirrored; its outputs stay, a record is pending."""


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


class StageRun:
    """A stage's MLflow run, created on first use of :attr:`info` (or by :meth:`start`) and made active.

    A stage can then compute before it touches the store, while MLflow imports on a background thread
    (:mod:`mmp.preload`): the train stage fits first, and its run still starts when the
    stage did (``start_time``).
    """

    def __init__(
        self,
        config: Config,
        stage: str,
        tags: dict[str, str],
        context: RunContext | None,
        started_ms: int | None = None,
    ) -> None:
        self._config, self._stage, self._tags, self._context = config, stage, tags, context
        self._started_ms = started_ms or int(time.time() * 1000)
        self._run: Any = None

    @property
    def started(self) -> bool:
        return self._run is not None

    @property
    def info(self) -> Any:
        return self.start().info

    def add_tags(self, tags: dict[str, str]) -> None:
        """Tags for the run when it is created (a recorder learns them as the stage goes)."""
        self._tags.update(tags)

    def begin(self) -> None:
        """A recorder's run is asked for now and answered at first use; a run in this process starts then."""

    def start(self, resume_run_id: str | None = None) -> Any:
        """Create the run (or reopen ``resume_run_id``), make it the active run, log the params."""
        if self._run is not None:
            return self._run
        import mlflow

        config = self._config
        experiment_id = setup(config)
        try:
            if resume_run_id:
                self._run = mlflow.start_run(run_id=resume_run_id)
                return self._run
            run_tags = {**common_tags(config, self._stage), **self._tags}
            if self._context:
                run_tags.update(self._context.tags)
                if self._context.parent_run_id:
                    run_tags["mlflow.parentRunId"] = self._context.parent_run_id
            from mlflow.tracking.context.registry import resolve_tags

            # As mlflow.start_run would: its default tags (user, source) under ours, and our start time.
            created = mlflow.MlflowClient().create_run(
                experiment_id,
                start_time=self._started_ms,
                tags=resolve_tags(run_tags),
                run_name=_run_name(config, self._stage, run_tags),
            )
            self._run = mlflow.start_run(run_id=created.info.run_id)
            mlflow.log_params(params_of(config))
        except mlflow.exceptions.MlflowException as exc:
            uri = mlflow.get_tracking_uri()
            raise TrackingError(describe_failure(uri, exc, config.mlflow.experiment_name)) from None
        return self._run


@contextlib.contextmanager
def stage_run(
    config: Config,
    stage: str,
    *,
    tags: dict[str, str] | None = None,
    context: RunContext | None = None,
    resume_run_id: str | None = None,
    lazy: bool = False,
    recorder: Recorder | None = None,
    started_ms: int | None = None,
) -> Iterator[StageRun | RecordedRun]:
    """One MLflow run for one stage execution; FAILED (never RUNNING) if the stage raises.

    ``lazy``: the run is created on first use of ``run.info`` (see :class:`StageRun`); the block must not
    call MLflow's fluent API before that. If the block fails first, the run is created FAILED.
    ``resume_run_id`` reopens an existing run instead (``mmp mirror``). A :class:`MirrorDeferred` raised
    by :func:`mirror` ends the block quietly: the stage's work is done and only its mirror is pending.
    With a ``recorder`` (:func:`start_recorder`) the run is kept by that process; the block is the same.
    """
    if recorder is not None:
        with _recorded_stage_run(recorder, tags or {}) as recorded:
            yield recorded
        return
    run = StageRun(config, stage, tags or {}, context, started_ms)
    if resume_run_id or not lazy:
        run.start(resume_run_id)
    try:
        yield run
        run.start()  # a block that never used its run still records one
    except MirrorDeferred as deferred:
        log.warning("%s", deferred)
        import mlflow

        with contextlib.suppress(Exception):
            mlflow.end_run(status="FAILED")  # if the store is back already; `mmp mirror` resumes it either way
    except BaseException as exc:
        status = getattr(exc, "run_status", None) or failed_status(exc)
        with contextlib.suppress(Exception):
            run.start()  # a lazy run that failed before its first use
        if not run.started:
            raise
        import mlflow

        if isinstance(exc, Pruned):
            exc.run_id = run.info.run_id
            with contextlib.suppress(Exception):
                mlflow.set_tag(f"{TAG_PREFIX}pruned", "true")
        with contextlib.suppress(Exception):
            mlflow.set_tag(f"{TAG_PREFIX}error", redact(" ".join(str(exc).split()))[:1000])
        with contextlib.suppress(Exception):
            mlflow.end_run(status=status)
        raise
    else:
        import mlflow

        if (active := mlflow.active_run()) is not None and active.info.run_id == run.info.run_id:
            mlflow.end_run(status="FINISHED")


def failed_status(exc: BaseException) -> str:
    """The status of a run whose stage raised ``exc``."""
    return "KILLED" if isinstance(exc, (KeyboardInterrupt, Pruned)) else "FAILED"


def start_recorder(config: Config, stage: str, context: RunContext | None) -> Recorder | None:
    """A recorder process (:mod:`mmp.recorder`) for a stand-alone stage run, called at the top of the stage.

    None inside sweeps (``context``) and wherever MLflow is loaded already: there it costs nothing more
    in-process. ``MMP_RECORDER=0`` turns recorders off.
    """
    if context is not None or "mlflow" in sys.modules:
        return None
    from mmp import recorder

    return recorder.for_stage(config, stage, logging.getLogger().isEnabledFor(logging.DEBUG))


@contextlib.contextmanager
def _recorded_stage_run(recorder: Recorder, tags: dict[str, str]) -> Iterator[RecordedRun]:
    from mmp.recorder import RecordedRun

    run = RecordedRun(recorder, tags)
    try:
        yield run
    except MirrorDeferred:
        pass  # the recorder logged it
    except BaseException as exc:
        try:
            run.end(exc)
        except TrackingError as gone:
            log.debug("%s", gone)
        if isinstance(exc, Pruned) and run.started:
            exc.run_id = run.info.run_id
        raise
    else:
        run.end(None)


def _run_name(config: Config, stage: str, run_tags: dict[str, str]) -> str:
    run_name = f"{stage}-{config.recipe.name}"
    if job := run_tags.get(f"{TAG_PREFIX}sweep_job"):
        run_name = f"{run_name}-job{job}"
    if exp_name := os.environ.get("DVC_EXP_NAME"):
        run_name = f"{run_name}-{exp_name}"
    return run_name


MirrorFunction = Callable[[Config, Any, dict[str, Any]], None]
LATE_ARTIFACTS = "late_artifacts"  # extras key: {artifact folder: config path} of outputs logged last


def mirror(
    config: Config,
    stage: str,
    run: StageRun | RecordedRun,
    mirror_fn: MirrorFunction,
    extras: dict[str, Any],
    outputs: list[Path],
    meanwhile: Callable[[], None] | None = None,
) -> None:
    """Log a finished stage to its run with ``mirror_fn`` (which reads the stage's DVC outputs) and end it.

    ``extras`` holds what the outputs do not (timings, learning curves). ``meanwhile`` writes the
    outputs named in ``extras[LATE_ARTIFACTS]`` (the train charts): it runs while a recorder process
    runs ``mirror_fn``, and those folders are logged once it returns. If the store fails, a pending
    record is written for ``mmp mirror`` and :class:`MirrorDeferred` ends the stage's run block.
    """
    if not isinstance(run, StageRun):  # kept by a recorder process, which mirrors it
        if warning := run.mirror(mirror_fn, extras, outputs, meanwhile):
            raise MirrorDeferred(warning)
        return
    import mlflow

    from mmp import pending

    run.start()  # a lazy run that the stage has not used yet
    try:
        try:
            mirror_fn(config, run, extras)
        finally:
            if meanwhile is not None:
                meanwhile()  # the late outputs are complete before they are logged or recorded as pending
        log_late_artifacts(config, extras)
        mlflow.end_run(status="FINISHED")
    except Exception as exc:
        if not is_store_failure(exc):
            raise
        reason = describe_failure(mlflow.get_tracking_uri(), exc, config.mlflow.experiment_name)
        pending.save(config, stage, run.info.run_id, extras, outputs, reason)
        raise MirrorDeferred(
            f"The {stage} stage finished and kept its outputs, but its MLflow run {run.info.run_id} is incomplete: "
            f"{reason}. Run `mmp mirror` once the store is back"
        ) from None


def log_late_artifacts(config: Config, extras: dict[str, Any]) -> None:
    """Log the folders of ``extras[LATE_ARTIFACTS]`` to the active run (the last step of a mirror)."""
    import mlflow

    for artifact_path, folder in extras.get(LATE_ARTIFACTS, {}).items():
        mlflow.log_artifacts(str(config.resolve(folder)), artifact_path=artifact_path)


def loggable_config(config: Config) -> dict[str, Any]:
    """The composed config as logged to MLflow (``config.yaml``): credentials in a URI masked."""
    raw = config.as_dict()
    raw["mlflow"] = {**raw["mlflow"], "tracking_uri": redact(raw["mlflow"]["tracking_uri"])}
    return raw


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
