"""Mirroring stage runs to MLflow: the store, the experiment, runs, params, tags and lineage.

Every stage run is one MLflow run. Runs are linked by tags (``mmp.prepare_run_id`` on a train run,
``mmp.train_run_id`` on later stages) and by a parent run: a sweep's, or the pipeline run that groups the
stages of one ``dvc repro`` / ``dvc exp run`` / ``mmp train`` execution (:func:`pipeline_parent`).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmp.config import Config
from mmp.errors import Pruned, TrackingError
from mmp.redaction import redact
from mmp.tracking.orphans import forget_orphaned, owner_tags
from mmp.tracking.store import (
    describe_failure,
    describe_write_failure,
    is_out_of_space,
    is_store_failure,
    setup,
    store_paths,
)
from mmp.tracking.tags import EXECUTION_TAG, TAG_PREFIX, common_tags, execution_id, params_of, run_name

if TYPE_CHECKING:
    from mmp.tracking.recorder import RecordedRun, Recorder

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- failures


# --------------------------------------------------------------------------- tags and params


# --------------------------------------------------------------------------- runs


class MirrorDeferred(Exception):
    """The store failed while a finished stage was being mirrored; its outputs stay, a record is pending.

    ``fatal`` (a full disk): the stage must still fail, with this message, once its run is ended.
    """

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


@dataclass(frozen=True)
class RunContext:
    """Where a stage run sits: its parent (a sweep or a job's train run) and extra tags (sweep id, job)."""

    parent_run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


class StageRun:
    """A stage's MLflow run, created on first use of :attr:`info` (or by :meth:`start`) and made active.

    A stage can then compute before it touches the store, while MLflow imports on a background thread
    (:mod:`mmp.preload`): the train stage fits first, and its run still starts when the
    stage did (``start_time``).
    """

    def __init__(
        self,
        config: Config,
        stage: str,
        tags: dict[str, str],
        context: RunContext | None,
        started_ms: int | None = None,
    ) -> None:
        self._config, self._stage, self._tags, self._context = config, stage, tags, context
        self._started_ms = started_ms or int(time.time() * 1000)
        self._run: Any = None
        self.parent_run_id: str | None = None  # the pipeline run, when this run joined one

    @property
    def started(self) -> bool:
        return self._run is not None

    @property
    def info(self) -> Any:
        return self.start().info

    def add_tags(self, tags: dict[str, str]) -> None:
        """Tags for the run when it is created (a recorder learns them as the stage goes)."""
        self._tags.update(tags)

    def begin(self) -> None:
        """A recorder's run is asked for now and answered at first use; a run in this process starts then."""

    def start(self, resume_run_id: str | None = None) -> Any:
        """Create the run (or reopen ``resume_run_id``), make it the active run, log the params."""
        if self._run is not None:
            return self._run
        import mlflow

        config = self._config
        experiment_id = setup(config)
        try:
            if resume_run_id:
                self._run = mlflow.start_run(run_id=resume_run_id)
                mlflow.set_tags(owner_tags())  # this process owns the reopened run now
                forget_orphaned(resume_run_id)
                return self._run
            run_tags = {**common_tags(config, self._stage), **self._tags}
            if self._context:
                run_tags.update(self._context.tags)
                if self._context.parent_run_id:
                    run_tags["mlflow.parentRunId"] = self._context.parent_run_id
            elif execution := execution_id():  # sweeps have their own parent
                self.parent_run_id = pipeline_parent(config, experiment_id, execution, self._started_ms)
                run_tags.update({"mlflow.parentRunId": self.parent_run_id, EXECUTION_TAG: execution})
            from mlflow.tracking.context.registry import resolve_tags

            # As mlflow.start_run would: its default tags (user, source) under ours, and our start time.
            created = mlflow.MlflowClient().create_run(
                experiment_id,
                start_time=self._started_ms,
                tags=resolve_tags(run_tags),
                run_name=run_name(config, self._stage, run_tags),
            )
            self._run = mlflow.start_run(run_id=created.info.run_id)
            mlflow.log_params(params_of(config))
        except mlflow.exceptions.MlflowException as exc:
            uri = mlflow.get_tracking_uri()
            raise TrackingError(describe_failure(uri, exc, config.mlflow.experiment_name)) from None
        return self._run

    def close_parent(self, status: str) -> None:
        """End the pipeline run at this stage's end (FAILED or KILLED stay); the train stage lends it its
        metrics, so the execution's row in the UI shows them. Best effort: the stage's own run is what counts."""
        if self.parent_run_id is None or not self.started:
            return
        import mlflow

        try:
            client = mlflow.MlflowClient()
            parent = client.get_run(self.parent_run_id)
            if parent.info.status in ("FAILED", "KILLED"):
                status = parent.info.status
            if self._stage == "train" and status == "FINISHED":
                metrics = client.get_run(self.info.run_id).data.metrics
                lent = [(name, value) for name, value in metrics.items() if "_curve_" not in name]
                from mlflow.entities import Metric

                now = int(time.time() * 1000)
                client.log_batch(self.parent_run_id, metrics=[Metric(n, v, now, 0) for n, v in lent[:1000]])
            client.set_terminated(self.parent_run_id, status)
        except Exception:
            log.debug("ending the pipeline run %s failed", self.parent_run_id, exc_info=True)


PIPELINE_STAGE = "pipeline"


def pipeline_parent(config: Config, experiment_id: str, execution: str, started_ms: int) -> str:
    """The run that groups the stage runs of one execution: found by its ``mmp.execution`` tag, or created
    (by the first stage that runs; the UI nests the stage runs under it through ``mlflow.parentRunId``).

    It is RUNNING only while the first stage is; each stage's end ends it again (:meth:`StageRun.close_parent`),
    so its end time is the last stage's and a stage that failed leaves it FAILED.
    """
    import mlflow

    client = mlflow.MlflowClient()
    found = client.search_runs(
        [experiment_id],
        f"tags.`{EXECUTION_TAG}` = '{execution}' and tags.`{TAG_PREFIX}stage` = '{PIPELINE_STAGE}'",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    from mlflow.tracking.context.registry import resolve_tags

    tags = {**common_tags(config, PIPELINE_STAGE), EXECUTION_TAG: execution}
    tags.pop(f"{TAG_PREFIX}dvc.stage", None)
    tags["mlflow.source.name"] = execution.split(":", 1)[0]  # what ran the stages: dvc, mmp-train
    parent = client.create_run(
        experiment_id,
        start_time=started_ms,
        tags=resolve_tags(tags),
        run_name=run_name(config, PIPELINE_STAGE, tags),
    )
    from mlflow.entities import Param

    params = [Param(key, value) for key, value in params_of(config).items()]
    for start in range(0, len(params), 100):  # the tracking API takes at most 100 params per batch
        client.log_batch(parent.info.run_id, params=params[start : start + 100])
    return parent.info.run_id


@contextlib.contextmanager
def stage_run(
    config: Config,
    stage: str,
    *,
    tags: dict[str, str] | None = None,
    context: RunContext | None = None,
    resume_run_id: str | None = None,
    lazy: bool = False,
    recorder: Recorder | None = None,
    started_ms: int | None = None,
    raise_fatal: bool = True,
) -> Iterator[StageRun | RecordedRun]:
    """One MLflow run for one stage execution; FAILED (never RUNNING) if the stage raises.

    ``lazy``: the run is created on first use of ``run.info`` (see :class:`StageRun`); the block must not
    call MLflow's fluent API before that. If the block fails first, the run is created FAILED.
    ``resume_run_id`` reopens an existing run instead (``mmp mirror``). A :class:`MirrorDeferred` raised
    by :func:`mirror` ends the block quietly: the stage's work is done and only its mirror is pending.
    With a ``recorder`` (:func:`start_recorder`) the run is kept by that process; the block is the same.
    A fatal deferral (a full disk) then raises a TrackingError, unless ``raise_fatal`` is off (the recorder,
    which tells the stage instead).
    """
    if recorder is not None:
        with _recorded_stage_run(recorder, tags or {}) as recorded:
            yield recorded
        return
    run = StageRun(config, stage, tags or {}, context, started_ms)
    if resume_run_id or not lazy:
        run.start(resume_run_id)
    try:
        yield run
        run.start()  # a block that never used its run still records one
    except MirrorDeferred as deferred:
        if not deferred.fatal:
            log.warning("%s", deferred)
        import mlflow

        with contextlib.suppress(Exception):
            mlflow.end_run(status="FAILED")  # if the store is back already; `mmp mirror` resumes it either way
        # The pipeline run is left alone while the store fails (each call would wait out its retries);
        # if it is still RUNNING, the next command that opens the store ends it (orphans.reap).
        if deferred.fatal and raise_fatal:
            raise TrackingError(str(deferred)) from None
    except BaseException as exc:
        status = getattr(exc, "run_status", None) or failed_status(exc)
        with contextlib.suppress(Exception):
            run.start()  # a lazy run that failed before its first use
        if not run.started:
            raise
        import mlflow

        if isinstance(exc, Pruned):
            exc.run_id = run.info.run_id
            with contextlib.suppress(Exception):
                mlflow.set_tag(f"{TAG_PREFIX}pruned", "true")
        with contextlib.suppress(Exception):
            mlflow.set_tag(f"{TAG_PREFIX}error", redact(" ".join(str(exc).split()))[:1000])
        with contextlib.suppress(Exception):
            mlflow.end_run(status=status)
        if not isinstance(exc, TrackingError):  # as above: not while the store fails
            run.close_parent(status)
        raise
    else:
        import mlflow

        if (active := mlflow.active_run()) is not None and active.info.run_id == run.info.run_id:
            mlflow.end_run(status="FINISHED")
        run.close_parent("FINISHED")


def failed_status(exc: BaseException) -> str:
    """The status of a run whose stage raised ``exc``."""
    return "KILLED" if isinstance(exc, (KeyboardInterrupt, Pruned)) else "FAILED"


def start_recorder(config: Config, stage: str, context: RunContext | None, entry: str) -> Recorder | None:
    """A recorder process (:mod:`mmp.tracking.recorder`) for a stand-alone stage run, called at the top of the stage.

    None inside sweeps (``context``) and wherever MLflow is loaded already: there it costs nothing more
    in-process. ``MMP_RECORDER=0`` turns recorders off.
    """
    if context is not None or "mlflow" in sys.modules:
        return None
    from mmp.tracking import recorder

    return recorder.for_stage(config, stage, entry, logging.getLogger().isEnabledFor(logging.DEBUG))


@contextlib.contextmanager
def _recorded_stage_run(recorder: Recorder, tags: dict[str, str]) -> Iterator[RecordedRun]:
    from mmp.tracking.recorder import RecordedRun

    run = RecordedRun(recorder, tags)
    try:
        yield run
    except MirrorDeferred as deferred:
        if deferred.fatal:  # a full disk: the stage fails, its record pending
            raise TrackingError(str(deferred)) from None
        # else the recorder logged it
    except BaseException as exc:
        try:
            run.end(exc)
        except TrackingError as gone:
            log.debug("%s", gone)
        if isinstance(exc, Pruned) and run.started:
            exc.run_id = run.info.run_id
        raise
    else:
        run.end(None)


MirrorFunction = Callable[[Config, Any, dict[str, Any]], None]
LATE_ARTIFACTS = "late_artifacts"  # extras key: {artifact folder: config path} of outputs logged last


def mirror(
    config: Config,
    stage: str,
    run: StageRun | RecordedRun,
    mirror_fn: MirrorFunction,
    extras: dict[str, Any],
    outputs: list[Path],
    meanwhile: Callable[[], None] | None = None,
) -> None:
    """Log a finished stage to its run with ``mirror_fn`` (which reads the stage's DVC outputs) and end it.

    ``extras`` holds what the outputs do not (timings, learning curves). ``meanwhile`` writes the
    outputs named in ``extras[LATE_ARTIFACTS]`` (the train charts): it runs while a recorder process
    runs ``mirror_fn``, and those folders are logged once it returns. If the store fails, a pending
    record is written for ``mmp mirror`` and :class:`MirrorDeferred` ends the stage's run block.
    """
    if not isinstance(run, StageRun):  # kept by a recorder process, which mirrors it
        warning, fatal = run.mirror(extras, outputs, meanwhile)
        if warning:
            raise MirrorDeferred(warning, fatal)
        return
    import mlflow

    from mmp.tracking import pending

    run.start()  # a lazy run that the stage has not used yet
    try:
        try:
            mirror_fn(config, run, extras)
        finally:
            if meanwhile is not None:
                meanwhile()  # the late outputs are complete before they are logged or recorded as pending
        log_late_artifacts(config, extras)
        mlflow.end_run(status="FINISHED")
    except Exception as exc:
        if not is_store_failure(exc, store_paths(config)):
            raise
        discard_incomplete_models(run.info.run_id)
        reason = describe_write_failure(mlflow.get_tracking_uri(), exc, config.mlflow.experiment_name)
        pending.save(config, stage, run.info.run_id, extras, outputs, reason)
        fatal = is_out_of_space(exc)
        then = "Then run `mmp mirror` to complete it" if fatal else "Run `mmp mirror` once the store is back"
        raise MirrorDeferred(
            f"The {stage} stage finished and kept its outputs, but its MLflow run {run.info.run_id} is incomplete: "
            f"{reason}. {then}",
            fatal,
        ) from None


def discard_incomplete_models(run_id: str) -> None:
    """Remove what a failed ``log_model`` left in a local store: models of the run that are not READY are
    marked FAILED and their partial files deleted, so nothing loads a truncated model."""
    import mlflow

    try:
        client = mlflow.MlflowClient()
        experiment_id = client.get_run(run_id).info.experiment_id
        models = mlflow.search_logged_models(
            experiment_ids=[experiment_id], filter_string=f"source_run_id = '{run_id}'", output_format="list"
        )
    except Exception:  # the store is failing: nothing more to do here
        log.debug("listing the run's models failed", exc_info=True)
        return
    for model in models:
        if str(model.status) == "READY":
            continue
        with contextlib.suppress(Exception):
            from mlflow.entities import LoggedModelStatus

            client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        location = str(model.artifact_location or "")
        if location.startswith("file:"):
            from urllib.parse import unquote, urlparse

            folder = Path(unquote(urlparse(location).path))
            shutil.rmtree(folder.parent if folder.name == "artifacts" else folder, ignore_errors=True)


def log_late_artifacts(config: Config, extras: dict[str, Any]) -> None:
    """Log the folders of ``extras[LATE_ARTIFACTS]`` to the active run (the last step of a mirror)."""
    import mlflow

    for artifact_path, folder in extras.get(LATE_ARTIFACTS, {}).items():
        mlflow.log_artifacts(str(config.resolve(folder)), artifact_path=artifact_path)


def log_batch(
    run_id: str,
    metrics: dict[str, float],
    curves: dict[str, list[float]] | None = None,
    params: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    """Metrics, step metrics (``curves``: one step per value, which the UI draws as curves), params and tags
    of a run in as few store writes as the tracking API allows: each write is a transaction with its own
    reads of the run (six small writes took 0.4 s of a train mirror on SQLite)."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    points = [Metric(name, float(value), now, 0) for name, value in metrics.items()]
    points += [
        Metric(name, float(v), now, step) for name, values in (curves or {}).items() for step, v in enumerate(values)
    ]
    settings = [Param(key, str(value)) for key, value in (params or {}).items()]
    labels = [RunTag(key, str(value)) for key, value in (tags or {}).items()]
    client = mlflow.MlflowClient()
    # At most 1000 entities per write, of which at most 100 params and 100 tags.
    for start in range(0, max(len(points), 1), 800):
        first = start == 0
        client.log_batch(
            run_id,
            metrics=points[start : start + 800],
            params=settings[:100] if first else [],
            tags=labels[:100] if first else [],
            synchronous=True,
        )
    for start in range(100, max(len(settings), len(labels)), 100):
        client.log_batch(run_id, params=settings[start : start + 100], tags=labels[start : start + 100])


def log_dataset(path: Path | str, digest: str, name: str, context: str, schema_frame: Any = None) -> None:
    """Record a data file (or an object store URL, or a SQL connection URI) as a dataset input of the active run."""
    import mlflow
    from mlflow.data.meta_dataset import MetaDataset

    from mmp.tracking.dataset_sources import dataset_source

    schema = None
    if schema_frame is not None:
        from mlflow.types.utils import _infer_schema

        schema = _infer_schema(schema_frame)
    dataset = MetaDataset(source=dataset_source(path), name=name, digest=digest, schema=schema)
    mlflow.log_input(dataset, context=context)


def run_url(run: Any) -> str:
    """The run's address in the UI, for messages ('#/experiments/<id>/runs/<id>')."""
    return f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
