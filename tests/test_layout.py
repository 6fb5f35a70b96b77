"""The structure holds: imports go down the layers, and only a library's adapter knows the library."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

from mmp.model.registry import ADAPTERS, MODELS

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "mmp"
ADAPTER_DIR = SRC / "model" / "adapters"
NAMES = set(MODELS) | set(ADAPTERS)  # recipe model names and library keys


def test_imports_go_down_the_layers() -> None:
    lint = shutil.which("lint-imports", path=str(Path(__import__("sys").executable).parent))
    assert lint, "import-linter is a dev dependency: pip install -e '.[dev]'"
    result = subprocess.run([lint], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 kept, 0 broken" in result.stdout


def _library_decisions(path: Path) -> list[str]:
    """Comparisons, membership tests and dict keys on a model or library name: branching on the library."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        constants: list[ast.AST] = []
        if isinstance(node, ast.Compare):
            constants = [node.left, *node.comparators]
            for side in list(constants):
                if isinstance(side, (ast.Tuple, ast.List, ast.Set)):
                    constants.extend(side.elts)
        elif isinstance(node, ast.Dict):
            constants = [key for key in node.keys if key is not None]
        for constant in constants:
            if isinstance(constant, ast.Constant) and constant.value in NAMES:
                found.append(f"{path.relative_to(REPO)}:{constant.lineno} {constant.value!r}")
    return found


def test_no_library_branches_outside_the_adapters() -> None:
    outside = [path for path in SRC.rglob("*.py") if ADAPTER_DIR not in path.parents]
    decisions = [hit for path in outside for hit in _library_decisions(path)]
    assert decisions == [], "only a library's adapter may branch on its name: " + ", ".join(decisions)


def test_the_check_sees_a_branch() -> None:
    probe = ADAPTER_DIR.parent / "probe_for_test.py"
    try:
        probe.write_text('def f(spec):\n    return spec.name == "lightgbm"\n')
        assert _library_decisions(probe)
    finally:
        probe.unlink()


def test_every_library_has_one_adapter_module_and_a_recipe() -> None:
    helpers = {"__init__", "base", "xgboost_capi", "forest_shap", "lightgbm_capi"}
    modules = {path.stem for path in ADAPTER_DIR.glob("*.py")} - helpers
    assert modules == set(ADAPTERS)
    recipes = " ".join(path.read_text() for path in (REPO / "recipes").glob("*.yaml"))
    for spec in MODELS.values():
        if spec.name == spec.library:  # each library's own model name has a shipped recipe
            assert f"name: {spec.name}" in recipes
