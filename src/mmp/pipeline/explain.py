"""The explain stage: exact SHAP values for a seeded sample of the test split, logged into the train run too."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mmp import preload, tracking
from mmp.config import Config
from mmp.data.preprocessing import Preprocessor
from mmp.errors import DataError
from mmp.files import read_json, safe_name, staged_dir, write_json_atomic
from mmp.model.trained import MODEL_INFO_FILE, TrainedModel
from mmp.pipeline import RECORDER_MODULE
from mmp.pipeline.common import StageResult, load_prepared

log = logging.getLogger(__name__)

SHAP_IMPORTANCE_FILE = "shap_importance.json"


SHAP_VALUES_FILE = "shap_values.parquet"


_BACKGROUND_ROWS = 1000


_PROGRESS_ROWS = 20_000


def run_explain(config: Config, context: tracking.RunContext | None = None) -> StageResult:
    """SHAP values for a seeded sample of the test split, logged into the train run they explain."""
    from mmp.explanation.shap import explain, explainer_name

    tracking.preflight(config)  # bad credentials or a server that is down fail here, before any data work
    recorder = tracking.start_recorder(config, "explain", context, RECORDER_MODULE)
    manifest, preprocessor, splits = load_prepared(config)
    model_dir = config.resolve(config.paths.model_dir)
    if not (model_dir / MODEL_INFO_FILE).is_file():
        raise DataError(f"No trained model in {model_dir}; run the train stage first (dvc repro)")
    model = TrainedModel.load(model_dir)
    explainer = explainer_name(model)  # fails clearly, before any work, for unsupported models
    train_run_id = read_json(model_dir / MODEL_INFO_FILE).get("mlflow_run_id", "")
    test = splits["test"]
    sample = test.sample(n=min(config.explain.sample_size, test.height), seed=config.seed, shuffle=True)
    background = splits["train"].sample(n=min(_BACKGROUND_ROWS, splits["train"].height), seed=config.seed)
    x = preprocessor.transform(sample)
    tags = {
        f"{tracking.TAG_PREFIX}task": model.task,
        f"{tracking.TAG_PREFIX}model_class": model.class_name,
        f"{tracking.TAG_PREFIX}train_run_id": train_run_id,
        f"{tracking.TAG_PREFIX}prepare_run_id": manifest.get("prepare_run_id", ""),
        f"{tracking.TAG_PREFIX}explainer": explainer,
    }
    with tracking.stage_run(config, "explain", tags=tags, context=context, lazy=True, recorder=recorder) as run:
        if recorder is None:
            preload.start(preload.MLFLOW)  # while SHAP computes
        started = time.perf_counter()
        explanation = explain(
            model,
            x,
            preprocessor.feature_groups,
            background=preprocessor.transform(background),
            progress=len(x) >= _PROGRESS_ROWS,
        )
        seconds = time.perf_counter() - started
        importance = explanation.mean_abs()
        out_dir = config.resolve(config.paths.explain_dir)
        with staged_dir(out_dir) as scratch:
            write_json_atomic(scratch / SHAP_IMPORTANCE_FILE, _importance_document(explanation, importance))
            _shap_frame(explanation, sample, preprocessor.id_columns).write_parquet(scratch / SHAP_VALUES_FILE)
            _write_shap_charts(scratch / "plots", explanation, x, preprocessor, config)
        extras = {"explain_seconds": seconds, "train_run_id": train_run_id}
        tracking.mirror(config, "explain", run, _mirror_explain, extras, [out_dir])
    top = ", ".join(list(importance)[:3])
    log.info("explain: %d rows with %s in %.2fs; top features: %s", len(x), explainer, seconds, top)
    return StageResult(run.info.run_id, [out_dir], {"mean_abs_shap": importance}, run.info.experiment_id)


def _importance_document(explanation: Any, importance: dict[str, float]) -> dict[str, Any]:
    """Mean |SHAP| per feature: a DVC metric (by name) and a DVC plot (the ranked list)."""
    return {
        "explainer": explanation.explainer,
        "output_space": explanation.output_space,
        "mean_abs_shap": importance,
        "ranking": [{"feature": name, "mean_abs_shap": value} for name, value in importance.items()],
    }


def _shap_frame(explanation: Any, sample: pl.DataFrame, id_columns: list[str]) -> pl.DataFrame:
    """SHAP values as a table: one row per sample row (and class, for multiclass), one column per feature."""
    ids = sample.select(id_columns) if id_columns else pl.DataFrame({"row": np.arange(sample.height)})
    if explanation.output_names is None:
        values = pl.DataFrame(explanation.values, schema=explanation.feature_names)
        return pl.concat(
            [ids, values.with_columns(base_value=pl.lit(float(explanation.base_values)))], how="horizontal"
        )
    frames = []
    for index, name in enumerate(explanation.output_names):
        values = pl.DataFrame(explanation.values[:, index, :], schema=explanation.feature_names)
        extra = {"class": pl.lit(name), "base_value": pl.lit(float(explanation.base_values[index]))}
        frames.append(pl.concat([ids, values.with_columns(**extra)], how="horizontal"))
    return pl.concat(frames)


def _write_shap_charts(
    folder: Path, explanation: Any, x: np.ndarray, preprocessor: Preprocessor, config: Config
) -> None:
    from mmp.explanation.charts import write_shap_plots

    data, categories = chart_values(x, preprocessor, explanation.feature_names)
    write_shap_plots(
        folder,
        explanation,
        data,
        top_k=config.explain.dependence_top_k,
        max_display=config.explain.max_display,
        categories=categories,
    )


def chart_values(
    x: np.ndarray, preprocessor: Preprocessor, names: list[str]
) -> tuple[np.ndarray, dict[str, list[str]]]:
    """One column per user column, in the user's units, for the charts; and each categorical's labels.

    Numbers are unscaled; a categorical column is its level's code (a one-hot group decoded back to one,
    NaN where no level is set), which the charts tick with the labels.
    """
    states = {column.name: column for column in preprocessor.columns}
    groups = preprocessor.feature_groups
    data = np.full((len(x), len(names)), np.nan)
    categories: dict[str, list[str]] = {}
    for position, name in enumerate(names):
        state = states[name]
        members = [i for i, group in enumerate(groups) if group == name]
        block = x[:, members].astype(float)
        if state.kind == "categorical":
            categories[name] = [str(level) for level in state.categories]
            if state.encoding == "onehot":
                data[:, position] = np.where(block.max(axis=1) > 0.5, block.argmax(axis=1), np.nan)
                continue
        column = block[:, 0]
        if state.mean is not None and state.std is not None:
            column = column * state.std + state.mean
        data[:, position] = column
    return data, categories


def _mirror_explain(config: Config, run: Any, extras: dict[str, Any]) -> None:
    import mlflow

    out_dir = config.resolve(config.paths.explain_dir)
    importance = read_json(out_dir / SHAP_IMPORTANCE_FILE)["mean_abs_shap"]
    metrics = {f"shap_{safe_name(name, allowed='_-./ ')}": value for name, value in importance.items()}
    mlflow.log_metrics({**metrics, "explain_seconds": extras["explain_seconds"]})
    train_run_id = extras["train_run_id"]
    mlflow.log_artifacts(str(out_dir), artifact_path="explain")
    if train_run_id:
        # The train run in the UI shows the explanations of its model.
        client = mlflow.MlflowClient()
        client.log_artifacts(train_run_id, str(out_dir), artifact_path="explain")
        client.set_tag(train_run_id, f"{tracking.TAG_PREFIX}explain_run_id", run.info.run_id)
        for name, value in metrics.items():
            client.log_metric(train_run_id, name, value)
