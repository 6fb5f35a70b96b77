"""Sweeps: many configurations, each a child MLflow run under one parent run for the sweep.

A *job* runs one configuration end to end: prepare (reused when its inputs did not change), train
and explain. Each job writes into its own folder, so parallel jobs never share output files. Hydra
multirun (:mod:`mmp.multirun`) and the hyperparameter search (:mod:`mmp.tune`) both run jobs
through :func:`run_job`, and :func:`finish` gives the parent run the best job's metrics and a
summary of every job (a table and a chart of the metric against the swept parameters).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmp import tracking
from mmp.config import Config, from_dict
from mmp.errors import MmpError, Pruned, TrackingError
from mmp.evaluation.metrics import LOWER_IS_BETTER, flat_metrics, primary_metric
from mmp.files import file_lock, read_json, write_json_atomic, write_text_atomic
from mmp.tracking import orphans

log = logging.getLogger(__name__)

SWEEPS_DIR = "multirun"
PREPARED_CACHE = "multirun/prepared"
JOB_FILE = "job.json"
SUMMARY_FILE = "sweep_summary.csv"
CHART_FILE = "sweep_chart.png"
ENV_SWEEP = "MMP_SWEEP"  # the running sweep, as JSON, for jobs in other processes (joblib workers)
T = tracking.TAG_PREFIX


@dataclass(frozen=True)
class Sweep:
    sweep_id: str
    parent_run_id: str
    folder: Path
    metric: str | None = None  # the ranking metric (e.g. valid_roc_auc); None: the recipe's primary on valid

    def job_context(self, job: int, overrides: list[str], parent_run_id: str | None = None) -> tracking.RunContext:
        tags = {
            f"{T}sweep_id": self.sweep_id,
            f"{T}sweep_job": str(job),
            f"{T}sweep_overrides": " ".join(overrides)[:5000],
            f"{T}sweep_worker": f"{socket.gethostname()}:{os.getpid()}",  # which machine and process ran the job
        }
        return tracking.RunContext(parent_run_id=parent_run_id or self.parent_run_id, tags=tags)

    def to_env(self) -> None:
        os.environ[ENV_SWEEP] = json.dumps({**dataclasses.asdict(self), "folder": str(self.folder)})

    @classmethod
    def from_env(cls) -> Sweep:
        raw = json.loads(os.environ[ENV_SWEEP])
        return cls(**{**raw, "folder": Path(raw["folder"])})


@dataclass
class JobResult:
    job: int
    overrides: list[str]
    status: str  # FINISHED, FAILED or PRUNED
    run_id: str | None = None
    task: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0

    def score(self, metric: str) -> float | None:
        value = self.metrics.get(metric)
        return None if value is None or math.isnan(value) else value


# --------------------------------------------------------------------------- starting and finishing


def new_folder(root: Path, kind: str) -> Path:
    """``multirun/<kind>-<date>-<time>-<n>``: the sweep id is the folder's name."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        folder = root / SWEEPS_DIR / f"{kind}-{stamp}-{n}"
        with contextlib.suppress(FileExistsError):
            folder.mkdir(parents=True)
            return folder
    raise MmpError(f"Cannot create a sweep folder under {root / SWEEPS_DIR}; clean it up")


def start(config: Config, kind: str, folder: Path, command: str, metric: str | None = None) -> Sweep:
    """Create the parent run (RUNNING until :func:`finish`) and publish the sweep to job processes."""
    import mlflow

    experiment_id = tracking.setup(config)
    tags = {
        **tracking.common_tags(config, kind),
        f"{T}sweep_id": folder.name,
        f"{T}sweep_command": command[:5000],
        "mlflow.source.name": command.split(" ")[0],
    }
    try:
        run = mlflow.MlflowClient().create_run(experiment_id, run_name=folder.name, tags=tags)
    except mlflow.exceptions.MlflowException as exc:
        raise TrackingError(tracking.describe_failure(mlflow.get_tracking_uri(), exc)) from None
    sweep = Sweep(folder.name, run.info.run_id, folder, metric)
    sweep.to_env()
    log.info("%s %s: parent run %s, jobs in %s", kind, folder.name, run.info.run_id, folder)
    return sweep


@contextlib.contextmanager
def parent_guard(sweep: Sweep) -> Iterator[None]:
    """Never leave a run RUNNING: a sweep that stops early ends its parent FAILED (KILLED on Ctrl-C), and the
    runs of jobs whose worker process died with it (a killed joblib worker) KILLED."""
    try:
        yield
    except BaseException as exc:
        import mlflow

        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        with contextlib.suppress(Exception):
            client = mlflow.MlflowClient()
            parent = client.get_run(sweep.parent_run_id)
            if parent.info.status == "RUNNING":
                client.set_tag(sweep.parent_run_id, f"{T}error", " ".join(str(exc).split())[:1000])
                client.set_terminated(sweep.parent_run_id, status=status)
            orphans.reap(parent.info.experiment_id, again=True)
        raise


def prepared_task(config: Config) -> str:
    """The task (binary, multiclass, regression) the prepare stage found in the data."""
    from mmp.pipeline.common import MANIFEST_FILE

    return str(read_json(config.resolve(config.paths.prepared_dir) / MANIFEST_FILE)["task"])


@dataclass(frozen=True)
class Summary:
    jobs: list[JobResult]
    metric: str
    best: JobResult | None

    @property
    def failed(self) -> list[JobResult]:
        return [job for job in self.jobs if job.status == "FAILED"]


def collect(folder: Path) -> list[JobResult]:
    """The job records the jobs wrote into the sweep folder, in job order."""
    records = [read_json(path) for path in folder.glob(f"*/{JOB_FILE}")]
    return sorted((JobResult(**record) for record in records), key=lambda job: job.job)


def ranking_metric(sweep: Sweep, config: Config, jobs: list[JobResult]) -> str:
    """The sweep's metric, or else the recipe's primary metric on the valid split."""
    if sweep.metric:
        return sweep.metric
    task = next((job.task for job in jobs if job.task), "binary")
    return default_metric(config, task)


def default_metric(config: Config, task: str) -> str:
    return f"valid_{primary_metric(task, config.recipe.metrics.primary)}"


def lower_is_better(metric: str) -> bool:
    return metric.split("_", 1)[-1] in LOWER_IS_BETTER


def finish(sweep: Sweep, config: Config, jobs: list[JobResult]) -> Summary:
    """Give the parent run the best job's metrics, the summary table and chart, and end it."""
    import mlflow
    from mlflow.entities import Metric, RunTag

    metric = ranking_metric(sweep, config, jobs)
    scored = [job for job in jobs if job.status == "FINISHED" and job.score(metric) is not None]
    sign = 1 if lower_is_better(metric) else -1
    best = min(scored, key=lambda job: sign * job.score(metric)) if scored else None  # type: ignore[operator]
    table = summary_table(jobs, metric)
    write_text_atomic(sweep.folder / SUMMARY_FILE, table)
    write_chart(sweep.folder / CHART_FILE, jobs, metric)

    client = mlflow.MlflowClient()
    now = int(time.time() * 1000)
    counts = {
        "jobs_total": len(jobs),
        "jobs_finished": sum(job.status == "FINISHED" for job in jobs),
        "jobs_failed": sum(job.status == "FAILED" for job in jobs),
        "jobs_pruned": sum(job.status == "PRUNED" for job in jobs),
    }
    values = {**(best.metrics if best else {}), **counts}
    tags = {f"{T}sweep_metric": metric, f"{T}sweep_direction": "minimize" if sign == 1 else "maximize"}
    if best:
        tags.update({f"{T}best_run_id": best.run_id or "", f"{T}best_job": str(best.job)})
        tags[f"{T}best_overrides"] = " ".join(best.overrides)[:5000]
    client.log_batch(
        sweep.parent_run_id,
        metrics=[Metric(name, float(value), now, 0) for name, value in values.items()],
        tags=[RunTag(key, value) for key, value in tags.items()],
    )
    client.log_artifact(sweep.parent_run_id, str(sweep.folder / SUMMARY_FILE))
    client.log_artifact(sweep.parent_run_id, str(sweep.folder / CHART_FILE))
    if best and best.run_id:
        link = f"#/experiments/{client.get_run(best.run_id).info.experiment_id}/runs/{best.run_id}"
        overrides = " ".join(best.overrides)
        note = f"Best of {len(jobs)} jobs by {metric}: job {best.job} ({overrides}), run [{best.run_id}]({link})."
        client.set_tag(sweep.parent_run_id, "mlflow.note.content", note)
    failed = counts["jobs_failed"]
    client.set_terminated(sweep.parent_run_id, status="FAILED" if failed or not best else "FINISHED")
    return Summary(jobs, metric, best)


def swept_values(jobs: list[JobResult]) -> dict[str, list[str | None]]:
    """The overrides that differ between jobs, as columns: {key: [value per job]}."""
    parsed = [dict(o.lstrip("+").split("=", 1) for o in job.overrides if "=" in o) for job in jobs]
    keys = [key for key in dict.fromkeys(k for p in parsed for k in p) if len({p.get(key) for p in parsed}) > 1]
    return {key: [p.get(key) for p in parsed] for key in keys}


def summary_table(jobs: list[JobResult], metric: str) -> str:
    """CSV: one row per job with its overrides, status, run id, the ranking metric and the test metrics."""
    import io

    import polars as pl

    metric_names = [metric] + sorted({n for job in jobs for n in job.metrics if n.startswith("test_")} - {metric})
    columns: dict[str, list[Any]] = {
        "job": [job.job for job in jobs],
        **swept_values(jobs),
        "status": [job.status for job in jobs],
        "run_id": [job.run_id for job in jobs],
        **{name: [job.metrics.get(name) for job in jobs] for name in metric_names},
        "seconds": [round(job.seconds, 2) for job in jobs],
        "error": [job.error for job in jobs],
    }
    buffer = io.StringIO()
    pl.DataFrame(columns, strict=False).write_csv(buffer)
    return buffer.getvalue()


def write_chart(path: Path, jobs: list[JobResult], metric: str) -> None:
    """The ranking metric against each swept parameter (at most four panels)."""
    from matplotlib.figure import Figure

    swept = list(swept_values(jobs).items())[:4] or [("job", [str(job.job) for job in jobs])]
    figure = Figure(figsize=(4.2 * len(swept), 3.6), layout="constrained")
    for axes, (key, values) in zip(figure.subplots(1, len(swept), squeeze=False)[0], swept, strict=True):
        points = [(v, job.score(metric)) for v, job in zip(values, jobs, strict=True) if job.score(metric) is not None]
        numeric = all(_is_number(v) for v, _ in points)
        if numeric:
            points.sort(key=lambda point: float(point[0]))  # type: ignore[arg-type]
            axes.plot([float(v) for v, _ in points], [s for _, s in points], "o-")  # type: ignore[arg-type]
        else:
            labels = list(dict.fromkeys(str(v) for v, _ in points))
            axes.scatter([labels.index(str(v)) for v, _ in points], [s for _, s in points])
            axes.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
        axes.set_xlabel(key)
        axes.set_ylabel(metric)
        axes.grid(alpha=0.3)
    figure.suptitle(f"{metric} by swept parameter ({len(jobs)} jobs)")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


# --------------------------------------------------------------------------- jobs


def run_job(
    compose: Callable[[], dict[str, Any]],
    *,
    root: Path,
    sweep: Sweep,
    job: int,
    overrides: list[str],
    explain: bool = True,
    on_iteration: Callable[[int, float], None] | None = None,
) -> JobResult:
    """Run one configuration: prepare (or reuse), train and explain into the job's own folder.

    A failing job is recorded (status FAILED, the error) and does not stop the sweep. ``compose`` returns
    the job's composed config: called here, so that a bad job's config error is recorded too.
    ``on_iteration`` may raise :class:`Pruned` to stop an unpromising trial (status PRUNED).
    """
    from mmp.explanation.shap import ExplainError
    from mmp.pipeline.explain import run_explain
    from mmp.pipeline.train import run_train

    folder = sweep.folder / str(job)
    result = JobResult(job, overrides, "FAILED")
    started = time.perf_counter()
    try:
        config = from_dict(compose(), root=root, overrides=tuple(overrides))
        config = job_paths(prepared(config, sweep), folder)
        result.task = prepared_task(config)
        trained = run_train(config, sweep.job_context(job, overrides), on_iteration)
        result.run_id, result.metrics, result.status = trained.run_id, flat_metrics(trained.metrics), "FINISHED"
        if explain:
            try:
                run_explain(config, sweep.job_context(job, overrides, parent_run_id=trained.run_id))
            except ExplainError as exc:
                log.warning("job %d: explain skipped: %s", job, exc)
    except Pruned as exc:
        result.status, result.run_id, result.error = "PRUNED", exc.run_id, str(exc)
        log.info("job %d (%s): %s", job, " ".join(overrides), exc)
    except MmpError as exc:
        result.error = str(exc)
        log.error("job %d (%s) failed: %s", job, " ".join(overrides), exc)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
        log.exception("job %d (%s) failed", job, " ".join(overrides))
    finally:
        result.seconds = time.perf_counter() - started
        write_json_atomic(folder / JOB_FILE, dataclasses.asdict(result))
    return result


def job_paths(config: Config, folder: Path) -> Config:
    """The config with the train and explain outputs in the job's folder."""
    paths = dataclasses.replace(
        config.paths,
        model_dir=str(folder / "models"),
        metrics_file=str(folder / "metrics.json"),
        plots_dir=str(folder / "plots"),
        explain_dir=str(folder / "explain"),
    )
    return dataclasses.replace(config, paths=paths)


def prepare_key(config: Config) -> str:
    """What the prepare stage's output depends on: its params (as in dvc.yaml) and the data's content."""
    from mmp.data import file_digest, local_path

    data_path = local_path(config.data, config.root)  # None: a SQL or remote source, read by prepare
    inputs = {
        "seed": config.seed,
        "data": dataclasses.asdict(config.data),
        "split": dataclasses.asdict(config.split),
        "task": config.recipe.task,
        "model": config.recipe.model.name,
        "preprocessing": dataclasses.asdict(config.recipe.preprocessing),
        "digest": file_digest(data_path) if data_path and data_path.is_file() else None,  # prepare reports it missing
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepared(config: Config, sweep: Sweep) -> Config:
    """The config pointed at prepared data for its inputs; prepare runs only if no job did it yet."""
    from mmp.pipeline.common import MANIFEST_FILE
    from mmp.pipeline.prepare import run_prepare

    folder = config.resolve(PREPARED_CACHE) / prepare_key(config)
    config = dataclasses.replace(config, paths=dataclasses.replace(config.paths, prepared_dir=str(folder)))
    with file_lock(folder.with_name(folder.name + ".lock")):
        if (folder / MANIFEST_FILE).is_file():
            log.info("prepare: reusing %s (same data, split and preprocessing)", folder)
        else:
            tags = {f"{T}sweep_id": sweep.sweep_id}
            run_prepare(config, tracking.RunContext(tags=tags))
    return config
