"""DVC remote storage: outputs pushed to a shared folder come back in a fresh clone, and nothing re-runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import Project, clean_env

pytestmark = pytest.mark.slow


def test_push_clone_pull_and_repro_is_a_noop(repro_project: Project, tmp_path: Path) -> None:
    """What docs/mlflow.md tells a team to do with a shared directory remote (an S3 remote works the same)."""
    store = tmp_path / "dvc-store"
    repro_project.dvc("remote", "add", "-d", "shared", str(store))
    pushed = repro_project.dvc("push")
    assert "pushed" in pushed.stdout and any(store.rglob("*")), pushed.stdout
    repro_project.commit("Use the shared DVC remote")

    clone = Project(tmp_path / "clone", clean_env())
    repro_project.run("git", "clone", "-q", str(repro_project.root), str(clone.root))
    assert not (clone.root / "models").exists()  # outputs are not in git
    pulled = clone.dvc("pull")
    assert "Everything is up to date" not in pulled.stdout, pulled.stdout

    result = clone.dvc("repro")
    assert "Running stage" not in result.stdout, result.stdout
    assert "Data and pipelines are up to date" in result.stdout
    assert json.loads((clone.root / "metrics.json").read_text()) == repro_project.metrics()
    for output in ("models/model.ubj", "data/prepared/test.parquet", "explain/shap_values.parquet"):
        assert (clone.root / output).read_bytes() == (repro_project.root / output).read_bytes(), output
    assert json.loads(clone.dvc("status", "--json").stdout) == {}
