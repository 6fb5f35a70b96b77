"""dvc.yaml's stage deps cover every mmp module a stage runs, and the committed dvc.lock matches.

The fast test walks src/mmp statically: from a stage script, the module that holds
``mmp.cli.stage_main`` and the recorder process every stage starts (``python -m
mmp.pipeline.recorder_process``), it follows ``import mmp.x``, ``from mmp.x import y``, ``from mmp import x``
and relative imports, at module level and inside functions, plus string literals that name an mmp module
(``importlib.import_module`` targets, ``"module:Class"`` paths). A module file that no dep of the stage
covers (a dep folder covers every file below it) is a stage DVC would not re-run when that file changes.

In mmp/cli.py only what ``stage_main`` runs counts (its module-level imports, and the imports of
``stage_main`` and of the cli functions it calls): the other commands' imports (serve-api, tune...) are
never run by a stage, and following them would make every stage depend on the whole package.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import yaml

from conftest import REPO, Project, clean_env

SRC = REPO / "src"
PACKAGE = "mmp"
STAGES = ("prepare", "train", "explain")
CLI_MODULE = "mmp.cli"
CLI_ENTRY = "stage_main"
RECORDER_MODULE = "mmp.pipeline.recorder_process"
_MODULE_STRING = re.compile(rf"^{PACKAGE}(?:\.[A-Za-z_]\w*)+(?::[A-Za-z_]\w*)?$")


# --------------------------------------------------------------------------- the static import graph


def module_file(name: str) -> Path | None:
    """The file of mmp module ``name`` (a package's __init__.py), or None if it is not one."""
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def with_parents(name: str) -> Iterator[str]:
    """``mmp.a.b`` and the packages importing it imports first: ``mmp``, ``mmp.a``."""
    parts = name.split(".")
    for end in range(1, len(parts) + 1):
        yield ".".join(parts[:end])


def imported_names(nodes: Iterable[ast.AST], current: str, is_package: bool) -> set[str]:
    """The mmp modules that the import statements (and module-naming strings) below ``nodes`` load."""
    found: set[str] = set()
    for root in nodes:
        for node in ast.walk(root):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = current.split(".") if is_package else current.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                if base.split(".")[0] != PACKAGE:
                    continue
                found.add(base)
                # `from mmp.a import b` imports the submodule mmp.a.b when there is one.
                found.update(f"{base}.{alias.name}" for alias in node.names if module_file(f"{base}.{alias.name}"))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_STRING.match(node.value):
                found.add(node.value.split(":")[0])
    return {name for name in found if module_file(name)}


def _cli_stage_nodes(tree: ast.Module) -> list[ast.AST]:
    """mmp/cli.py's module level (function bodies left out) and the functions ``stage_main`` calls."""
    functions = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    top = [node for node in tree.body if node.__class__ not in (ast.FunctionDef, ast.AsyncFunctionDef)]
    reached, todo = set(), [CLI_ENTRY]
    while todo:
        name = todo.pop()
        if name in reached or name not in functions:
            continue
        reached.add(name)
        todo += [node.id for node in ast.walk(functions[name]) if isinstance(node, ast.Name) and node.id in functions]
    assert CLI_ENTRY in reached, f"{CLI_MODULE} has no function {CLI_ENTRY}"
    return top + [functions[name] for name in sorted(reached)]


def module_imports(name: str) -> set[str]:
    path = module_file(name)
    assert path is not None, name
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    nodes = _cli_stage_nodes(tree) if name == CLI_MODULE else [tree]
    return imported_names(nodes, name, path.name == "__init__.py")


def script_imports(script: Path) -> set[str]:
    tree = ast.parse(script.read_text(encoding="utf-8"), filename=str(script))
    return imported_names([tree], "__main__", False)


def stage_modules(stage: str) -> set[str]:
    """Every mmp module that ``python stages/<stage>.py`` and its recorder process may import."""
    roots = script_imports(REPO / "stages" / f"{stage}.py") | {CLI_MODULE, RECORDER_MODULE}
    seen: set[str] = set()
    todo = [parent for root in roots for parent in with_parents(root)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [parent for imported in module_imports(name) for parent in with_parents(imported)]
    return seen


# --------------------------------------------------------------------------- dvc.yaml


def stage_deps(stage: str) -> list[str]:
    document = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
    deps = document["stages"][stage]["deps"]
    return [dep if isinstance(dep, str) else next(iter(dep)) for dep in deps]


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep.rstrip("/") or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def test_the_walk_finds_what_a_stage_imports() -> None:
    """The walker itself: it follows the stage script into cli, the pipeline and lazy imports below."""
    modules = stage_modules("train")
    assert {"mmp", "mmp.cli", "mmp.pipeline", "mmp.pipeline.train", "mmp.pipeline.recorder_process"} <= modules
    assert {"mmp.config", "mmp.tracking.recorder", "mmp.model.predictor"} <= modules
    assert "mmp.inference.http.server" not in modules  # only `mmp serve-api` imports it, never a stage
    assert "mmp.tracking.listing" not in modules  # `mmp runs`


@pytest.mark.parametrize("stage", STAGES)
def test_stage_deps_cover_every_imported_module(stage: str) -> None:
    deps = stage_deps(stage)
    assert f"stages/{stage}.py" in deps
    files = sorted(module_file(name).relative_to(REPO).as_posix() for name in stage_modules(stage))
    missing = [path for path in files if not covered(path, deps)]
    assert not missing, (
        f"dvc.yaml stage '{stage}' runs these files but does not depend on them (add their package folder): {missing}"
    )


@pytest.mark.parametrize("stage", STAGES)
def test_stage_deps_exist(stage: str) -> None:
    """A dep that names no file (a renamed module) would only be caught by `dvc repro` failing."""
    missing = [dep for dep in stage_deps(stage) if "${" not in dep and not (REPO / dep).exists()]
    assert not missing, f"dvc.yaml stage '{stage}' depends on paths that do not exist: {missing}"


# --------------------------------------------------------------------------- the committed lock


def stale_in_a_clone(repo: Path, clone: Path) -> dict[str, list]:
    """`git clone` ``repo`` to ``clone`` and return what `dvc status` finds changed there, but missing outputs.

    Outputs are not in git, so a clone lacks them: an output, or a dep that is another stage's output, is
    "deleted" there, which is no stale lock. Deps and params that differ from what dvc.lock recorded are.
    """
    env = clean_env()
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], env=env, check=True, timeout=120)
    result = subprocess.run(
        ["dvc", "status", "--json"], cwd=clone, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    lock = yaml.safe_load((clone / "dvc.lock").read_text(encoding="utf-8"))
    outputs = {out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])}
    stale = {}
    for stage, entries in json.loads(result.stdout or "{}").items():
        if kept := [entry for entry in entries if not _only_outputs_missing(entry, outputs)]:
            stale[stage] = kept
    return stale


def _only_outputs_missing(entry: object, outputs: set[str]) -> bool:
    """{"changed outs": {path: "deleted"}} and {"changed deps": {<another stage's output>: "deleted"}}."""
    if not isinstance(entry, dict) or not set(entry) <= {"changed outs", "changed deps"}:
        return False
    missing = ("deleted", "not in cache")
    outs = entry.get("changed outs", {})
    deps = entry.get("changed deps", {})
    return all(state in missing for state in outs.values()) and all(
        state in missing and path in outputs for path, state in deps.items()
    )


@pytest.mark.slow
def test_a_fresh_clone_is_up_to_date(tmp_path: Path) -> None:
    """A clone of the committed repository has nothing to re-run: dvc.lock matches dvc.yaml, params and sources.

    A stale dvc.lock makes a clone's first `dvc repro` re-run every stage and tag its runs dirty. This checks
    the last commit (HEAD), not the working tree: after changing a stage's deps, run `dvc repro` and commit
    dvc.lock with them.
    """
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    stale = stale_in_a_clone(REPO, tmp_path / "clone")
    assert not stale, f"dvc.lock in HEAD is out of date (run `dvc repro` and commit dvc.lock): {stale}"


@pytest.mark.slow
def test_the_clone_check_tells_stale_from_missing(repro_project: Project, tmp_path: Path) -> None:
    """The check above on a project whose committed dvc.lock is fresh, then stale."""
    assert stale_in_a_clone(repro_project.root, tmp_path / "fresh") == {}
    params = repro_project.root / "params.yaml"
    params.write_text(params.read_text().replace("seed: 42", "seed: 7"))
    repro_project.commit("a param changed, dvc.lock not regenerated")
    try:
        stale = stale_in_a_clone(repro_project.root, tmp_path / "stale")
    finally:
        params.write_text(params.read_text().replace("seed: 7", "seed: 42"))
        repro_project.commit("seed back")
    assert set(stale) == {"prepare", "train", "explain"}, stale
