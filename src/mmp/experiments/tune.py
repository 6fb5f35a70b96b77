"""``mmp tune``: seeded Bayesian hyperparameter search with Optuna, one child MLflow run per trial.

The search space lives next to the recipe, in ``recipes/search/<recipe>.yaml``. Trials run through
:func:`mmp.sweep.run_job`, boosted models report their validation loss every round so that unpromising
trials are pruned, and the best configuration is written back as a recipe file to commit and ``dvc repro``.
With ``cv.folds`` set, each trial is k-fold cross-validated on train+valid and ranked by its out-of-fold
score (the train stage's valid metrics then), so small data is not judged on one small valid split; trials
are then not pruned.

With one worker, trials run one after another in memory (so a seed gives the same trials). With
``--workers N`` (or ``--storage URL``) the study lives in shared storage (a journal file, or a database such
as PostgreSQL) and N processes run its trials; ``mmp tune --join STUDY --storage URL`` adds workers from
other machines. Every trial, whoever runs it, is a child run of the search's one parent run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmp import preload, tracking
from mmp.config import compose, dump_yaml, load_config, project_root, read_yaml, tracking_root
from mmp.errors import ConfigError, MmpError, Pruned
from mmp.experiments import sweep as sweeps
from mmp.redaction import redact
from mmp.tracking import orphans

log = logging.getLogger(__name__)

SEARCH_DIR = "recipes/search"
PARAM_TYPES = ("int", "float", "categorical")
JOURNAL_FILE = "study.journal"  # the study of a parallel search, when no --storage is given
ENV_STORAGE = "MMP_TUNE_STORAGE"  # the study's storage URL for workers (it may hold a password: never argv)
# Set by a search for the local workers it starts before its own set-up: wait for the study, and meanwhile
# load these modules (comma-separated), which a trial needs.
ENV_WAIT = "MMP_TUNE_WAIT_FOR_STUDY"
STUDY_POLL_SECONDS = 0.1
STUDY_ATTR = "mmp.settings"  # the study's user attribute with what every worker needs
JOB_ATTR = "mmp.job"  # a trial's user attribute: its sweep job record (status, run id, metrics)
VALUES_ATTR = "mmp.values"  # a trial's user attribute: the suggested values by full config key
# A trial's user attribute: asked for after the budget was taken (two workers asked at once), so never run.
SURPLUS_ATTR = "mmp.surplus"
WORKER_ATTR = "mmp.worker"  # a trial's user attribute: the process that runs it (host, pid, start time)
# A trial's user attribute: why it was failed by another worker (its own was gone). A lost trial takes no
# share of the budget: another worker runs one in its place.
LOST_ATTR = "mmp.lost"
# Workers on other machines are seen only through a database storage: each trial beats every this many
# seconds, and a trial silent for twice as long is failed by the next worker to start a trial (Optuna's
# heartbeat). A journal file has no heartbeat; workers on one host see each other's processes.
HEARTBEAT_SECONDS = 30
THREAD_PARAMS = ("n_jobs", "thread_count", "nthread", "num_threads")  # the libraries' thread-count params
# Rounds between a trial's reports to a shared study: each report writes to the storage and each pruning check
# reads the study back (every round: about 0.1 s a round on a journal file here, more than the round itself).
SHARED_REPORT_EVERY = 10


@dataclass(frozen=True)
class Dimension:
    key: str  # a full config key, e.g. recipe.model.params.num_leaves
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any, prefix: str = "") -> Any:
        name = prefix + self.key.removeprefix("recipe.model.params.")
        if self.type == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))  # type: ignore[arg-type]
        if self.type == "float":
            return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)  # type: ignore[arg-type]
        return trial.suggest_categorical(name, list(self.choices))


@dataclass(frozen=True)
class SearchSpace:
    dimensions: list[Dimension]
    # auto: the recipe's primary metric on the valid split (under cv.folds: out of fold, on train+valid)
    metric: str = "auto"
    direction: str = "auto"  # maximize | minimize | auto (from the metric)
    n_trials: int = 20
    seed: int = 42
    pruner: str = "median"  # median | none
    startup_trials: int = 5  # trials never pruned, and before the sampler leaves random search
    warmup_steps: int = 10  # boosting rounds before a trial can be pruned
    # Other recipes a trial may run instead of the searched one, each with its own dimensions (``recipes:``).
    alternatives: dict[str, list[Dimension]] = dataclasses.field(default_factory=dict)


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
    alternatives = _alternatives(path, raw.pop("recipes", None) or {})
    known = {f.name for f in dataclasses.fields(SearchSpace)} - {"dimensions", "alternatives"}
    if unknown := sorted(set(raw) - known - {"recipes"}):
        raise ConfigError(
            f"Unknown key '{unknown[0]}' in search space {path}; known: {', '.join(sorted(known | {'recipes'}))}"
        )
    space = SearchSpace(dimensions, alternatives=alternatives, **raw)
    if space.direction not in ("auto", "maximize", "minimize"):
        raise ConfigError(f"direction in {path} must be maximize, minimize or auto, got {space.direction!r}")
    if space.pruner not in ("median", "none"):
        raise ConfigError(f"pruner in {path} must be median or none, got {space.pruner!r}")
    return space


def _alternatives(path: Path, raw: Any) -> dict[str, list[Dimension]]:
    """``recipes: {<recipe>: {<param>: <dimension>, ...}}``: recipes a trial may run instead, each searched
    over its own dimensions."""
    if not isinstance(raw, dict) or not all(isinstance(v, dict) and v for v in raw.values()):
        raise ConfigError(
            f"'recipes' in search space {path} maps recipe names to their params, "
            "e.g. rf-experiment: {max_depth: {type: int, low: 4, high: 16}}"
        )
    return {name: [_dimension(path, key, spec) for key, spec in params.items()] for name, params in raw.items()}


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
    workers: int = 1,
    storage: str | None = None,
    threads: int | None = None,
) -> TuneResult:
    """Run the search; write the best configuration as a recipe file.

    ``timeout`` (seconds) stops starting trials once it has passed; without ``n_trials`` it alone bounds the
    search. With one worker and no ``storage``, trials run one after another from a seeded sampler, so a seed
    gives the same first k trials whatever the budget: the wall-clock budget only decides k.

    ``workers`` > 1 runs the trials in that many processes (this one and ``workers - 1`` joined ones) against
    one study in shared ``storage`` (default: a journal file in the search's folder); each trial then trains
    with ``threads`` threads (default: cores // workers). Other machines join with :func:`join_tune`.
    """
    import optuna

    root = project_root()
    tracking.load_dotenv(tracking_root(root))  # MMP_TUNE_STORAGE (a URL with a password) may live in .env
    storage = storage or os.environ.get(ENV_STORAGE) or None
    config = load_config(overrides, root=root)
    space_file = space_file or search_file(root, config.recipe.name)
    if not space_file.is_file():
        raise ConfigError(
            f"No search space for recipe '{config.recipe.name}': create {space_file} (see recipes/search/ for examples)"
        )
    space = load_space(space_file)
    for name in space.alternatives:
        if not (root / "recipes" / f"{name}.yaml").is_file():
            raise ConfigError(
                f"Search space {space_file} names recipe '{name}' under 'recipes'; add recipes/{name}.yaml"
            )
    space = dataclasses.replace(space, n_trials=n_trials or space.n_trials, seed=space.seed if seed is None else seed)
    if config.cv.folds > 1:
        # Under cv.folds the train stage fits the folds without per-round reports: nothing to prune on.
        space = dataclasses.replace(space, pruner="none")
    if space.n_trials < 1:
        raise ConfigError(f"--n-trials must be at least 1, got {space.n_trials}")
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got {timeout}")
    _check_workers(workers, threads)
    trials = None if timeout is not None and n_trials is None else space.n_trials  # a budget alone: until it ends
    metric = None if space.metric == "auto" else space.metric
    folder = sweeps.new_folder(root, "tune")
    shared = workers > 1 or storage is not None
    storage = storage or (str(folder / JOURNAL_FILE) if shared else None)
    opened = open_storage(storage) if storage else None  # a wrong URL fails here, before any run exists
    threads = threads or (max(1, _cores() // workers) if workers > 1 else None)
    processes = workers if trials is None else min(workers, trials)  # no worker without a trial to run
    # Local workers start now: their start-up (imports, about 5 CPU-s) runs on another core while this
    # process starts the parent run and prepares the data; they wait for the study it then creates. They take
    # trials on demand until the study has its budget: a worker whose trials are pruned early does not idle.
    modules = _trial_modules(config)
    helpers = [
        _start_worker(root, folder.name, storage or "", space.seed + k, threads, timeout, modules)
        for k in range(1, processes)
    ]
    preload.start(modules)  # this process runs trials too: they load on a thread while it sets up
    try:
        sweep = sweeps.start(config, "tune", folder, redact(command), metric=metric)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with sweeps.parent_guard(sweep):
            # Prepare once up front (trials only change the model, so they all reuse it); it tells the task.
            metric = metric or sweeps.default_metric(config, sweeps.prepared_task(sweeps.prepared(config, sweep)))
            sweep = dataclasses.replace(sweep, metric=metric)
            if config.cv.folds > 1:  # the train stage's valid metrics are then out-of-fold, over train+valid
                log.info("cv.folds=%d: trials are ranked by the out-of-fold %s; no pruning", config.cv.folds, metric)
            direction = space.direction
            if direction == "auto":
                direction = "minimize" if sweeps.lower_is_better(metric) else "maximize"
            study = optuna.create_study(
                storage=opened,
                direction=direction,
                sampler=_sampler(space, space.seed, shared=shared),
                pruner=_pruner(space),
                study_name=folder.name,
            )
            settings = StudySettings(sweep.parent_run_id, overrides, space, metric, direction, trials)
            study.set_user_attr(STUDY_ATTR, settings.to_json())
            # The first trials are the recipes as they stand (where the space reaches their values): the search
            # starts from known points, and TPE sees every recipe of the space at least once.
            firsts = [config, *(load_config(with_recipe(overrides, name), root=root) for name in space.alternatives)]
            for first in firsts:
                study.enqueue_trial(recipe_point(first, space))
            if shared:
                log.info(
                    "study %s: %d worker(s) here; another machine joins with: mmp tune --join %s --storage %s",
                    folder.name,
                    workers,
                    folder.name,
                    redact(storage or ""),
                )
            try:
                objective = _Objective(
                    root,
                    overrides,
                    space,
                    sweep,
                    direction,
                    config.recipe.name,
                    threads,
                    shared=shared,
                    limit=trials if shared else None,
                    storage=opened,
                )
                started = time.monotonic()
                _optimize(study, objective, None if shared else trials, timeout)
            finally:
                _wait_for(helpers)
                helpers = []
            left = None if timeout is None else timeout - (time.monotonic() - started)
            if objective.fail_lost(study) and not objective.budget_taken(study) and (left is None or left > 0):
                log.info("running here the trials that the lost worker did not finish")
                _optimize(study, objective, None, left)
            jobs, values = study_jobs(study)
            summary = sweeps.finish(sweep, config, jobs)
            recipe_file = None
            if summary.best is not None:
                recipe_file = write_best_recipe(
                    root, config.recipe.name, values[summary.best.job], space, summary, output, overrides
                )
    except BaseException:
        _stop(helpers)  # before the study is searched: nothing for them to do
        raise
    params = [values[job.job] for job in summary.jobs]
    commands = use_commands(recipe_file.stem, overrides) if recipe_file else ("", "")
    return TuneResult(summary, folder, recipe_file, params, commands)


def join_tune(
    study_name: str,
    storage: str | None,
    *,
    n_trials: int | None = None,
    seed: int | None = None,
    timeout: float | None = None,
    threads: int | None = None,
) -> int:
    """Run trials of a search started elsewhere (``mmp tune --join``); the number of trials run.

    Everything a trial needs (the overrides, the space, the metric, the parent run) comes from the study's
    user attributes, so a worker on another machine needs only the project checkout, the study's storage and
    the MLflow store. Without ``n_trials`` it takes trials one at a time until the study has the search's
    budget (or ``timeout`` has passed), as the search's own workers do; with it, exactly that many more.
    """
    import optuna

    root = project_root()
    tracking.load_dotenv(tracking_root(root))
    storage = storage or os.environ.get(ENV_STORAGE) or None
    if not storage:
        raise ConfigError(f"--join needs the study's storage: --storage URL (or {ENV_STORAGE} in .env)")
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got {timeout}")
    _check_workers(1, threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    opened = open_storage(storage)
    preloads = os.environ.pop(ENV_WAIT, None)  # a local worker of a search, started before its study exists
    if preloads is not None:
        _await_study(study_name, opened, [module for module in preloads.split(",") if module])
    try:
        found = optuna.load_study(study_name=study_name, storage=opened)
    except KeyError:
        raise ConfigError(f"No study '{study_name}' in {redact(storage)}; check --join (the search's id)") from None
    if STUDY_ATTR not in found.user_attrs:
        raise ConfigError(f"Study '{study_name}' was not started by mmp tune; start a search with mmp tune --workers")
    settings = StudySettings.from_json(found.user_attrs[STUDY_ATTR])
    limit = settings.n_trials if n_trials is None else None  # on demand, up to the search's budget
    if limit is not None and _budget_taken(found, limit):
        log.info("study %s already has its %d trials; nothing to do", study_name, limit)
        return 0
    sampler, pruner = _sampler(settings.space, seed, shared=True), _pruner(settings.space)
    study = optuna.load_study(study_name=study_name, storage=opened, sampler=sampler, pruner=pruner)
    config = load_config(settings.overrides, root=root)
    tracking.setup(config)
    folder = root / sweeps.SWEEPS_DIR / study_name
    folder.mkdir(parents=True, exist_ok=True)
    sweep = sweeps.Sweep(study_name, settings.parent_run_id, folder, settings.metric)
    objective = _Objective(
        root,
        settings.overrides,
        settings.space,
        sweep,
        settings.direction,
        config.recipe.name,
        threads,
        shared=True,
        limit=limit,
        storage=opened,
    )
    _optimize(study, objective, n_trials, timeout)
    return objective.trials_run


def _await_study(study_name: str, storage: Any, modules: list[str]) -> None:
    """Wait until the search that started this worker has created its study and settings, loading the modules
    a trial needs meanwhile; exit if that search has ended (it stops its workers, or they outlive it)."""
    import optuna

    preload.start(modules, then=[preload.mlflow_requirements_map])
    search = os.getppid()
    while os.getppid() == search:
        summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
        if any(s.study_name == study_name and STUDY_ATTR in s.user_attrs for s in summaries):
            return
        time.sleep(STUDY_POLL_SECONDS)
    raise ConfigError(f"The search that started this worker for study '{study_name}' has ended")


def _trial_modules(config: Any) -> list[str]:
    """What a trial imports at its start and end, besides the pipeline: MLflow, charts, the model's library (its
    classes' modules: a trial fits, so it needs more than loading a saved model does)."""
    from mmp.model.registry import check_model_name

    return [*preload.TRAIN, "mmp.pipeline.train", *check_model_name(config.recipe.model.name).class_modules]


def _optimize(study: Any, objective: _Objective, n_trials: int | None, timeout: float | None) -> None:
    """Run trials: ``n_trials`` of them, or with ``objective.limit``, one at a time until the study has that many
    (whichever worker ran them), or until ``timeout``."""
    callbacks = [objective.after_trial] if objective.shared else None
    study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(_TrialFailed,), callbacks=callbacks)


def _budget_taken(study: Any, limit: int) -> bool:
    """Whether the study's next trial would be past ``limit``. An enqueued (waiting) trial is run before a new one
    is asked for; surplus trials and lost ones (:data:`LOST_ATTR`) take no share of the budget."""
    trials = study.get_trials(deepcopy=False)
    if any(t.state.name == "WAITING" and _taken(trials, t.number) < limit for t in trials):
        return False
    return _taken([t for t in trials if t.state.name != "WAITING"]) >= limit


def _taken(trials: list[Any], below: int | None = None) -> int:
    """How many of ``trials`` (numbered below ``below``) take a share of the budget: not a surplus trial, nor one
    failed without its job record (its worker was gone before the trial ended)."""

    def counts(trial: Any) -> bool:
        if SURPLUS_ATTR in trial.user_attrs:
            return False
        return trial.state.name != "FAIL" or JOB_ATTR in trial.user_attrs

    return sum(1 for t in trials if (below is None or t.number < below) and counts(t))


def _fail_lost(study: Any, storage: Any) -> list[int]:
    """Fail the running trials of this host whose worker process is gone (killed, or out of memory); their
    numbers. Their MLflow runs are then ended by :func:`orphans.reap`."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    lost = []
    study_id = None
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        why = orphans.owner_gone(trial.user_attrs.get(WORKER_ATTR, {}))
        if why is None:
            continue
        study_id = study_id if study_id is not None else storage.get_study_id_from_name(study.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            storage.set_trial_user_attr(trial_id, LOST_ATTR, f"trial {trial.number} was lost: the {why}")
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # it ended meanwhile
        log.error("trial %d was lost: the %s; another worker runs one in its place", trial.number, why)
        lost.append(trial.number)
    return lost


def _check_workers(workers: int, threads: int | None) -> None:
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def open_storage(url: str) -> Any:
    """The study's storage: a database URL (``postgresql+psycopg://...``) or else the path of a journal file."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if "://" not in url:
        path = Path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat's
            return optuna.storages.RDBStorage(
                url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=HEARTBEAT_SECONDS
            )
    except Exception as exc:  # SQLAlchemy and driver errors: one line, password masked
        message = redact(" ".join(str(exc).split()))[:300]
        raise ConfigError(
            f"Cannot open the study storage {redact(url)}: {message}; check the URL, the server and its password"
        ) from None


def _start_worker(
    root: Path,
    study: str,
    storage: str,
    seed: int,
    threads: int | None,
    timeout: float | None,
    preloads: list[str],
) -> subprocess.Popen:
    """A local worker: ``mmp tune --join`` in its own process, which waits for the study to exist and loads
    ``preloads`` meanwhile. The storage URL (it may hold a password) goes through the environment, never the
    command line."""
    # ``python -m mmp.cli`` exits as the ``mmp`` command does, without the interpreter's teardown (1.7 s with
    # MLflow, LightGBM and the charts loaded, that the search would wait for).
    command = [sys.executable, "-m", "mmp.cli", "tune", "--join", study, "--seed", str(seed)]
    command += ["--threads", str(threads)] if threads is not None else []
    command += ["--timeout", str(timeout)] if timeout is not None else []
    env = {**os.environ, ENV_STORAGE: storage, ENV_WAIT: ",".join(preloads)}
    return subprocess.Popen(command, cwd=root, env=env)


def _wait_for(workers: list[subprocess.Popen]) -> None:
    """Wait for the local workers; on an interrupt or error, stop them (by their own PIDs) first."""
    try:
        for worker in workers:
            if worker.wait() != 0:
                log.error("tune worker %d exited %d; its finished trials are kept", worker.pid, worker.returncode)
    except BaseException:
        _stop(workers)
        raise


def _stop(workers: list[subprocess.Popen]) -> None:
    """Stop the local workers by their own PIDs, and reap them."""
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    for worker in workers:
        worker.wait()


@dataclass(frozen=True)
class StudySettings:
    """What every worker of a search needs, kept in the study's user attributes (JSON)."""

    parent_run_id: str
    overrides: list[str]
    space: SearchSpace
    metric: str
    direction: str
    n_trials: int | None  # None: the search is bounded by its timeout alone

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> StudySettings:
        space = dict(raw["space"])

        def dimensions(listed: list[dict[str, Any]]) -> list[Dimension]:
            return [Dimension(**{**d, "choices": tuple(d["choices"])}) for d in listed]

        dims = dimensions(space.pop("dimensions"))
        alternatives = {name: dimensions(d) for name, d in space.pop("alternatives", {}).items()}
        return cls(**{**raw, "space": SearchSpace(dims, alternatives=alternatives, **space)})


def study_jobs(study: Any) -> tuple[list[sweeps.JobResult], dict[int, dict[str, Any]]]:
    """The trials as sweep jobs (whichever worker ran them), and each trial's values, by trial number."""
    jobs, values = [], {}
    for trial in study.get_trials(deepcopy=False):
        record = trial.user_attrs.get(JOB_ATTR)
        if record is None:
            if trial.state.name == "WAITING" or SURPLUS_ATTR in trial.user_attrs:
                continue  # a recipe's first point, enqueued, or a trial asked for at once by two: the budget ended
            if trial.state.name == "RUNNING":
                log.warning("trial %d is still running in another worker; it is left out of the summary", trial.number)
                continue
            if trial.state.name == "FAIL":  # its worker was gone before it ended: another trial took its share
                why = trial.user_attrs.get(LOST_ATTR) or f"trial {trial.number} was lost: its worker stopped beating"
                log.warning("%s; it is left out of the summary", why)
                continue
            record = dataclasses.asdict(sweeps.JobResult(trial.number, [], "FAILED", error=f"trial {trial.state.name}"))
        jobs.append(sweeps.JobResult(**record))
        values[trial.number] = trial.user_attrs.get(VALUES_ATTR, {})
    return sorted(jobs, key=lambda job: job.job), values


def recipe_point(config: Any, space: SearchSpace) -> dict[str, Any]:
    """The trial that runs the recipe as configured: each dimension's current value, where it lies in the
    space (the sampler draws the others)."""
    name = config.recipe.name
    point: dict[str, Any] = {"recipe": name} if space.alternatives else {}
    dimensions, prefix = (
        (space.alternatives[name], f"{name}.") if name in space.alternatives else (space.dimensions, "")
    )
    for dim in dimensions:
        value: Any = config
        for part in dim.key.split("."):
            value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
        inside = value in dim.choices if dim.type == "categorical" else _between(value, dim)
        if value is not None and inside:
            point[prefix + dim.key.removeprefix("recipe.model.params.")] = value
    return point


def with_recipe(overrides: list[str], recipe: str) -> list[str]:
    """``overrides`` with the recipe group set to ``recipe`` (in place of any recipe choice they make)."""
    return [*(o for o in overrides if o.split("=")[0].lstrip("+~") != "recipe"), f"recipe={recipe}"]


def _between(value: Any, dim: Dimension) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and dim.low <= value <= dim.high and (dim.type == "float" or float(value).is_integer())  # type: ignore[operator]


def _sampler(space: SearchSpace, seed: int | None, *, shared: bool = False) -> Any:
    """TPE, seeded. On a shared study, the trials other workers are running count as bad results
    (``constant_liar``, Optuna's advice for parallel searches): workers do not propose the same region at once."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=space.startup_trials, constant_liar=shared)


def _pruner(space: SearchSpace) -> Any:
    import optuna

    if space.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=space.startup_trials, n_warmup_steps=space.warmup_steps)


class _TrialFailed(MmpError):
    pass


class _Objective:
    """One trial: compose the recipe with the suggested values, run it as a sweep job, return its score.

    The job record and the values go into the trial's user attributes, so that the search's summary sees
    every trial in the study, whichever worker ran it.
    """

    def __init__(
        self,
        root: Path,
        overrides: list[str],
        space: SearchSpace,
        sweep: sweeps.Sweep,
        direction: str,
        recipe: str,
        threads: int | None = None,
        *,
        shared: bool = False,
        limit: int | None = None,
        storage: Any = None,
    ):
        self.root, self.overrides, self.space, self.sweep, self.direction = root, overrides, space, sweep, direction
        self.shared, self.storage = shared, storage  # a shared study: other workers' lost trials are failed here
        self.limit = limit  # trials on demand: stop once the study has this many
        self.recipe = recipe  # the searched recipe; space.alternatives may offer others
        self.report_every = SHARED_REPORT_EVERY if shared else 1
        self.fixed = [*overrides, *_thread_overrides(root, overrides, threads)]
        self.trials_run = 0  # by this process (other workers add trials to the same study)

    def after_trial(self, study: Any, _trial: Any) -> None:
        """After each trial of a shared study: fail the trials of workers that are gone, so that their share of the
        budget is run again; stop asking for more once the study has its budget (``limit``)."""
        self.fail_lost(study)
        if self.budget_taken(study):
            study.stop()

    def fail_lost(self, study: Any) -> list[int]:
        """Fail the running trials of gone workers on this host (:func:`_fail_lost`) and end their MLflow runs."""
        lost = _fail_lost(study, self.storage) if self.shared and self.storage is not None else []
        if lost:
            import mlflow

            orphans.reap(mlflow.MlflowClient().get_run(self.sweep.parent_run_id).info.experiment_id, again=True)
        return lost

    def budget_taken(self, study: Any) -> bool:
        return self.limit is not None and _budget_taken(study, self.limit)

    def __call__(self, trial: Any) -> float:
        import optuna

        if self.limit is not None and _taken(trial.study.get_trials(deepcopy=False), trial.number) >= self.limit:
            # Another worker asked for the budget's last trial at the same moment: this one is not run.
            trial.set_user_attr(SURPLUS_ATTR, True)
            trial.study.stop()
            raise optuna.TrialPruned(f"trial {trial.number} is past the search's {self.limit} trials")
        trial.set_user_attr(WORKER_ATTR, orphans.owner_tags())
        self.trials_run += 1
        fixed, dimensions, prefix, chosen = self.fixed, self.space.dimensions, "", {}
        if self.space.alternatives:  # which recipe first; then that recipe's own dimensions
            recipe = trial.suggest_categorical("recipe", [self.recipe, *self.space.alternatives])
            chosen = {"recipe": recipe}
            if recipe != self.recipe:
                dimensions, prefix = self.space.alternatives[recipe], f"{recipe}."
                fixed = with_recipe(fixed, recipe)
        values = {dim.key: dim.suggest(trial, prefix) for dim in dimensions}
        trial.set_user_attr(VALUES_ATTR, {**chosen, **values})
        trial_overrides = [*fixed, *(f"++{key}={_hydra_value(value)}" for key, value in values.items())]

        def report(step: int, valid_loss: float) -> None:
            if step % self.report_every:
                return
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
        trial.set_user_attr(JOB_ATTR, dataclasses.asdict(result))
        if result.status == "PRUNED":
            raise optuna.TrialPruned()
        score = result.score(self.sweep.metric or "")
        if result.status != "FINISHED" or score is None or math.isnan(score):
            raise _TrialFailed(result.error or f"trial {trial.number} has no {self.sweep.metric}")
        log.info("trial %d: %s = %.5f (%s)", trial.number, self.sweep.metric, score, _shown({**chosen, **values}))
        return score


def _thread_overrides(root: Path, overrides: list[str], threads: int | None) -> list[str]:
    """Set the recipe's own thread-count params to ``threads`` (parallel workers must not oversubscribe)."""
    if threads is None:
        return []
    params = load_config(overrides, root=root).recipe.model.params
    keys = [key for key in THREAD_PARAMS if key in params]
    if not keys:
        log.warning("the recipe sets no thread count (%s): trials may use every core each", ", ".join(THREAD_PARAMS))
    return [f"++recipe.model.params.{key}={threads}" for key in keys]


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
    values = dict(values)
    chosen = values.pop("recipe", recipe)  # the best trial may have run one of the space's other recipes
    document = {**read_yaml(root / "recipes" / f"{chosen}.yaml", "Recipe file"), "name": name}
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
        f"# Best of {len(summary.jobs)} trials of `mmp tune` on recipe {recipe} (seed {space.seed})"
        + (f", recipe {chosen}" if chosen != recipe else "")
        + ":\n"
        f"# {summary.metric} = {best.score(summary.metric)}, MLflow run {best.run_id}.\n"
        "# Use it: {}\n#     or: {}\n".format(*use_commands(name, overrides))
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(header + dump_yaml(document), encoding="utf-8")
    return target
