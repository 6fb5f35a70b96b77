"""``mmp tune``: seeded Bayesian hyperparameter search with Optuna, one child MLflow run per trial.

The search space lives next to the recipe, in ``recipes/search/<recipe>.yaml``. Trials run one
after another through :func:`mmp.sweep.run_job` (so a seed gives the same trials), boosted models
report their validation loss every round so that unpromising trials are pruned, and the best
configuration is written back as a recipe file to commit and ``dvc repro``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmp.config import compose, dump_yaml, load_config, project_root, read_yaml
from mmp.errors import ConfigError, MmpError, Pruned
from mmp.experiments import sweep as sweeps

log = logging.getLogger(__name__)

SEARCH_DIR = "recipes/search"
PARAM_TYPES = ("int", "float", "categorical")


@dataclass(frozen=True)
class Dimension:
    key: str  # a full config key, e.g. recipe.model.params.num_leaves
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        name = self.key.removeprefix("recipe.model.params.")
        if self.type == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))  # type: ignore[arg-type]
        if self.type == "float":
            return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)  # type: ignore[arg-type]
        return trial.suggest_categorical(name, list(self.choices))


@dataclass(frozen=True)
class SearchSpace:
    dimensions: list[Dimension]
    metric: str = "auto"  # auto: the recipe's primary metric on the valid split
    direction: str = "auto"  # maximize | minimize | auto (from the metric)
    n_trials: int = 20
    seed: int = 42
    pruner: str = "median"  # median | none
    startup_trials: int = 5  # trials never pruned, and before the sampler leaves random search
    warmup_steps: int = 10  # boosting rounds before a trial can be pruned


def search_file(root: Path, recipe: str) -> Path:
    return root / SEARCH_DIR / f"{recipe}.yaml"


def load_space(path: Path) -> SearchSpace:
    """Read and check a search-space file; errors name the key and the fix."""
    raw = read_yaml(path, "Search space")
    params = raw.pop("params", None)
    if not isinstance(params, dict) or not params:
        raise ConfigError(
            f"Search space {path} needs a 'params' mapping, e.g. num_leaves: {{type: int, low: 7, high: 127}}"
        )
    dimensions = [_dimension(path, key, spec) for key, spec in params.items()]
    known = {f.name for f in dataclasses.fields(SearchSpace)} - {"dimensions"}
    if unknown := sorted(set(raw) - known):
        raise ConfigError(f"Unknown key '{unknown[0]}' in search space {path}; known: {', '.join(sorted(known))}")
    space = SearchSpace(dimensions, **raw)
    if space.direction not in ("auto", "maximize", "minimize"):
        raise ConfigError(f"direction in {path} must be maximize, minimize or auto, got {space.direction!r}")
    if space.pruner not in ("median", "none"):
        raise ConfigError(f"pruner in {path} must be median or none, got {space.pruner!r}")
    return space


def _dimension(path: Path, key: str, spec: Any) -> Dimension:
    full_key = key if "." in key else f"recipe.model.params.{key}"
    where = f"params.{key} in search space {path}"
    if not isinstance(spec, dict) or spec.get("type") not in PARAM_TYPES:
        raise ConfigError(f"{where} needs type: int, float or categorical (with low/high or choices)")
    if spec["type"] == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where} needs a non-empty 'choices' list")
        return Dimension(full_key, "categorical", choices=tuple(choices))
    low, high = spec.get("low"), spec.get("high")
    if not isinstance(low, (int, float)) or not isinstance(high, (int, float)) or low >= high:
        raise ConfigError(f"{where} needs numbers low < high, got low={low!r} high={high!r}")
    extra = set(spec) - {"type", "low", "high", "log", "step"}
    if extra:
        raise ConfigError(f"Unknown key '{sorted(extra)[0]}' in {where}; use low, high, log, step")
    return Dimension(full_key, spec["type"], low, high, bool(spec.get("log", False)), spec.get("step"))


@dataclass(frozen=True)
class TuneResult:
    summary: sweeps.Summary
    summary_folder: Path
    recipe_file: Path | None
    trial_params: list[dict[str, Any]]
    use_commands: tuple[str, str] = ("", "")  # how to run the best recipe: dvc exp run, and compose + repro


def use_commands(recipe: str, overrides: list[str]) -> tuple[str, str]:
    """The commands that run ``recipe`` with the search's other settings (data=..., seed=...)."""
    others = [o for o in overrides if not o.lstrip("+~").startswith("recipe")]
    experiment = " ".join(["dvc exp run", f"-S recipe={recipe}", *(f"-S {o}" for o in others)])
    repro = " ".join(["mmp compose", f"recipe={recipe}", *others, "-o params.yaml && dvc repro"])
    return experiment, repro


def run_tune(
    overrides: list[str],
    *,
    command: str,
    space_file: Path | None = None,
    n_trials: int | None = None,
    seed: int | None = None,
    output: Path | None = None,
    timeout: float | None = None,
) -> TuneResult:
    """Run the search; write the best configuration as a recipe file.

    ``timeout`` (seconds) stops starting trials once it has passed; without ``n_trials`` it alone bounds the
    search. Trials run one after another from a seeded sampler, so a seed gives the same first k trials
    whatever the budget: the wall-clock budget only decides k.
    """
    import optuna

    root = project_root()
    config = load_config(overrides, root=root)
    space_file = space_file or search_file(root, config.recipe.name)
    if not space_file.is_file():
        raise ConfigError(
            f"No search space for recipe '{config.recipe.name}': create {space_file} (see recipes/search/ for examples)"
        )
    space = load_space(space_file)
    space = dataclasses.replace(space, n_trials=n_trials or space.n_trials, seed=space.seed if seed is None else seed)
    if space.n_trials < 1:
        raise ConfigError(f"--n-trials must be at least 1, got {space.n_trials}")
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got {timeout}")
    trials = None if timeout is not None and n_trials is None else space.n_trials  # a budget alone: until it ends
    metric = None if space.metric == "auto" else space.metric
    folder = sweeps.new_folder(root, "tune")
    sweep = sweeps.start(config, "tune", folder, command, metric=metric)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with sweeps.parent_guard(sweep):
        # Prepare once up front (trials only change the model, so they all reuse it); it tells the task.
        metric = metric or sweeps.default_metric(config, sweeps.prepared_task(sweeps.prepared(config, sweep)))
        sweep = dataclasses.replace(sweep, metric=metric)
        direction = space.direction
        if direction == "auto":
            direction = "minimize" if sweeps.lower_is_better(metric) else "maximize"
        study = optuna.create_study(
            direction=direction,
            sampler=optuna.samplers.TPESampler(seed=space.seed, n_startup_trials=space.startup_trials),
            pruner=_pruner(space),
            study_name=folder.name,
        )
        objective = _Objective(root, overrides, space, sweep, direction)
        study.optimize(objective, n_trials=trials, timeout=timeout, catch=(_TrialFailed,))
        summary = sweeps.finish(sweep, config, sweeps.collect(folder))
        recipe_file = None
        if summary.best is not None:
            recipe_file = write_best_recipe(
                root, config.recipe.name, objective.params_of[summary.best.job], space, summary, output, overrides
            )
    params = [objective.params_of[job.job] for job in summary.jobs]
    commands = use_commands(recipe_file.stem, overrides) if recipe_file else ("", "")
    return TuneResult(summary, folder, recipe_file, params, commands)


def _pruner(space: SearchSpace) -> Any:
    import optuna

    if space.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=space.startup_trials, n_warmup_steps=space.warmup_steps)


class _TrialFailed(MmpError):
    pass


class _Objective:
    """One trial: compose the recipe with the suggested values, run it as a sweep job, return its score."""

    def __init__(self, root: Path, overrides: list[str], space: SearchSpace, sweep: sweeps.Sweep, direction: str):
        self.root, self.overrides, self.space, self.sweep, self.direction = root, overrides, space, sweep, direction
        self.params_of: dict[int, dict[str, Any]] = {}

    def __call__(self, trial: Any) -> float:
        import optuna

        values = {dim.key: dim.suggest(trial) for dim in self.space.dimensions}
        self.params_of[trial.number] = values
        trial_overrides = [*self.overrides, *(f"++{key}={_hydra_value(value)}" for key, value in values.items())]

        def report(step: int, valid_loss: float) -> None:
            # Intermediate values are the valid loss, oriented like the study (negated when maximizing).
            trial.report(valid_loss if self.direction == "minimize" else -valid_loss, step)
            if trial.should_prune():
                raise Pruned(f"trial {trial.number} pruned at round {step}")

        result = sweeps.run_job(
            lambda: compose(self.root, trial_overrides),
            root=self.root,
            sweep=self.sweep,
            job=trial.number,
            overrides=trial_overrides,
            explain=False,
            on_iteration=report,
        )
        if result.status == "PRUNED":
            raise optuna.TrialPruned()
        score = result.score(self.sweep.metric or "")
        if result.status != "FINISHED" or score is None or math.isnan(score):
            raise _TrialFailed(result.error or f"trial {trial.number} has no {self.sweep.metric}")
        log.info("trial %d: %s = %.5f (%s)", trial.number, self.sweep.metric, score, _shown(values))
        return score


def _hydra_value(value: Any) -> str:
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, float):
        return repr(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _shown(values: dict[str, Any]) -> str:
    return ", ".join(f"{key.removeprefix('recipe.model.params.')}={value}" for key, value in values.items())


def write_best_recipe(
    root: Path,
    recipe: str,
    values: dict[str, Any],
    space: SearchSpace,
    summary: sweeps.Summary,
    output: Path | None,
    overrides: list[str],
) -> Path:
    """The base recipe with the best trial's values, as ``recipes/<recipe>-best.yaml`` (or ``output``)."""
    name = f"{recipe}-best" if output is None else output.stem
    target = output or root / "recipes" / f"{name}.yaml"
    document = {**read_yaml(root / "recipes" / f"{recipe}.yaml", "Recipe file"), "name": name}
    for key, value in values.items():
        if not key.startswith("recipe."):
            log.warning("%s=%s is not part of a recipe; set it yourself (e.g. in conf/config.yaml)", key, value)
            continue
        node = document
        *parents, last = key.removeprefix("recipe.").split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    best = summary.best
    assert best is not None
    header = (
        f"# Best of {len(summary.jobs)} trials of `mmp tune` on recipe {recipe} (seed {space.seed}):\n"
        f"# {summary.metric} = {best.score(summary.metric)}, MLflow run {best.run_id}.\n"
        "# Use it: {}\n#     or: {}\n".format(*use_commands(name, overrides))
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(header + dump_yaml(document), encoding="utf-8")
    return target
