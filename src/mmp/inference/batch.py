"""Batch inference: a CSV or Parquet file of raw rows in, a file of predictions out, chunk by chunk.

The model comes from MLflow through :mod:`mmp.model_source`; each batch is one MLflow run tagged with
the model's run, with the input file as its dataset. The output is written to a scratch file next to
it and moved into place at the end, so a failure never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from mmp import data as data_lib
from mmp import tracking
from mmp.config import Config
from mmp.errors import DataError, MmpError
from mmp.evaluation import drift
from mmp.files import safe_name, write_json_atomic
from mmp.inference import source as model_source
from mmp.model.predictor import Predictor

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 100_000
PREDICTION_COLUMN = "prediction"
PROBA_PREFIX = "proba_"
OUTPUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
STAGE = "batch_inference"


@dataclass(frozen=True)
class BatchResult:
    run_id: str
    output: Path
    rows: int
    seconds: float
    drift_report: Path | None = None  # None: the model was trained before drift was recorded
    drifted: tuple[str, ...] = ()


# --------------------------------------------------------------------------- pure parts


def output_format(path: Path) -> str:
    """``parquet`` or ``csv``, read off the output file's suffix."""
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise MmpError(f"Output file {path} has an unknown format '{path.suffix}'; name it .parquet, .pq or .csv")
    return fmt


def check_columns(schema: pl.Schema, predictor: Predictor, path: Path) -> None:
    """Fail, naming them, when the input lacks columns the model was trained with."""
    missing = [name for name in predictor.preprocessor.input_columns if name not in schema]
    if missing:
        raise DataError(
            f"Input {path} is missing column(s) {', '.join(missing)} that the model was trained with; add them"
        )


def output_schema(predictor: Predictor, input_schema: pl.Schema) -> pl.Schema:
    """Id columns present in the input, ``prediction``, then ``proba_<class>`` per class (classifiers)."""
    predicted: dict[str, pl.DataType] = {PREDICTION_COLUMN: pl.String()}
    if predictor.task == "regression":
        predicted[PREDICTION_COLUMN] = pl.Float64()
    else:
        predicted.update({f"{PROBA_PREFIX}{label}": pl.Float64() for label in predictor.classes})
    id_columns = predictor.preprocessor.id_columns
    clashes = [name for name in id_columns if name in predicted]
    if clashes:
        raise DataError(f"Id column(s) {', '.join(clashes)} clash with the prediction columns; rename them")
    return pl.Schema({**{name: input_schema[name] for name in id_columns if name in input_schema}, **predicted})


def predict_chunk(predictor: Predictor, chunk: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """One chunk of raw rows -> its rows of the output (``schema`` from :func:`output_schema`)."""
    if chunk.height == 0:
        return pl.DataFrame(schema=schema)
    columns = [chunk[name] for name in schema.names() if name in predictor.preprocessor.id_columns]
    prediction = predictor.predict_frame(chunk)
    if prediction.is_regression:
        columns.append(pl.Series(PREDICTION_COLUMN, prediction.labels, dtype=pl.Float64))
        return pl.DataFrame(columns)
    columns.append(pl.Series(PREDICTION_COLUMN, prediction.labels, dtype=pl.String))
    columns += [
        pl.Series(f"{PROBA_PREFIX}{label}", prediction.output[:, i], dtype=pl.Float64)
        for i, label in enumerate(prediction.classes)
    ]
    return pl.DataFrame(columns)


def predicted_values(predictor: Predictor, predicted: pl.DataFrame) -> Any:
    """What drift watches of a chunk's output rows (see :func:`mmp.evaluation.drift.prediction_values`)."""
    if predictor.task == "binary":
        return predicted[f"{PROBA_PREFIX}{predictor.classes[-1]}"].to_numpy()
    if predictor.task == "regression":
        return predicted[PREDICTION_COLUMN].to_numpy()
    return predicted[PREDICTION_COLUMN]


def drift_paths(output_path: Path) -> tuple[Path, Path]:
    """The drift report's JSON and chart, next to the predictions: ``preds.parquet`` -> ``preds.drift.json``."""
    return output_path.with_suffix(".drift.json"), output_path.with_suffix(".drift.png")


def iter_chunks(frame: pl.LazyFrame, chunk_rows: int, path: Path) -> Iterator[pl.DataFrame]:
    """The input's rows in order, ``chunk_rows`` at a time (streamed: the file is never whole in memory)."""
    batches = frame.collect_batches(chunk_size=chunk_rows, maintain_order=True)
    while True:
        try:
            chunk = next(batches)
        except StopIteration:
            return
        except pl.exceptions.PolarsError as exc:
            raise DataError(
                f"Input {path} cannot be parsed ({_first_line(exc)}); fix the file or the column types"
            ) from None
        yield chunk


# --------------------------------------------------------------------------- writing


class _ChunkWriter:
    """Appends frames to one Parquet or CSV file."""

    def __init__(self, path: Path, fmt: str, schema: pl.Schema) -> None:
        self.fmt = fmt
        self.schema = schema
        self.rows = 0
        if fmt == "parquet":
            import pyarrow.parquet as pq

            self._parquet = pq.ParquetWriter(path, pl.DataFrame(schema=schema).to_arrow().schema)
        else:
            self._csv = path.open("wb")
            pl.DataFrame(schema=schema).write_csv(self._csv)  # the header, also for an empty input

    def write(self, frame: pl.DataFrame) -> None:
        frame = frame.select(self.schema.names())
        if self.fmt == "parquet":
            self._parquet.write_table(frame.to_arrow())
        else:
            frame.write_csv(self._csv, include_header=False)
        self.rows += frame.height

    def close(self) -> None:
        if self.fmt == "parquet":
            self._parquet.close()
        else:
            self._csv.close()


@contextlib.contextmanager
def atomic_writer(path: Path, fmt: str, schema: pl.Schema) -> Iterator[_ChunkWriter]:
    """A writer to a scratch file next to ``path``, moved onto it on success and removed on error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name (two batches may target one file), created by the writer so the umask applies.
    scratch = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        writer = _ChunkWriter(scratch, fmt, schema)
        try:
            yield writer
        finally:
            writer.close()
        os.replace(scratch, path)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise


def write_predictions(
    predictor: Predictor,
    frame: pl.LazyFrame,
    *,
    input_path: Path,
    output_path: Path,
    schema: pl.Schema,
    chunk_rows: int,
    total_rows: int,
    monitor: drift.DriftCounts | None = None,
) -> tuple[int, int]:
    """Predict the input chunk by chunk into ``output_path``; return (rows read, rows written).

    ``monitor`` counts each chunk's columns and predictions into the training distribution's buckets.
    """
    from tqdm.auto import tqdm

    rows_in = 0
    with (
        atomic_writer(output_path, output_format(output_path), schema) as writer,
        tqdm(
            total=total_rows,
            desc="predict",
            unit="row",
            unit_scale=True,
            file=sys.stderr,
            disable=total_rows <= chunk_rows,
        ) as progress,
    ):
        for chunk in iter_chunks(frame, chunk_rows, input_path):
            predicted = predict_chunk(predictor, chunk, schema)
            writer.write(predicted)
            if monitor is not None:
                monitor.add_frame(chunk, predicted_values(predictor, predicted))
            rows_in += chunk.height
            progress.update(chunk.height)
    return rows_in, writer.rows


# --------------------------------------------------------------------------- entry point


def run_batch_inference(
    config: Config,
    *,
    run_id: str | None = None,
    model_uri: str | None = None,
    input_path: Path,
    output_path: Path,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    drift_threshold: float | None = None,
) -> BatchResult:
    """Predict every row of ``input_path`` with a logged mmp model and write ``output_path``.

    The model is named by its train run id or a model URI. Inputs are checked before the MLflow run
    starts; the run records the model it used, the input dataset, rows and seconds. Each input column
    and the prediction are compared with the training distribution saved with the model: PSI per column
    is logged (``psi_<column>``), columns above ``drift_threshold`` (default: ``monitoring.drift_threshold``)
    are warned about, and the report is written next to the output (``.drift.json``, ``.drift.png``).
    """
    input_path = Path(input_path).expanduser().resolve()
    output_path = Path(output_path).expanduser().resolve()
    output_format(output_path)
    if chunk_rows < 1:
        raise MmpError(f"--chunk-rows is {chunk_rows}; use a positive number of rows")
    threshold = config.monitoring.drift_threshold if drift_threshold is None else drift_threshold
    if not threshold > 0:
        raise MmpError(f"--drift-threshold is {threshold}; use a positive PSI, e.g. 0.2")
    frame = data_lib.scan(input_path)
    input_schema = frame.collect_schema()
    with tempfile.TemporaryDirectory(prefix="mmp-model-") as scratch:
        model = model_source.load(config, run_id=run_id, model_uri=model_uri, dest=Path(scratch))
        predictor, card = model.predictor, model.card
        check_columns(input_schema, predictor, input_path)
        schema = output_schema(predictor, input_schema)
        reference = drift.load_reference(model.directory / model_source._artifact_paths(model.directory)["model"])
        monitor = drift.DriftCounts(reference) if reference is not None else None
        total_rows = _count_rows(frame, input_path)
        digest = data_lib.file_digest(input_path)
        prefix = tracking.TAG_PREFIX
        tags = {
            f"{prefix}model_run_id": card.run_id or "",
            f"{prefix}model_uri": card.model_uri,
            f"{prefix}task": predictor.task,
            f"{prefix}data": input_path.stem,  # what this run consumed (the runs table shows it)
            f"{prefix}input_digest": digest,
        }
        if card.recipe:
            tags[f"{prefix}recipe"] = card.recipe  # the model's recipe, not the config's
        if card.model_class:
            tags[f"{prefix}model_class"] = card.model_class
        with tracking.stage_run(config, STAGE, tags=tags) as run:
            import mlflow

            params = {"input": str(input_path), "output": str(output_path), "chunk_rows": chunk_rows}
            mlflow.log_params({**params, "drift_threshold": threshold})
            tracking.log_dataset(input_path, digest, input_path.stem, "inference", _head(frame))
            started = time.perf_counter()
            rows_in, rows_out = write_predictions(
                predictor,
                frame,
                input_path=input_path,
                output_path=output_path,
                schema=schema,
                chunk_rows=chunk_rows,
                total_rows=total_rows,
                monitor=monitor,
            )
            seconds = time.perf_counter() - started
            mlflow.log_metrics({"rows_in": rows_in, "rows_out": rows_out, "seconds": seconds})
            report_path, drifted = None, ()
            if monitor is not None:
                report_path, drifted = _report_drift(monitor.report(threshold), output_path)
            else:
                log.warning("drift: the model has no training distribution (trained before mmp saved one); not checked")
    log.info("batch inference: %d rows -> %s in %.2fs (model %s)", rows_out, output_path, seconds, card.model_uri)
    return BatchResult(run.info.run_id, output_path, rows_out, seconds, report_path, drifted)


def _report_drift(report: dict[str, Any], output_path: Path) -> tuple[Path, tuple[str, ...]]:
    """Log PSI per column to the active run, warn about drifted columns, write and log the report."""
    import mlflow

    values = drift.psi_by_column(report)
    mlflow.log_metrics({f"psi_{safe_name(name)}": value for name, value in values.items()})
    mlflow.log_metric("drifted_columns", len(report["drifted"]))
    for name in report["drifted"]:
        log.warning(
            "drift: '%s' has PSI %.3f against the training data (threshold %g)", name, values[name], report["threshold"]
        )
    json_path, chart_path = drift_paths(output_path)
    write_json_atomic(json_path, report)
    scratch = chart_path.with_name(f".{chart_path.stem}.{uuid.uuid4().hex[:8]}.png")
    try:
        drift.write_chart(report, scratch)
        os.replace(scratch, chart_path)
    finally:
        scratch.unlink(missing_ok=True)
    mlflow.log_artifact(str(json_path), "drift")
    mlflow.log_artifact(str(chart_path), "drift")
    return json_path, tuple(report["drifted"])


def _count_rows(frame: pl.LazyFrame, path: Path) -> int:
    try:
        return int(frame.select(pl.len()).collect().item())
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"Input {path} cannot be parsed ({_first_line(exc)}); fix the file") from None


def _head(frame: pl.LazyFrame) -> Any:
    """A few rows as pandas, for the dataset's schema in MLflow (none if they cannot be read)."""
    try:
        return frame.head(5).collect().to_pandas()
    except pl.exceptions.PolarsError:
        return None


def _first_line(exc: Exception) -> str:
    """The gist of a Polars error (its later lines are hints about reader options mmp sets itself)."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return lines[0][:300]
