"""``mmp list``: what a project can use, read from the code and the project's files, never hard-coded here.

Models come from the model registry (their library classes per task, and the parameters that the shipped
search spaces tune), recipes from ``recipes/``, data sets from ``conf/data/``, metrics from the evaluation
functions themselves (run once on a toy example, so a new metric shows up by itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmp.config import CONFIG_DIR, read_yaml
from mmp.errors import ConfigError
from mmp.evaluation.metrics import LOWER_IS_BETTER, PRIMARY, classification_metrics, regression_metrics
from mmp.model.registry import MODELS, adapter_for, check_model_name, class_name

RECIPES_DIR = "recipes"
SEARCH_DIR = "search"  # recipes/search/<recipe>.yaml: the space `mmp tune` searches
TASKS = ("binary", "multiclass", "regression")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table: left-aligned columns two spaces apart."""
    cells = [[str(h) for h in headers], *[["" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def _recipes(root: Path) -> dict[str, dict[str, Any]]:
    folder = root / RECIPES_DIR
    return {path.stem: read_yaml(path, "Recipe file") for path in sorted(folder.glob("*.yaml"))}


def tuned_params(root: Path | None) -> dict[str, set[str]]:
    """Model name -> the hyperparameters that the project's search spaces tune for it."""
    if root is None:
        return {}
    recipes = _recipes(root)
    tuned: dict[str, set[str]] = {}
    for path in sorted((root / RECIPES_DIR / SEARCH_DIR).glob("*.yaml")):
        model = recipes.get(path.stem, {}).get("model", {}).get("name")
        if model:
            params = read_yaml(path, "Search space").get("params") or {}
            tuned.setdefault(model, set()).update(k for k in params if "." not in k)
    return tuned


def list_models(root: Path | None) -> str:
    tuned = tuned_params(root)
    rows = []
    for name, spec in MODELS.items():
        classes = [
            class_name(spec, task) if path else "-"
            for task, path in (("binary", spec.classifier), ("regression", spec.regressor))
        ]
        rows.append([name, *classes, ", ".join(sorted(tuned.get(name, ()))) or "-"])
    footer = "\n\n`mmp list models NAME` prints every hyperparameter of a model with its default."
    return table(["model.name", "classification", "regression", "tuned by recipes/search/"], rows) + footer


def model_params(name: str) -> str:
    """Every hyperparameter of a model's library class(es), with its default."""
    spec = check_model_name(name)
    adapter = adapter_for(spec)
    blocks = []
    for task, path in (("binary", spec.classifier), ("regression", spec.regressor)):
        if path is None:
            continue
        known = adapter.known_params(spec, task)
        rows = [[key, repr(value)] for key, value in sorted(known.items())]
        blocks.append(
            f"{class_name(spec, task)} ({'classification' if task == 'binary' else task})\n"
            + table(["parameter", "default"], rows)
        )
    return "\n\n".join(blocks)


def list_recipes(root: Path) -> str:
    rows = []
    tuned = {p.stem for p in (root / RECIPES_DIR / SEARCH_DIR).glob("*.yaml")}
    for stem, recipe in _recipes(root).items():
        model = recipe.get("model") or {}
        params = ", ".join(f"{k}={v}" for k, v in (model.get("params") or {}).items())
        rows.append([stem, recipe.get("task", "auto"), model.get("name", "?"), "yes" if stem in tuned else "-", params])
    if not rows:
        return f"No recipes in {root / RECIPES_DIR}; write one with `mmp get-recipe`"
    return table(["recipe", "task", "model.name", "search space", "params"], rows)


def list_data(root: Path) -> str:
    rows = []
    for path in sorted((root / CONFIG_DIR / "data").glob("*.yaml")):
        data = read_yaml(path, "Data config")
        file = data.get("path") or ""
        present = "yes" if file and (root / file).expanduser().exists() else "missing"
        rows.append([path.stem, file, data.get("target", "?"), present])
    if not rows:
        return f"No data configs in {root / CONFIG_DIR / 'data'}; write one with `mmp init --data FILE --target COL`"
    return table(["data", "path", "target", "file"], rows)


def metrics_by_task() -> dict[str, list[str]]:
    """The metric names each task's evaluation reports, as the evaluation functions compute them."""
    binary = classification_metrics(np.array([0, 1, 1, 0]), np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.6, 0.4]]))
    multi = classification_metrics(np.array([0, 1, 2]), np.eye(3) * 0.8 + 0.2 / 3)
    regression = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.1, 1.9, 3.2]))
    return {"binary": list(binary), "multiclass": list(multi), "regression": list(regression)}


def list_metrics() -> str:
    rows = []
    for task, names in metrics_by_task().items():
        for metric in names:
            better = "lower" if metric in LOWER_IS_BETTER else "higher"
            rows.append([task, metric, better, "primary (auto)" if PRIMARY[task] == metric else ""])
    note = (
        "\n\nLogged per split as <split>_<metric> (e.g. test_roc_auc, valid_rmse); "
        "a recipe's metrics.primary picks another one."
    )
    return table(["task", "metric", "better", ""], rows) + note


def catalog(topic: str, root: Path | None, name: str | None = None) -> str:
    """The text ``mmp list TOPIC [NAME]`` prints; ``root`` is None outside a project."""
    if root is None and topic in ("recipes", "data"):
        from mmp.config import project_root

        project_root()  # raises the one-line "no mmp project found" error
    if name and topic != "models":
        raise ConfigError(f"`mmp list {topic}` takes no name; only `mmp list models NAME` does")
    if topic == "models":
        return model_params(name) if name else list_models(root)
    if topic == "recipes" and root:
        return list_recipes(root)
    if topic == "data" and root:
        return list_data(root)
    if topic == "metrics":
        return list_metrics()
    raise ConfigError(f"Unknown list '{topic}'; choose one of models, recipes, data, metrics")
