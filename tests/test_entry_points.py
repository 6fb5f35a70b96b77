"""Entry points that never collide: `mmp train` writes to a run folder of its own, never into dvc.yaml's
outputs, and staged_dir (how every stage writes a folder) keeps the files git tracks inside it."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import REPO, Project, clean_env, printed_run_id
from mmp.files import staged_dir

# --------------------------------------------------------------------------- staged_dir


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, env=clean_env(), capture_output=True, text=True, check=True).stdout


@pytest.fixture()
def repo_with_output(tmp_path: Path) -> Path:
    """A git repo whose output folder ``out/`` holds a tracked .gitignore (as DVC keeps one) and a stale file."""
    root = tmp_path / "repo"
    out = root / "out"
    out.mkdir(parents=True)
    (out / ".gitignore").write_text("/values.parquet\n")
    (out / "sub").mkdir()
    (out / "sub" / "kept.txt").write_text("tracked, below a subfolder\n")
    _git(root, "init", "-q")
    _git(root, "add", "out/.gitignore", "out/sub/kept.txt")
    _git(root, "commit", "-qm", "tracked files inside the output folder")
    (out / "stale.txt").write_text("an untracked output of the last run\n")
    return root


def test_staged_dir_keeps_tracked_files(repo_with_output: Path) -> None:
    out = repo_with_output / "out"
    with staged_dir(out) as scratch:
        assert not any(scratch.iterdir())  # the stage starts from an empty folder
        (scratch / "values.parquet").write_text("new\n")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        ".gitignore",
        "sub/kept.txt",
        "values.parquet",
    ]
    assert (out / ".gitignore").read_text() == "/values.parquet\n"
    assert _git(repo_with_output, "status", "--porcelain") == ""  # nothing tracked deleted or changed
    assert not list(repo_with_output.glob(".out.*"))  # no scratch or old folder left beside it


def test_staged_dir_keeps_what_the_stage_wrote_over_a_tracked_file(repo_with_output: Path) -> None:
    out = repo_with_output / "out"
    with staged_dir(out) as scratch:
        (scratch / ".gitignore").write_text("/other\n")
    assert (out / ".gitignore").read_text() == "/other\n"


def test_staged_dir_failure_leaves_the_target_alone(repo_with_output: Path) -> None:
    out = repo_with_output / "out"
    with pytest.raises(RuntimeError), staged_dir(out) as scratch:
        (scratch / "values.parquet").write_text("half\n")
        raise RuntimeError("the stage failed")
    assert (out / "stale.txt").is_file() and not (out / "values.parquet").exists()
    assert not list(repo_with_output.glob(".out.*"))


def test_staged_dir_outside_git(tmp_path: Path) -> None:
    """No repository around the folder: nothing to carry over, and no error."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old\n")
    with staged_dir(tmp_path / "out") as scratch:
        (scratch / "new.txt").write_text("new\n")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["new.txt"]


@pytest.fixture(params=[0o022, 0o027, 0o077, 0o002], ids=lambda mask: f"umask{mask:03o}")
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


@pytest.mark.parametrize("existing", [False, True], ids=["new", "replaced"])
def test_staged_dir_folder_has_the_umask_permissions(tmp_path: Path, umask: int, existing: bool) -> None:
    """mkdtemp makes 0700 folders; the swapped-in folder must have what mkdir would have given it."""
    target = tmp_path / "out"
    if existing:
        target.mkdir()
    with staged_dir(target) as scratch:
        (scratch / "file.txt").write_text("x\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~umask
    reference = tmp_path / "made_by_mkdir"
    reference.mkdir()
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(reference.stat().st_mode)


# --------------------------------------------------------------------------- mmp train's run folder


def _dvc_outputs() -> list[str]:
    """dvc.yaml's outputs and metrics files, with ${paths.*} taken from params.yaml."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    document = yaml.safe_load((REPO / "dvc.yaml").read_text())
    found = []
    for stage in document["stages"].values():
        for entry in [*stage.get("outs", []), *stage.get("metrics", [])]:
            path = entry if isinstance(entry, str) else next(iter(entry))
            for key, value in params["paths"].items():
                path = path.replace(f"${{paths.{key}}}", value)
            found.append(path)
    return found


def test_own_run_folder_holds_every_output(tmp_path: Path) -> None:
    from mmp.cli import RUNS_DIR, _own_run_folder
    from mmp.config import load_config

    config = dataclasses.replace(load_config([]), root=tmp_path)
    assert config.paths.model_dir == "models"  # dvc.yaml's: what mmp train must not touch
    moved, folder = _own_run_folder(config)
    again, second = _own_run_folder(config)  # the same second: a folder of its own all the same

    assert folder.is_dir() and folder.parent == tmp_path / RUNS_DIR
    assert folder.name.endswith(f"-{config.recipe.name}-{config.data.name}")
    assert second != folder and second.is_dir()
    outputs = [moved.resolve(getattr(moved.paths, field.name)) for field in dataclasses.fields(moved.paths)]
    assert all(path.is_relative_to(folder) for path in outputs), outputs
    assert len(set(outputs)) == len(outputs)
    dvc_outputs = [tmp_path / path for path in _dvc_outputs()]
    assert len(dvc_outputs) >= 5
    for path in outputs:
        assert not any(path == out or path.is_relative_to(out) for out in dvc_outputs), path
    assert not (moved.paths.model_dir.startswith("/") or moved.paths.prepared_dir.startswith("/"))  # portable
    assert dataclasses.replace(moved, paths=config.paths) == config  # nothing else changed


@pytest.mark.slow
def test_mmp_train_leaves_the_dvc_workspace_alone(repro_project: Project) -> None:
    """After a committed `dvc repro`, `mmp train` changes nothing git or DVC sees."""
    project = repro_project
    assert project.git("status", "--porcelain").stdout == ""
    tracked_before = project.git("ls-files").stdout
    outputs = ["data/prepared", "models", "metrics.json", "plots", "explain"]
    before = {name: _digest(project.root / name) for name in outputs}

    project.mmp("get-config", "--env-name", "dev")
    # The README's command, word for word (data/train.csv's label column is called `target`).
    train = ["-c", "configs/dev.yaml", "-r", "recipes/xgb-baseline.yaml", "-d", "data/train.csv"]
    result = project.mmp("train", *train)

    assert project.git("status", "--porcelain").stdout == ""
    assert project.git("ls-files").stdout == tracked_before
    status = project.dvc("status")
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    assert {name: _digest(project.root / name) for name in outputs} == before

    # The outputs are in the run folder it printed, whole.
    line = next(line for line in result.stdout.splitlines() if line.startswith("Outputs: "))
    folder = project.root / line.split()[1].rstrip("/")
    # runs/<UTC time>-<recipe>-<data set>: -d FILE alone names the data set after the file.
    assert folder.parent == project.root / "runs" and folder.name.endswith("-xgb-baseline-train"), folder
    for name in ("prepared/manifest.json", "models/model_info.json", "metrics.json", "explain/shap_importance.json"):
        assert (folder / name).is_file(), name
    assert list((folder / "plots").glob("*.png"))
    run_id = printed_run_id(result.stdout)
    assert project.client().get_run(run_id).info.status == "FINISHED"


def _digest(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {"": path.read_bytes()}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
