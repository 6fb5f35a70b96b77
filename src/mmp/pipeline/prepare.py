"""The prepare stage: load, validate and split the data; fit the preprocessing on the train split."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mmp import data as data_lib
from mmp import preload, tracking
from mmp.config import Config, dump_yaml
from mmp.data.preprocessing import Preprocessor
from mmp.files import read_json, staged_dir, write_json_atomic
from mmp.model import distributed
from mmp.model.predictor import PREPROCESSING_FILE
from mmp.model.registry import check_model_name, encoding_plan, resolve_params
from mmp.model.spec import ModelSpec
from mmp.pipeline import RECORDER_MODULE
from mmp.pipeline.common import CONFIG_ARTIFACT, MANIFEST_FILE, StageResult

log = logging.getLogger(__name__)


_SPLIT = "__mmp_split"  # a row's split code, zipped beside the rows while they are written
_ROW = "__mmp_row"  # the row's position among the cleaned rows: how a split's rows are picked out of the scan


@dataclass(frozen=True)
class Inputs:
    """The prepare stage's view of the data, before anything is written: cleaned (a lazy query), split."""

    checked: data_lib.CheckedScan
    parts: dict[str, pl.DataFrame]  # per split: the positions of its rows among the cleaned rows, in output order
    features: list[str]
    path: Path  # the file read (a SQL or remote source: its local snapshot)

    @property
    def rows(self) -> dict[str, int]:
        return {name: part.height for name, part in self.parts.items()}


def check_inputs(config: Config, spec: ModelSpec | None = None, scratch: Path | None = None) -> Inputs:
    """The prepare stage's checks of config and data, with no side effect: the data cleaned, split and its
    feature columns. ``mmp validate`` runs exactly these, so it answers the errors the stage would.

    The data file is streamed: counts and checks are aggregations, and only the columns a split needs
    (the target, a time or group column) and a row position are held in memory. With a ``scratch`` folder,
    the file is parsed once, into a Parquet copy there that the later passes read (column by column).
    """
    spec = spec or check_model_name(config.recipe.model.name)
    if config.compute.engine == "dask":
        distributed.check_distributed(spec)  # the train stage's first check, answered before the data is read
    data_cfg = config.data
    path = data_lib.input_file(data_cfg, config.root)
    keys = [c for c in (config.split.time_column, config.split.group_column) if c]
    with data_lib.parse_errors(path):
        frame = data_lib.scan_checked(data_cfg, path)
        if scratch is not None:
            frame.sink_parquet(scratch / "rows.parquet", compression="lz4", engine="streaming")
            frame = pl.scan_parquet(scratch / "rows.parquet")
        checked = data_lib.check_scan(frame, data_cfg, config.recipe.task, keys)
    resolve_params(spec, checked.task, config.recipe.model.params, config.seed)  # the model can do this task
    if any(c not in checked.keys.columns for c in keys):  # split's own error, naming the file's columns
        data_lib.split(checked.frame.clear().collect(), data_cfg.target, checked.task, config.split, config.seed)
    # The split sees the key columns only: the same assignment as over the whole frame, for the same seed.
    parts = data_lib.split(checked.keys.with_row_index(_ROW), data_cfg.target, checked.task, config.split, config.seed)
    parts = {name: part.select(_ROW) for name, part in parts.items()}  # the positions are all the writes need
    return Inputs(checked, parts, data_lib.feature_columns(checked.frame, data_cfg), path)


def write_splits(inputs: Inputs, folder: Path) -> None:
    """Each split streamed from the data file to ``folder/<split>.parquet`` (``sink_parquet``): the rows are
    never all in memory. A split's rows come out in the order the split gave them (file order, or time order)."""
    frame, parts = inputs.checked.frame, inputs.parts
    if all(part[_ROW].is_sorted() for part in parts.values()):
        # A split code per row (one byte), as a Parquet column zipped beside the rows: no hashing of positions.
        codes = np.zeros(inputs.checked.rows, dtype=np.int8)
        for code, part in enumerate(parts.values()):
            codes[part[_ROW].to_numpy()] = code
        codes_path = folder / "_split_codes.parquet"
        pl.DataFrame({_SPLIT: codes}).write_parquet(codes_path)
        coded = pl.concat([frame, pl.scan_parquet(codes_path)], how="horizontal")
        try:
            for code, name in enumerate(parts):
                with data_lib.parse_errors(inputs.path):
                    query = coded.filter(pl.col(_SPLIT) == code).drop(_SPLIT)
                    query.sink_parquet(folder / f"{name}.parquet", engine="streaming")
        finally:
            codes_path.unlink()
        return
    indexed = frame.with_row_index(_ROW)
    for name, part in parts.items():  # a temporal split: its rows in time order
        query = part.select(_ROW).lazy().join(indexed, on=_ROW, how="left", maintain_order="left")
        with data_lib.parse_errors(inputs.path):
            query.drop(_ROW).sink_parquet(folder / f"{name}.parquet", engine="streaming")


def run_prepare(config: Config, context: tracking.RunContext | None = None) -> StageResult:
    """Load, validate and split the data; fit preprocessing on the train split."""
    tracking.preflight(config)  # bad credentials or a server that is down fail here, before any data work
    spec = check_model_name(config.recipe.model.name)
    data_cfg = config.data
    recorder = tracking.start_recorder(config, "prepare", context, RECORDER_MODULE)
    if recorder is None:
        preload.start(preload.MLFLOW)  # while Polars reads
    scratch_parent = config.resolve(config.paths.prepared_dir).parent
    scratch_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mmp-prepare-", dir=scratch_parent) as folder:
        # The data file parsed once, into Parquet there, read by the checks and the splits; removed at the end.
        inputs = check_inputs(config, spec, Path(folder))
        checked = inputs.checked
        digest = data_lib.file_digest(inputs.path)
        rows = inputs.rows
        tags = {f"{tracking.TAG_PREFIX}task": checked.task, f"{tracking.TAG_PREFIX}data_digest": digest}
        with tracking.stage_run(config, "prepare", tags=tags, context=context, lazy=True, recorder=recorder) as run:
            out_dir = config.resolve(config.paths.prepared_dir)
            with staged_dir(out_dir) as scratch:
                write_splits(inputs, scratch)  # first: Polars writes without the GIL while MLflow loads
                preprocessor = Preprocessor.fit(
                    pl.scan_parquet(scratch / "train.parquet"),
                    target=data_cfg.target,
                    task=checked.task,
                    classes=checked.classes,
                    id_columns=data_cfg.id_columns,
                    features=inputs.features,
                    categorical_columns=data_cfg.categorical_columns,
                    plan=encoding_plan(spec, config.recipe.preprocessing),
                )
                preprocessor.save(scratch / PREPROCESSING_FILE)
                manifest = {
                    "prepare_run_id": run.info.run_id,
                    "data": {
                        "name": data_cfg.name,
                        "path": data_cfg.path or str(data_lib.source_location(data_cfg, config.root)),
                        "digest": digest,
                    },
                    "task": checked.task,
                    "target": data_cfg.target,
                    "classes": checked.classes,
                    "rows": rows,
                    "dropped_null_target": checked.dropped_null_target,
                    "features": inputs.features,
                }
                write_json_atomic(scratch / MANIFEST_FILE, manifest)
            tracking.mirror(config, "prepare", run, _mirror_prepare, {}, [out_dir])
    log.info("prepare: %s rows -> train %d / valid %d / test %d (%s)", checked.rows, *rows.values(), checked.task)
    return StageResult(run.info.run_id, [out_dir], {f"rows_{k}": v for k, v in rows.items()})


def _mirror_prepare(config: Config, run: Any, extras: dict[str, Any]) -> None:
    import mlflow

    out_dir = config.resolve(config.paths.prepared_dir)
    manifest = read_json(out_dir / MANIFEST_FILE)
    rows = {f"rows_{name}": count for name, count in manifest["rows"].items()}
    mlflow.log_metrics({**rows, "rows_dropped_null_target": manifest["dropped_null_target"]})
    head = pl.read_parquet(out_dir / "train.parquet", n_rows=5)
    data_path = data_lib.source_location(config.data, config.root)  # the source, not its snapshot
    tracking.log_dataset(data_path, manifest["data"]["digest"], config.data.name, "training", head.to_pandas())
    mlflow.log_artifact(str(out_dir / PREPROCESSING_FILE))
    mlflow.log_artifact(str(out_dir / MANIFEST_FILE))
    mlflow.log_text(dump_yaml(tracking.loggable_config(config)), CONFIG_ARTIFACT)
