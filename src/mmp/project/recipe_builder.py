"""``mmp get-recipe``: a recipe file built from answers, asked in a terminal (questionary) or given as flags.

Every answer has a default taken from the project: the model's shipped recipe gives the hyperparameters to
start from. The result is checked by the code ``mmp train`` runs (the config loader with ``-r FILE``, then the
model registry's hyperparameter checks) before it is written, so a recipe that is written is a valid one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmp.config import MetricsConfig, dump_yaml, load_config, parse_yaml, read_yaml
from mmp.errors import ConfigError
from mmp.files import safe_name, write_text_atomic
from mmp.model.registry import MODELS, check_model_name, check_params
from mmp.project.catalog import RECIPES_DIR, TASKS, metrics_by_task

ENCODINGS = ("auto", "native", "onehot", "ordinal")


@dataclass
class Answers:
    """What the user chose; None: not answered yet (asked, or the default)."""

    name: str | None = None
    model: str | None = None
    task: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # given with --param: asked for no more
    encoding: str | None = None
    primary: str | None = None


def parse_param(text: str) -> tuple[str, Any]:
    """``max_depth=8`` -> ("max_depth", 8): values are read as YAML, as in a recipe file."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--param {text!r} is not NAME=VALUE; write e.g. --param max_depth=8")
    return key.strip(), parse_yaml(value) if value.strip() else None


def base_recipe(root: Path, model: str) -> dict[str, Any]:
    """The first shipped recipe of ``model`` (its hyperparameters are the defaults), or a bare one."""
    for path in sorted((root / RECIPES_DIR).glob("*.yaml")):
        recipe = read_yaml(path, "Recipe file")
        if (recipe.get("model") or {}).get("name") == model:
            return recipe
    return {"model": {"name": model, "params": {}}}


def build(root: Path, answers: Answers) -> dict[str, Any]:
    """The recipe mapping from complete answers, on top of the model's shipped recipe."""
    model = answers.model or "xgboost"
    recipe = base_recipe(root, model)
    model_section = dict(recipe.get("model") or {})
    model_section["name"] = model
    metrics = recipe.get("metrics") or {}
    model_section["params"] = {**(model_section.get("params") or {}), **answers.params}
    result: dict[str, Any] = {
        "name": answers.name or f"{model}-custom",
        "task": answers.task or "auto",
        "model": model_section,
        "preprocessing": {**(recipe.get("preprocessing") or {}), "categorical_encoding": answers.encoding or "auto"},
        "metrics": {
            "primary": answers.primary or "auto",
            "train_sample_rows": metrics.get("train_sample_rows", MetricsConfig.train_sample_rows),
        },
    }
    return result


def check_recipe(root: Path, recipe: dict[str, Any]) -> None:
    """Compose and check the recipe exactly as ``mmp train -r FILE`` would (one-line ConfigError if not)."""
    check_model_name(recipe["model"]["name"])
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / f"{safe_name(recipe['name'])}.yaml"
        path.write_text(dump_yaml(recipe), encoding="utf-8")
        config = load_config(recipe_file=path, root=root)
    check_params(check_model_name(config.recipe.model.name), config.recipe.model.params, config.seed)


def write_recipe(root: Path, recipe: dict[str, Any], output: Path | None = None, *, force: bool = False) -> Path:
    check_recipe(root, recipe)
    target = output or root / RECIPES_DIR / f"{safe_name(recipe['name'], '-_.')}.yaml"
    if target.exists() and not force:
        raise ConfigError(f"{target} exists; pass --force to overwrite it, or choose another --name")
    header = f"# Written by `mmp get-recipe`. Use it: mmp train recipe={target.stem} (or -r {target}).\n"
    write_text_atomic(target, header + dump_yaml(recipe))
    return target


# --------------------------------------------------------------------------- asking in a terminal


def ask_missing(root: Path, answers: Answers, prompts: Any = None) -> Answers:
    """Ask in the terminal for what the flags left open (``prompts`` is the questionary module)."""
    if prompts is None:
        import questionary as prompts

    def ask(question: Any) -> Any:
        value = question.ask()
        if value is None:  # Ctrl-C or Ctrl-D
            raise KeyboardInterrupt
        return value

    if answers.model is None:
        choices = [prompts.Choice(f"{name:<24} ({spec.library})", value=name) for name, spec in MODELS.items()]
        answers.model = ask(prompts.select("Model:", choices=choices, default=choices[0]))
    if answers.task is None:
        answers.task = ask(prompts.select("Task:", choices=["auto", *TASKS], default="auto"))
    if answers.name is None:
        answers.name = ask(prompts.text("Recipe name:", default=f"{answers.model}-custom")).strip()
    params = (base_recipe(root, answers.model).get("model") or {}).get("params") or {}
    for key, value in params.items():
        if key in answers.params:
            continue
        text = ask(prompts.text(f"  {key}:", default="null" if value is None else str(value)))
        answers.params[key] = parse_yaml(text) if text.strip() else value
    while extra := ask(prompts.text("Another hyperparameter (NAME=VALUE, empty to finish):", default="")).strip():
        key, value = parse_param(extra)
        answers.params[key] = value
    if answers.encoding is None:
        answers.encoding = ask(prompts.select("Categorical encoding:", choices=list(ENCODINGS), default="auto"))
    if answers.primary is None:
        tasks = TASKS if answers.task == "auto" else (answers.task,)
        metrics = dict.fromkeys(m for t in tasks for m in metrics_by_task()[t])
        answers.primary = ask(prompts.select("Primary metric:", choices=["auto", *metrics], default="auto"))
    return answers


def answers_from_flags(
    name: str | None,
    model: str | None,
    task: str | None,
    params: Sequence[str],
    encoding: str | None,
    primary: str | None,
) -> Answers:
    if model is not None:
        check_model_name(model)
    if task is not None and task not in ("auto", *TASKS):
        raise ConfigError(f"--task {task!r} is not one of auto, {', '.join(TASKS)}")
    if encoding is not None and encoding not in ENCODINGS:
        raise ConfigError(f"--encoding {encoding!r} is not one of {', '.join(ENCODINGS)}")
    return Answers(name, model, task, dict(parse_param(p) for p in params), encoding, primary)
