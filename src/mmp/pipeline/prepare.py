"""The prepare stage: load, validate and split the data; fit the preprocessing on the train split."""

from __future__ import annotations

import logging
from typing import Any

import polars as pl

from mmp import data as data_lib
from mmp import preload, tracking
from mmp.config import Config, dump_yaml
from mmp.data.preprocessing import Preprocessor
from mmp.files import read_json, staged_dir, write_json_atomic
from mmp.model.predictor import PREPROCESSING_FILE
from mmp.model.registry import check_model_name, encoding_plan, resolve_params
from mmp.model.spec import ModelSpec
from mmp.pipeline import RECORDER_MODULE
from mmp.pipeline.common import CONFIG_ARTIFACT, MANIFEST_FILE, StageResult

log = logging.getLogger(__name__)


def check_inputs(
    config: Config, spec: ModelSpec | None = None
) -> tuple[data_lib.Cleaned, dict[str, pl.DataFrame], list[str]]:
    """The prepare stage's checks of config and data, with no side effect: the data cleaned, split and its
    feature columns. ``mmp validate`` runs exactly these, so it answers the errors the stage would."""
    spec = spec or check_model_name(config.recipe.model.name)
    data_cfg = config.data
    frame = data_lib.load(data_cfg, data_lib.input_file(data_cfg, config.root))
    cleaned = data_lib.clean_and_check(frame, data_cfg, config.recipe.task)
    resolve_params(spec, cleaned.task, config.recipe.model.params, config.seed)  # the model can do this task
    parts = data_lib.split(cleaned.frame, data_cfg.target, cleaned.task, config.split, config.seed)
    return cleaned, parts, data_lib.feature_columns(cleaned.frame, data_cfg)


def run_prepare(config: Config, context: tracking.RunContext | None = None) -> StageResult:
    """Load, validate and split the data; fit preprocessing on the train split."""
    tracking.preflight(config)  # bad credentials or a server that is down fail here, before any data work
    spec = check_model_name(config.recipe.model.name)
    data_cfg = config.data
    data_path = data_lib.input_file(data_cfg, config.root)  # a SQL or remote source: its local snapshot
    recorder = tracking.start_recorder(config, "prepare", context, RECORDER_MODULE)
    if recorder is None:
        preload.start(preload.MLFLOW)  # while Polars reads
    cleaned, parts, features = check_inputs(config, spec)
    preprocessor = Preprocessor.fit(
        parts["train"],
        target=data_cfg.target,
        task=cleaned.task,
        classes=cleaned.classes,
        id_columns=data_cfg.id_columns,
        features=features,
        categorical_columns=data_cfg.categorical_columns,
        plan=encoding_plan(spec, config.recipe.preprocessing),
    )
    digest = data_lib.file_digest(data_path)
    rows = {name: part.height for name, part in parts.items()}
    tags = {f"{tracking.TAG_PREFIX}task": cleaned.task, f"{tracking.TAG_PREFIX}data_digest": digest}
    with tracking.stage_run(config, "prepare", tags=tags, context=context, lazy=True, recorder=recorder) as run:
        out_dir = config.resolve(config.paths.prepared_dir)
        with staged_dir(out_dir) as scratch:
            for name, part in parts.items():  # first: Polars writes without the GIL while MLflow loads
                part.write_parquet(scratch / f"{name}.parquet")
            preprocessor.save(scratch / PREPROCESSING_FILE)
            manifest = {
                "prepare_run_id": run.info.run_id,
                "data": {
                    "name": data_cfg.name,
                    "path": data_cfg.path or str(data_lib.source_location(data_cfg, config.root)),
                    "digest": digest,
                },
                "task": cleaned.task,
                "target": data_cfg.target,
                "classes": cleaned.classes,
                "rows": rows,
                "dropped_null_target": cleaned.dropped_null_target,
                "features": features,
            }
            write_json_atomic(scratch / MANIFEST_FILE, manifest)
        tracking.mirror(config, "prepare", run, _mirror_prepare, {}, [out_dir])
    log.info(
        "prepare: %s rows -> train %d / valid %d / test %d (%s)", cleaned.frame.height, *rows.values(), cleaned.task
    )
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
