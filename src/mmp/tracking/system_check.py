"""``mmp system-check``: can this machine track to the configured MLflow store?

Checks, in order: the store answers, it accepts our credentials, we may write runs to the experiment,
artifacts round-trip, the installed packages fit mmp's requirements, and no finished stage is waiting to
be mirrored. Each check gives one line; every failure names its fix.
"""

from __future__ import annotations

import configparser
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from mmp import tracking
from mmp.config import Config, tracking_root
from mmp.errors import MmpError
from mmp.redaction import redact
from mmp.tracking import pending

OK, FAIL, SKIP = "OK", "FAIL", "SKIP"
CHECKS = ("connectivity", "login", "experiment", "artifacts", "packages", "mirrors")  # in the order they run
_PROBE_FILE = "mmp_system_check.txt"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # OK, FAIL, or SKIP (not run because an earlier check failed)
    detail: str
    fix: str = ""

    def line(self) -> str:
        fix = f" -> fix: {self.fix}" if self.fix else ""
        return redact(f"{self.status:<4}  {self.name:<12}  {self.detail}{fix}")


class _Failed(Exception):
    """A check failed; carries the detail and the fix."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.detail, self.fix = detail, fix


def run_checks(config: Config) -> list[CheckResult]:
    """Run every check against the configured store; never raises for a failing check."""
    uri = tracking.resolve_tracking_uri(config.mlflow.tracking_uri, tracking_root(config.root))
    tracking.load_dotenv(tracking_root(config.root))
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # one line per check, nothing else
    context: dict[str, Any] = {}
    store_checks: list[tuple[str, Callable[[], str]]] = [
        ("connectivity", lambda: _connectivity(uri)),
        ("login", lambda: _login(uri)),
        ("experiment", lambda: _experiment(config, uri, context)),
        ("artifacts", lambda: _artifacts(config, uri, context)),
    ]
    results = []
    blocked = ""
    for name, check in store_checks:
        if blocked:
            results.append(CheckResult(name, SKIP, f"not checked: {blocked} failed"))
            continue
        result = _run(name, check)
        results.append(result)
        if result.status == FAIL:
            blocked = name
    if (note := _cleanup(context)) and results[2].status == OK:
        results[2] = CheckResult(results[2].name, OK, f"{results[2].detail}; {note}")
    results.append(_run("packages", _packages))
    results.append(_run("mirrors", lambda: _pending_mirrors(config.root)))
    return results


def _run(name: str, check: Callable[[], str]) -> CheckResult:
    try:
        return CheckResult(name, OK, check())
    except _Failed as failed:
        return CheckResult(name, FAIL, failed.detail, failed.fix)


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _from_store(exc: Exception) -> bool:
    """An error of the tracking store (MLflow's own, or the network's) rather than a bug in mmp."""
    import mlflow

    return isinstance(exc, mlflow.exceptions.MlflowException) or tracking.is_store_failure(exc)


def _store_failure(uri: str, exc: Exception, experiment: str | None = None) -> _Failed:
    """Split tracking.describe_failure's 'problem; fix' line into the two parts."""
    problem, _, fix = tracking.describe_failure(uri, exc, experiment).partition("; ")
    return _Failed(problem, fix or "see docs/mlflow.md, Troubleshooting")


# --------------------------------------------------------------------------- the checks


def _connectivity(uri: str) -> str:
    if _is_http(uri):
        import requests

        try:
            response = requests.get(f"{uri.rstrip('/')}/health", timeout=5)
        except requests.RequestException as exc:
            raise _store_failure(uri, exc) from None
        if response.status_code != 200:
            raise _Failed(
                f"{uri}/health answered HTTP {response.status_code}, not 200",
                "check that mlflow.tracking_uri points at an MLflow server (scheme, host and port)",
            )
        return f"MLflow server {uri} answers"
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        if path.is_file():
            if not os.access(path, os.R_OK | os.W_OK):
                raise _Failed(f"store {path} is not readable and writable by you", f"fix the permissions of {path}")
            return f"local store {path}"
        # MLflow creates missing folders: what matters is the nearest one that exists.
        ancestor = next(folder for folder in path.parents if folder.exists())
        if not ancestor.is_dir() or not os.access(ancestor, os.W_OK):
            raise _Failed(
                f"store {path} cannot be created: {ancestor} is not a writable folder",
                "point mlflow.tracking_uri at a folder you may write to, or make it writable by your user "
                "(a mounted folder keeps the host's owner)",
            )
        return f"local store {path} does not exist yet; the first run creates it"
    return f"store {uri}"


def _login(uri: str) -> str:
    import mlflow

    from mmp.tracking.store import use_tracking_uri

    use_tracking_uri(uri)
    try:
        mlflow.search_experiments(max_results=1)
    except Exception as exc:
        if not _from_store(exc):
            raise
        raise _store_failure(uri, exc) from None
    if not _is_http(uri):
        return "local store: no login needed"
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    return f"accepted as user '{user}'" if user else "the server asks for no login"


def _experiment(config: Config, uri: str, context: dict[str, Any]) -> str:
    """Create a throwaway run in the experiment (it is deleted again after the artifact check)."""
    import mlflow

    name = config.mlflow.experiment_name
    try:
        experiment_id = tracking.setup(config)
        client = mlflow.MlflowClient()
        run = client.create_run(
            experiment_id, run_name="mmp-system-check", tags={f"{tracking.TAG_PREFIX}system_check": "true"}
        )
        context["run_id"] = run.info.run_id
        client.log_param(run.info.run_id, "check", "write")
    except MmpError as exc:
        problem, _, fix = str(exc).partition("; ")
        raise _Failed(problem, fix) from None
    except Exception as exc:
        if not _from_store(exc):
            raise
        raise _store_failure(uri, exc, name) from None
    return f"may write runs to experiment '{name}' (id {experiment_id})"


def _artifacts(config: Config, uri: str, context: dict[str, Any]) -> str:
    """Write a tiny artifact to the throwaway run and read it back."""
    import mlflow

    client = mlflow.MlflowClient()
    run_id = context["run_id"]
    text = f"mmp system check {run_id}\n"
    try:
        client.log_text(run_id, text, _PROBE_FILE)
        with tempfile.TemporaryDirectory() as scratch:
            local = client.download_artifacts(run_id, _PROBE_FILE, scratch)
            read_back = Path(local).read_text(encoding="utf-8")
    except Exception as exc:
        if not _from_store(exc):
            raise
        location = client.get_run(run_id).info.artifact_uri
        fix = (
            "the server must serve artifacts (mlflow server's default) and its --artifacts-destination "
            "must be writable by the server"
            if _is_http(uri)
            else f"make {location} writable by your user (a mounted folder keeps the host's owner)"
        )
        raise _Failed(f"artifact store {location} failed: {' '.join(str(exc).split())[:200]}", fix) from None
    if read_back != text:
        raise _Failed("an artifact read back differs from what was written", "check the artifact store's storage")
    return f"wrote and read back an artifact in {client.get_run(run_id).info.artifact_uri}"


def _cleanup(context: dict[str, Any]) -> str | None:
    """Delete the throwaway run. A user with EDIT but not MANAGE permission may only close it: say so."""
    import mlflow

    if not (run_id := context.get("run_id")):
        return None
    client = mlflow.MlflowClient()
    try:
        client.set_terminated(run_id, "FINISHED")
        client.delete_run(run_id)
    except Exception as exc:
        if not _from_store(exc):
            raise
        return f"its check run {run_id} stays (tag mmp.system_check): deleting runs needs MANAGE permission"
    return None


def _packages() -> str:
    from packaging.requirements import Requirement

    problems = []
    requirements = [Requirement(line) for line in requirement_lines()]
    for requirement in requirements:
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{requirement.name} is missing (mmp needs {requirement.specifier})")
            continue
        if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            problems.append(f"{requirement.name} {installed} is installed, mmp needs {requirement.specifier}")
    if problems:
        raise _Failed("; ".join(problems), "run `make install` (or `pip install -e .`) in the project")
    return f"{len(requirements)} required packages installed at versions mmp supports"


def requirement_lines() -> list[str]:
    """mmp's runtime requirements: from setup.cfg in a source checkout, else from the installed metadata."""
    from mmp.config import project_root

    try:
        setup_cfg = project_root() / "setup.cfg"
    except MmpError:
        setup_cfg = None
    if setup_cfg and setup_cfg.is_file():
        parser = configparser.ConfigParser()
        parser.read(setup_cfg, encoding="utf-8")
        if parser.get("metadata", "name", fallback="") == "mmp":
            lines = parser.get("options", "install_requires", fallback="").splitlines()
            return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    listed = metadata.requires("mmp") or []
    return [line for line in listed if "extra ==" not in line]


def _pending_mirrors(root: Path) -> str:
    records = pending.load_all(root)
    if records:
        runs = ", ".join(f"{record.stage} (run {record.run_id})" for record in records)
        raise _Failed(f"{len(records)} finished stage(s) not fully in MLflow: {runs}", "run `mmp mirror`")
    return "every finished stage is in MLflow"
