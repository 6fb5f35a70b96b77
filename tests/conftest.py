"""Shared fixtures: a temporary git copy of the project, and helpers to run mmp, DVC and MLflow there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# What a project copy leaves out: outputs and stores of the developer's own runs.
_SKIP = {".venv", ".git", "mlflow.db", "mlruns", "data/prepared", "models", "outputs", "multirun", "bench/data"}


def project_files() -> list[str]:
    """Files a fresh clone would have (tracked, plus new files not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    return [f for f in listed if f and not any(f == s or f.startswith(f"{s}/") for s in _SKIP) and (REPO / f).exists()]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "DVC_", "MMP_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        MLFLOW_DISABLE_TELEMETRY="true",
        GIT_AUTHOR_NAME="mmp tests",
        GIT_AUTHOR_EMAIL="tests@example.com",
        GIT_COMMITTER_NAME="mmp tests",
        GIT_COMMITTER_EMAIL="tests@example.com",
        PYTHONWARNINGS="ignore",
    )
    env.update(extra)
    return env


@dataclass
class Project:
    """A git + DVC copy of the project in a temporary folder."""

    root: Path
    env: dict[str, str]

    def run(self, *args: str, check: bool = True, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            list(args),
            cwd=self.root,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n"
                f"--- stderr\n{result.stderr[-4000:]}"
            )
        return result

    def mmp(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        return self.run(str(BIN / "mmp"), *args, check=check, **env)

    def dvc(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        return self.run(str(BIN / "dvc"), *args, check=check, **env)

    def git(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("git", *args)

    def commit(self, message: str = "update") -> None:
        self.git("add", "-A")
        self.run("git", "commit", "-qm", message, check=False)

    def metrics(self) -> dict[str, Any]:
        return json.loads((self.root / "metrics.json").read_text())

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def client(self) -> Any:
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.tracking_uri)

    def runs(self, stage: str | None = None) -> list[Any]:
        client = self.client()
        experiment = client.get_experiment_by_name("mmp")
        if experiment is None:
            return []
        query = f"tags.`mmp.stage` = '{stage}'" if stage else ""
        return client.search_runs([experiment.experiment_id], query, order_by=["attributes.start_time DESC"])


def make_project(dest: Path) -> Project:
    dest.mkdir(parents=True, exist_ok=True)
    for name in project_files():
        source = REPO / name
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target)
    project = Project(dest, clean_env())
    project.git("init", "-q", "-b", "main")
    project.commit("initial")
    return project


@pytest.fixture()
def project(tmp_path: Path) -> Iterator[Project]:
    yield make_project(tmp_path / "project")


@pytest.fixture(scope="module")
def repro_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A project copy on which `dvc repro` has run once (titanic, xgb-baseline), shared by a module."""
    project = make_project(tmp_path_factory.mktemp("repro") / "project")
    project.dvc("repro")
    project.commit("repro")
    return project
