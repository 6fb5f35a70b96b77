"""The prepare stage: load, validate and split the data; fit the preprocessing on the train split."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from mmp import data as data_lib
from mmp import preload, tracking
from mmp.config import Config, DataConfig, dump_yaml
from mmp.data.preprocessing import Preprocessor
from mmp.files import read_json, staged_dir, write_json_atomic
from mmp.model import distributed
from mmp.model.predictor import PREPROCESSING_FILE
from mmp.model.registry import check_model_name, class_name, encoding_plan
from mmp.model.spec import ModelSpec
from mmp.pipeline import RECORDER_MODULE
from mmp.pipeline.common import CONFIG_ARTIFACT, MANIFEST_FILE, StageResult

if TYPE_CHECKING:
    from polars.io.partition import FileProviderArgs

log = logging.getLogger(__name__)


_SPLIT = "__mmp_split"  # a row's split code, zipped beside the rows while they are written
_ROW = "__mmp_row"  # a row's position among the cleaned rows: how a temporal split picks its rows, in time order
_COMPRESSION = "uncompressed"  # the split files: lz4 saves 17% of the bytes for 20% more CPU in the writing pass


@dataclass(frozen=True)
class Inputs:
    """The prepare stage's view of the data, before anything is written: cleaned (a lazy query), split."""

    checked: data_lib.CheckedScan
    codes: np.ndarray  # each cleaned row's split: an int8 index in data_lib.SPLITS
    order: np.ndarray | None  # a temporal split: the cleaned rows in time order (the order the splits are written)
    features: list[str]
    path: Path  # the file read (a SQL or remote source: its local snapshot)
    data: DataConfig
    columns_checked: bool = True  # False: :func:`write_splits` checks the feature columns in the splits it wrote

    @property
    def rows(self) -> dict[str, int]:
        counts = np.bincount(self.codes, minlength=len(data_lib.SPLITS))
        return {name: int(count) for name, count in zip(data_lib.SPLITS, counts, strict=True)}

    @property
    def parts(self) -> dict[str, pl.DataFrame]:
        """Per split: the positions of its rows among the cleaned rows, in output order."""
        rows = self.order if self.order is not None else np.arange(self.codes.size)
        picked = self.codes[rows]
        return {name: pl.DataFrame({_ROW: rows[picked == code]}) for code, name in enumerate(data_lib.SPLITS)}


def check_inputs(config: Config, spec: ModelSpec | None = None, *, columns: bool = True) -> Inputs:
    """The prepare stage's checks of config and data, with no side effect: the data cleaned, split and its
    feature columns. ``mmp validate`` runs exactly these, so it answers the errors the stage would.

    The data file is streamed: counts and checks are aggregations, and only the columns a split needs
    (the target, a time or group column) are held in memory, until the split is made (then one byte a row).
    With ``columns=False`` (the prepare stage) only those columns are read here, and :func:`write_splits` checks
    the feature columns as it writes the splits: the whole file is parsed once.
    """
    spec = spec or check_model_name(config.recipe.model.name)
    if config.compute.engine == "dask":
        distributed.check_distributed(spec)  # the train stage's first check, answered before the data is read
    data_cfg = config.data
    path = data_lib.input_file(data_cfg, config.root)
    keys = [c for c in (config.split.time_column, config.split.group_column) if c]
    with data_lib.parse_errors(path):
        checked = data_lib.scan_keys(data_lib.scan_checked(data_cfg, path), data_cfg, config.recipe.task, keys)
        if columns:
            data_lib.check_columns(checked.frame, data_cfg, checked.rows)
    # The model can do the data's task. Its hyperparameters are the train stage's to check (`mmp train` and
    # `mmp validate` check them first): that check imports the model's library, seconds this stage never uses.
    class_name(spec, checked.task)
    if any(c not in checked.keys.columns for c in keys):  # split's own error, naming the file's columns
        data_lib.split(checked.frame.clear().collect(), data_cfg.target, checked.task, config.split, config.seed)
    # The split sees the key columns only: the same assignment as over the whole frame, for the same seed.
    codes, order = data_lib.assign(checked.keys, data_cfg.target, checked.task, config.split, config.seed)
    checked = replace(checked, keys=checked.keys.clear())  # the codes are all the writes need
    features = data_lib.feature_columns(checked.frame, data_cfg)
    return Inputs(checked, codes, order, features, path, data_cfg, columns_checked=columns)


def write_splits(inputs: Inputs, folder: Path) -> None:
    """Each split streamed from the data file to ``folder/<split>.parquet``: the rows are never all in memory.
    A split's rows come out in the order the split gave them (file order, or time order). Then, unless
    :func:`check_inputs` did, the feature columns are checked in the written splits (Parquet, read a column at a
    time: far cheaper than parsing the data file again); on an error the splits are removed."""
    paths = [folder / f"{name}.parquet" for name in data_lib.SPLITS]
    try:
        with data_lib.parse_errors(inputs.path):
            _sink_splits(inputs, folder)
            if not inputs.columns_checked:
                data_lib.check_columns(pl.scan_parquet(paths), inputs.data, inputs.checked.rows)
    except BaseException:
        for path in paths:
            path.unlink(missing_ok=True)
        raise


def _sink_splits(inputs: Inputs, folder: Path) -> None:
    frame = inputs.checked.frame
    if inputs.order is None:
        # One pass parses the file and writes the three files: the split code of each row (one byte, in
        # memory) zipped beside the rows, and the sink partitioned by it. (The column checks' counts are not
        # read off the same scan: a scan shared by two queries buffers for the slower one, 200 MB at 10M rows.)
        def split_file(args: FileProviderArgs) -> Path:
            return folder / f"{data_lib.SPLITS[args.partition_keys.item()]}.parquet"

        by_split = pl.PartitionBy(
            folder, key=_SPLIT, include_key=False, file_path_provider=split_file, approximate_bytes_per_file=None
        )
        coded = pl.concat([frame, pl.LazyFrame({_SPLIT: inputs.codes})], how="horizontal")
        coded.sink_parquet(by_split, compression=_COMPRESSION, engine="streaming")
        return
    indexed = frame.with_row_index(_ROW)
    for name, part in inputs.parts.items():  # a temporal split: its rows in time order
        query = part.lazy().join(indexed, on=_ROW, how="left", maintain_order="left")
        query.drop(_ROW).sink_parquet(folder / f"{name}.parquet", compression=_COMPRESSION, engine="streaming")


def read_inputs(config: Config, spec: ModelSpec) -> tuple[Inputs, str]:
    """The prepare stage's first pass (:func:`check_inputs` without the feature columns, which
    :func:`write_splits` checks), and the data file's digest computed on a thread meanwhile: hashing and
    Polars both leave the GIL."""
    path = data_lib.input_file(config.data, config.root)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="digest") as pool:
        digest = pool.submit(data_lib.file_digest, path) if path.is_file() else None
        inputs = check_inputs(config, spec, columns=False)
        return inputs, digest.result() if digest else data_lib.file_digest(inputs.path)


def write_prepared(config: Config, spec: ModelSpec, inputs: Inputs, folder: Path) -> None:
    """The prepare stage's outputs but the manifest, into ``folder``: the split files, then the preprocessing
    fitted on the train split's file (read one column at a time) and its state."""
    write_splits(inputs, folder)
    fit_preprocessing(config, spec, inputs, folder / "train.parquet").save(folder / PREPROCESSING_FILE)


def fit_preprocessing(config: Config, spec: ModelSpec, inputs: Inputs, train_file: Path) -> Preprocessor:
    """The preprocessing fitted on the written train split (read one column at a time)."""
    return Preprocessor.fit(
        pl.scan_parquet(train_file),
        target=config.data.target,
        task=inputs.checked.task,
        classes=inputs.checked.classes,
        id_columns=config.data.id_columns,
        features=inputs.features,
        categorical_columns=config.data.categorical_columns,
        plan=encoding_plan(spec, config.recipe.preprocessing),
    )


def run_prepare(config: Config, context: tracking.RunContext | None = None) -> StageResult:
    """Load, validate and split the data; fit preprocessing on the train split."""
    tracking.preflight(config)  # bad credentials or a server that is down fail here, before any data work
    spec = check_model_name(config.recipe.model.name)
    data_cfg = config.data
    recorder = tracking.start_recorder(config, "prepare", context, RECORDER_MODULE)
    if recorder is None:
        preload.start(preload.MLFLOW)  # while Polars reads
    inputs, digest = read_inputs(config, spec)
    checked = inputs.checked
    rows = inputs.rows
    tags = {f"{tracking.TAG_PREFIX}task": checked.task, f"{tracking.TAG_PREFIX}data_digest": digest}
    with tracking.stage_run(config, "prepare", tags=tags, context=context, lazy=True, recorder=recorder) as run:
        out_dir = config.resolve(config.paths.prepared_dir)
        with staged_dir(out_dir) as scratch:
            write_prepared(config, spec, inputs, scratch)  # first: Polars writes without the GIL while MLflow loads
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
    return StageResult(run.info.run_id, [out_dir], {f"rows_{k}": v for k, v in rows.items()}, run.info.experiment_id)


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
