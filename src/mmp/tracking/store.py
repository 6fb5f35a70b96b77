"""The MLflow store: where it is, setting it up, checking it is reachable, and naming its failures in one line."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from mmp.config import Config, tracking_root
from mmp.config.compose import OWN_TRACKING_URI_ENV
from mmp.errors import ConfigError, TrackingError
from mmp.files import file_lock, safe_name
from mmp.redaction import redact

# What the experiment holds, for MLflow's UI (its ExperimentKind values: genai_development,
# custom_model_development, ...). MLflow 3.17's UI decides its GenAI / Model training mode by the browser's
# own switch or the link's ``workflowType``, so mmp's links carry that too (:func:`ui_path`).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# A view of the runs table the UI opens with ``viewStateShareKey=mmp``: the primary metrics as columns.
VIEW_KEY = "mmp"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"


def experiment_tags(config: Config) -> dict[str, str]:
    """The tags that make MLflow's UI show mmp's experiment as training runs with their primary metrics."""
    import json

    from mmp.evaluation.metrics import PRIMARY

    primaries = dict.fromkeys(
        [*([config.recipe.metrics.primary] if config.recipe.metrics.primary != "auto" else []), *PRIMARY.values()]
    )
    columns = [f"metrics.`{split}_{name}`" for name in primaries for split in ("test", "valid")]
    columns += [f"tags.`{tag}`" for tag in ("mmp.recipe", "mmp.data")]
    view = {"selectedColumns": columns}
    return {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, VIEW_TAG: json.dumps(view)}


def ui_path(experiment_id: str) -> str:
    """The UI's page of the experiment's training runs, with mmp's columns (append to the UI's address)."""
    return f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


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


FILE_STORE = "mlruns"  # where MMP 1.x (and MLflow 2) kept a file store: mlruns/<experiment id>/meta.yaml


def file_store_experiments(folder: Path) -> list[Path]:
    """The experiment folders of an MLflow file store in ``folder`` (MLflow's own test for one)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.isdigit() and (p / "meta.yaml").is_file())


def check_file_store(uri: str, store_root: Path) -> None:
    """Refuse to start a new SQLite store beside runs still in the old file store.

    Its runs would be invisible to mmp, and `mlflow ui` with no flags would keep opening the file store;
    ``mmp migrate-store`` needs an empty database to move them losslessly.
    """
    if not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///") :]).exists():
        return
    if file_store_experiments(store_root / FILE_STORE):
        raise ConfigError(
            f"{store_root / FILE_STORE} holds an MLflow file store (runs of MMP 1.x); run `mmp migrate-store` "
            "to move them into mlflow.db, or move that folder away to start afresh"
        )


def load_dotenv(root: Path) -> None:
    """Load ``.env`` from the project root into the environment (never overriding what is set)."""
    env_file = root / ".env"
    if env_file.is_file():
        from dotenv import load_dotenv as _load

        _load(env_file, override=False)


def use_tracking_uri(uri: str) -> None:
    """``mlflow.set_tracking_uri``, which also exports ``MLFLOW_TRACKING_URI``: mark that export as mmp's own."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    os.environ[OWN_TRACKING_URI_ENV] = os.environ.get("MLFLOW_TRACKING_URI", uri)


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
    if config.mlflow.artifact_location and not uri.startswith(("http://", "https://", "databricks")):
        experiment_folder(config, store_root)  # a name that escapes the store fails before it is created
    check_file_store(uri, store_root)
    use_tracking_uri(uri)
    try:
        with _store_lock(uri):
            experiment_id = _experiment_id(config, uri, store_root)
        mlflow.set_experiment(experiment_id=experiment_id)
    except Exception as exc:  # everything here talks to the store: any failure is the store's
        raise TrackingError(describe_failure(uri, exc, config.mlflow.experiment_name)) from None
    from mmp.tracking.orphans import reap

    reap(experiment_id)  # runs left RUNNING by a killed process end KILLED
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
        if config.mlflow.artifact_location and not uri.startswith("databricks"):
            experiment_folder(config, store_root)  # a name that escapes the store
        check_file_store(uri, store_root)
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
        # An experiment made by MMP 1.x, by hand or by an older mmp gets the tags; a READ-only user may not.
        for key, value in experiment_tags(config).items():
            if experiment.tags.get(key) != value:
                with contextlib.suppress(mlflow.exceptions.MlflowException):
                    mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, key, value)
        return str(experiment.experiment_id)
    artifact_location = None
    if config.mlflow.artifact_location and not uri.startswith(("http://", "https://", "databricks")):
        artifact_location = experiment_folder(config, store_root).as_uri()
    try:
        return str(mlflow.create_experiment(name, artifact_location=artifact_location, tags=experiment_tags(config)))
    except mlflow.exceptions.MlflowException:
        # Another process (a remote client, or a job without the file lock) created it first.
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def experiment_folder(config: Config, store_root: Path) -> Path:
    """The experiment's artifact folder in a local store: ``<artifact_location>/<safe name>``.

    ConfigError for a name that resolves outside the artifact location (``..``, ``.``): its runs' folders
    would land in the project (``..`` puts a logged model inside the DVC ``models/`` folder).
    """
    name = config.mlflow.experiment_name
    base = (store_root / (config.mlflow.artifact_location or "mlruns")).resolve()
    folder = (base / safe_name(name)).resolve()
    if not name.strip() or folder.parent != base:
        raise ConfigError(
            f"mlflow.experiment_name {name!r} would put the experiment's runs outside the store {base}; "
            "use a plain name such as 'mmp' or 'titanic-xgb'"
        )
    return folder


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


def store_paths(config: Config) -> list[Path]:
    """The local files and folders of the store: its artifact folder, its SQLite file or file store."""
    store_root = tracking_root(config.root)
    uri = resolve_tracking_uri(config.mlflow.tracking_uri, store_root)
    paths = []
    if config.mlflow.artifact_location:
        paths.append((store_root / config.mlflow.artifact_location).resolve())
    if uri.startswith("sqlite:///"):
        paths.append(Path(uri[len("sqlite:///") :]))
    elif uri.startswith("file:"):
        from urllib.parse import unquote, urlparse

        paths.append(Path(unquote(urlparse(uri).path)))
    return paths


def _under(path: str | None, roots: list[Path]) -> bool:
    if not path:
        return False
    resolved = Path(os.path.abspath(path))
    return any(resolved == root or root in resolved.parents for root in roots)


def is_store_failure(exc: BaseException, store: list[Path] | None = None) -> bool:
    """True when the tracking store (not mmp, not the data) failed: unreachable, refused, or erroring.

    A missing file or a file where a folder should be is the store's failure when its path lies in the
    store (``store``: :func:`store_paths`), and mmp's (a missing output) anywhere else.
    """
    import requests

    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError)):
        return _under(exc.filename, store or []) or _under(exc.filename2, store or [])
    if isinstance(exc, shutil.Error):  # a failed copy into the store
        return _under(os_failure(exc)[1], store or [])
    if isinstance(exc, (OSError, requests.RequestException)):
        return True
    text = str(exc)
    status = http_status(exc)
    return (status is not None and (status in (401, 403, 429) or status >= 500)) or any(
        pattern in text for pattern, _ in _UNREACHABLE
    )


def os_failure(exc: BaseException) -> tuple[int | None, str | None]:
    """The errno and the path written to (the destination of a copy) of an OS error, else (None, None).

    ``shutil.Error`` (a failed copytree) holds a list of (source, destination, message) instead.
    """
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) and exc.args[0]:
        first = exc.args[0][0]
        if isinstance(first, tuple) and len(first) == 3:
            code = re.search(r"\[Errno (\d+)\]", str(first[2]))
            return (int(code.group(1)) if code else None), str(first[1])
    if isinstance(exc, OSError):
        return exc.errno, exc.filename2 or exc.filename
    return None, None


def describe_write_failure(uri: str, exc: BaseException, experiment: str | None = None) -> str:
    """As :func:`describe_failure`, for a failure while logging to a store that opened: a local write names
    the path it could not write (a file where a folder belongs, a full disk)."""
    code, path = os_failure(exc)
    local = not uri.startswith(("http://", "https://"))
    if local and code is not None and code not in (errno.ENOSPC, errno.EDQUOT) and path:
        return f"MLflow store {redact(uri)} cannot write {path}: {os.strerror(code)}; fix or remove that path"
    return describe_failure(uri, exc, experiment)


def is_out_of_space(exc: BaseException) -> bool:
    """A full disk or quota: the stage must not report success (its record is still kept for ``mmp mirror``)."""
    return os_failure(exc)[0] in (errno.ENOSPC, errno.EDQUOT)


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
    code, path = os_failure(exc)
    if local and code in (errno.ENOSPC, errno.EDQUOT):
        return f"No space left on device at {path or uri} (MLflow store {uri}); free space there"
    if "unable to open database file" in text or (local and isinstance(exc, OSError)):
        return (
            f"MLflow store {uri} cannot be opened; its folder must exist and be writable by you "
            "(check the permissions of a mounted folder)"
        )
    return redact(f"MLflow store {uri} failed: {text[:300]}")
