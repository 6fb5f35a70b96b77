"""The train stage: fit the recipe's model, early-stop on valid, evaluate every split, log the pyfunc model."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mmp import data as data_lib
from mmp import preload, tracking
from mmp.config import Config, dump_yaml
from mmp.data.preprocessing import Preprocessor
from mmp.data.split import folds
from mmp.errors import ConfigError
from mmp.evaluation.drift import save_reference, training_reference
from mmp.evaluation.metrics import classification_metrics, flat_metrics, primary_metric, regression_metrics
from mmp.files import read_json, staged_dir, write_json_atomic
from mmp.model import distributed
from mmp.model.predictor import PREPROCESSING_FILE, Predictor
from mmp.model.registry import check_model_name, class_name, resolve_params
from mmp.model.spec import FitData, FitResult, ModelSpec
from mmp.model.trained import TrainedModel, fit
from mmp.model.weighting import class_weights
from mmp.pipeline import RECORDER_MODULE, decisions
from mmp.pipeline.common import CONFIG_ARTIFACT, MANIFEST_FILE, StageResult, load_prepared
from mmp.pipeline.cv import CrossValidated, cross_validate

log = logging.getLogger(__name__)


def scored_rows(n: int, sample: int | None, seed: int) -> np.ndarray | None:
    """The train rows whose scores give the train split's metrics: None (all of them) up to ``sample`` rows,
    else a seeded sample of ``sample`` rows, in file order. Valid and test are always scored whole."""
    if sample is None or n <= sample:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))


def evaluate(task: str, y: np.ndarray, output: np.ndarray, threshold: float | None = None) -> dict[str, float]:
    """The task's metrics from true labels and a :class:`Prediction`'s output (probabilities or values)."""
    return regression_metrics(y, output) if task == "regression" else classification_metrics(y, output, threshold)


def run_train(
    config: Config,
    context: tracking.RunContext | None = None,
    on_iteration: Callable[[int, float], None] | None = None,
) -> StageResult:
    """Fit the recipe's model on the train split, early-stop on valid, evaluate every split.

    ``on_iteration(step, valid_loss)`` is called after each boosting round (search pruning).
    """
    tracking.preflight(config)  # bad credentials or a server that is down fail here, before any data work
    spec = check_model_name(config.recipe.model.name)
    if config.compute.engine == "dask":
        distributed.check_distributed(spec)  # before any data work
    recorder = tracking.start_recorder(config, "train", context, RECORDER_MODULE)
    manifest, preprocessor, splits = load_prepared(config)
    task = manifest["task"]
    if config.recipe.task not in ("auto", task) and not (config.recipe.task == "multiclass" and task == "binary"):
        raise ConfigError(
            f"recipe.task is {config.recipe.task} but the prepared data is {task}; re-run prepare (dvc repro)"
        )
    params = resolve_params(spec, task, config.recipe.model.params, config.seed)
    x = {name: preprocessor.transform(frame) for name, frame in splits.items()}
    y = {name: preprocessor.encode_target(frame[preprocessor.target]) for name, frame in splits.items()}
    weights = class_weights(config.recipe.class_weight, y["train"], preprocessor.classes or [], task)
    fit_rows = decisions.fit_rows(config.recipe, task, y["train"], config.seed)  # train less the calibration rows
    if config.compute.engine != "local" and config.cv.folds < 2:
        # A cluster fit reads the whole train split, unweighted: no calibration rows held out, no class weights.
        for key, value in (("recipe.calibration", config.recipe.calibration), ("recipe.class_weight", weights)):
            if value not in ("none", None):
                raise ConfigError(
                    f"{key} is not supported with compute.engine {config.compute.engine}; "
                    "use compute.engine local (or cv.folds, which fits locally)"
                )
    tags = {
        f"{tracking.TAG_PREFIX}task": task,
        f"{tracking.TAG_PREFIX}model_class": class_name(spec, task),
        f"{tracking.TAG_PREFIX}prepare_run_id": manifest.get("prepare_run_id", ""),
    }
    with tracking.stage_run(config, "train", tags=tags, context=context, lazy=True, recorder=recorder) as run:
        run.begin()  # a recorder creates the run during the fit
        # While the model fits: the charts' modules, and MLflow's unless the recorder has it.
        if recorder is None:
            preload.start(preload.TRAIN, then=[preload.mlflow_requirements_map])
        else:
            preload.start(preload.CHARTS)
        started = time.perf_counter()
        folded = None
        if config.cv.folds > 1:  # k fits on train+valid, then the refit on all of it
            folded = _cross_validate(config, spec, task, params, splits, x, y, preprocessor, weights)
        held = not fit_rows.all()  # no copy of the train matrix unless calibration rows are held out
        data = FitData(
            x["train"][fit_rows] if held else x["train"],
            y["train"][fit_rows] if held else y["train"],
            x["valid"],
            y["valid"],
            preprocessor.categorical_indices,
            config.recipe.model.early_stopping_rounds,
            weights,
        )
        if folded is None:
            result, cluster_tags = _fit(config, spec, task, params, data, preprocessor, manifest["rows"], on_iteration)
        else:
            result, cluster_tags = folded.final, {}
        fit_seconds = time.perf_counter() - started
        means = np.nan_to_num(np.nanmean(x["train"], axis=0)).tolist()
        model = TrainedModel(spec, task, result.estimator, preprocessor.classes or [], means)
        # Calibration (fitted on predictions of rows their model never saw, kept if it helps valid), threshold.
        if folded is None:
            rows = _calibration_rows(config, spec, task, params, splits, preprocessor, data, model, x, y, fit_rows)
            decided = decisions.decide(config.recipe, model, x, y, rows)
        else:
            y_dev = np.concatenate([y["train"], y["valid"]])
            decided = decisions.decide_from_folds(
                config.recipe, model, folded.oof, y_dev, folded.fold_of, folded.validated, x["test"], y["test"]
            )
        predictor = Predictor(preprocessor, model)
        scored = scored_rows(len(y["train"]), config.recipe.metrics.train_sample_rows, config.seed)
        x_eval = {**x, "train": x["train"][scored]} if scored is not None else x
        y_eval = {**y, "train": y["train"][scored]} if scored is not None else y
        outputs = {name: predictor.predict_encoded(x_eval[name]).output for name in data_lib.SPLITS}
        by_split = {name: evaluate(task, y_eval[name], outputs[name], model.threshold) for name in data_lib.SPLITS}
        if scored is not None:  # said beside the metrics it qualifies: train_scored_rows
            by_split["train"]["scored_rows"] = float(scored.size)
        if folded is not None:  # the refit has seen valid: its honest scores are the out-of-fold ones
            oof = folded.oof[folded.validated]
            if model.calibrator is not None:
                oof = model.calibrator.apply(oof)
            by_split["valid"] = evaluate(task, y_dev[folded.validated], oof, model.threshold)
            decided.metrics.update(folded.summary())
        model_dir = config.resolve(config.paths.model_dir)
        with staged_dir(model_dir) as scratch:
            model.save(scratch, mlflow_run_id=run.info.run_id)
            # The training distribution travels with the model: batch inference and /drift compare with it.
            save_reference(scratch, training_reference(predictor, splits["train"], outputs["train"]))
        metrics_file = config.resolve(config.paths.metrics_file)
        write_json_atomic(metrics_file, by_split)
        plots_dir = config.resolve(config.paths.plots_dir)
        extras = {
            "fit_seconds": fit_seconds,
            "best_iteration": result.best_iteration,
            "cluster_tags": cluster_tags,
            "class_weights": dict(zip(predictor.classes, weights, strict=True)) if weights else {},
            "decisions": {"params": decided.params, "metrics": decided.metrics},
            "folds": [] if folded is None else folded.fold_metrics,
            "history": {split: [float(v) for v in values] for split, values in result.history.items()},
            tracking.LATE_ARTIFACTS: {"plots": config.paths.plots_dir},
        }

        def draw_charts() -> None:  # while a recorder process logs the model
            _write_evaluation_plots(plots_dir, predictor, y["test"], outputs["test"], result)
            decisions.write_reliability(plots_dir, y["test"], decided, config.recipe.calibration_bins)

        written = [model_dir, metrics_file, plots_dir]
        tracking.mirror(config, "train", run, _mirror_train, extras, written, meanwhile=draw_charts)
    primary = primary_metric(task, config.recipe.metrics.primary)
    log.info(
        "train: %s test %s=%.4f (run %s)",
        model.class_name,
        primary,
        by_split["test"].get(primary, float("nan")),
        run.info.run_id,
    )
    return StageResult(run.info.run_id, [model_dir, metrics_file, plots_dir], by_split, run.info.experiment_id)


def _write_evaluation_plots(
    folder: Path, predictor: Predictor, y: np.ndarray, output: np.ndarray, fit: FitResult
) -> None:
    from mmp.evaluation.plots import feature_importances, fold_importances, write_evaluation_plots

    pre, model = predictor.preprocessor, predictor.model
    raw = feature_importances(model, len(pre.feature_names))
    names, importances = fold_importances(raw, pre.feature_groups) if raw is not None else (pre.input_columns, None)
    classification = predictor.task != "regression"
    write_evaluation_plots(
        folder,
        task=predictor.task,
        classes=predictor.classes if classification else None,
        y_true=y,
        proba=output if classification else None,
        predicted=None if classification else output,
        feature_names=names,
        importances=importances,
        history=fit.history,
        history_metric=_curve_metric(predictor.task),
        threshold=model.threshold,
    )


def _mirror_train(config: Config, run: Any, extras: dict[str, Any]) -> None:
    """Everything but the charts, which are drawn meanwhile and logged last (``extras``' late artifacts)."""
    import mlflow

    prepared = config.resolve(config.paths.prepared_dir)
    model_dir = config.resolve(config.paths.model_dir)
    metrics_file = config.resolve(config.paths.metrics_file)
    manifest = read_json(prepared / MANIFEST_FILE)
    predictor = Predictor.load(prepared / PREPROCESSING_FILE, model_dir)
    test_frame = pl.read_parquet(prepared / "test.parquet", n_rows=5)
    metrics = {**flat_metrics(read_json(metrics_file)), "fit_seconds": extras["fit_seconds"]}
    params: dict[str, Any] = {}
    curves: dict[str, list[float]] = {}
    if extras["best_iteration"] is not None:
        metrics["best_iteration"] = extras["best_iteration"]
    if decided := extras.get("decisions"):  # the calibration decision, its scores, the threshold
        params.update(decided["params"])
        metrics.update(decided["metrics"])
    for name in extras["folds"][0] if extras.get("folds") else ():  # one step per fold: cv_fold_roc_auc, ...
        curves[f"cv_fold_{name}"] = [fold[name] for fold in extras["folds"]]
    if extras.get("class_weights"):  # what recipe.class_weight came to, per class
        params.update({f"class_weight_effective.{label}": w for label, w in extras["class_weights"].items()})
    for split, values in extras["history"].items():
        # Per-iteration scores as step metrics: the UI draws them as learning curves.
        curves[f"{split}_curve_{_curve_metric(predictor.task)}"] = values
    cluster = extras.get("cluster_tags") or {}  # compute.engine dask: the cluster the model was fitted on
    tracking.log_batch(run.info.run_id, metrics, curves, params, cluster)
    data_path = data_lib.source_location(config.data, config.root)
    tracking.log_dataset(
        data_path, manifest["data"]["digest"], config.data.name, "training", test_frame.head(5).to_pandas()
    )
    mlflow.log_artifact(str(prepared / PREPROCESSING_FILE))
    mlflow.log_artifact(str(metrics_file))
    mlflow.log_text(dump_yaml(tracking.loggable_config(config)), CONFIG_ARTIFACT)
    if prepare_run := manifest.get("prepare_run_id"):
        link = f"#/experiments/{run.info.experiment_id}/runs/{prepare_run}"
        mlflow.set_tag("mlflow.note.content", f"Trained on data prepared by run [{prepare_run}]({link}).")
    from mmp.model.pyfunc import log_model

    log_model(predictor, test_frame, prepared / PREPROCESSING_FILE, model_dir)


def _fit(
    config: Config,
    spec: ModelSpec,
    task: str,
    params: dict[str, Any],
    data: FitData,
    preprocessor: Preprocessor,
    rows: dict[str, int],
    on_iteration: Callable[[int, float], None] | None,
) -> tuple[FitResult, dict[str, str]]:
    """Fit here, or on a Dask cluster (compute.engine dask; no per-round callback there), with the cluster's tags."""
    if config.compute.engine == "local":
        return fit(spec, task, params, data, on_iteration), {}
    with distributed.connect(config.compute) as (client, cluster):
        prepared = config.resolve(config.paths.prepared_dir)
        cluster_data = distributed.partitioned(prepared, rows, preprocessor, cluster.workers, data)
        result = distributed.fit(client, spec, task, params, cluster_data)
    return result, cluster.as_tags(f"{tracking.TAG_PREFIX}cluster.")


def _calibration_rows(
    config: Config,
    spec: ModelSpec,
    task: str,
    params: dict[str, Any],
    splits: dict[str, pl.DataFrame],
    preprocessor: Preprocessor,
    data: FitData,
    model: TrainedModel,
    x: dict[str, np.ndarray],
    y: dict[str, np.ndarray],
    fit_rows: np.ndarray,
) -> decisions.CalibrationRows | None:
    """The rows ``recipe.calibration`` fits on: out-of-fold predictions of the train split (``oof``: folds as
    ``split.strategy`` says, seeded apart from the split), or the train rows held out of the fit (``holdout``)."""
    recipe = config.recipe
    if recipe.calibration == "none":
        return None
    if recipe.calibration_method == "holdout":
        return decisions.CalibrationRows.held_out(model, x["train"], y["train"], ~fit_rows)
    fold_of = folds(splits["train"], preprocessor.target, task, config.split, recipe.calibration_folds, config.seed + 1)
    temporal = config.split.strategy == "temporal"
    return decisions.cross_fitted(recipe, spec, task, params, data, fold_of, temporal, model.classes)


def _cross_validate(
    config: Config,
    spec: ModelSpec,
    task: str,
    params: dict[str, Any],
    splits: dict[str, pl.DataFrame],
    x: dict[str, np.ndarray],
    y: dict[str, np.ndarray],
    preprocessor: Preprocessor,
    weights: list[float] | None,
) -> CrossValidated:
    """``cv.folds`` folds of train+valid (as ``split.strategy`` says), fitted, then the final refit."""
    k = config.cv.folds
    development = pl.concat([splits["train"], splits["valid"]], how="vertical_relaxed")
    fold_of = folds(development, preprocessor.target, task, config.split, k, config.seed)
    return cross_validate(
        spec,
        task,
        params,
        np.concatenate([x["train"], x["valid"]]),
        np.concatenate([y["train"], y["valid"]]),
        fold_of,
        k,
        config.split.strategy == "temporal",
        [str(c) for c in preprocessor.classes or []],
        preprocessor.categorical_indices,
        config.recipe.model.early_stopping_rounds,
        weights,
    )


def _curve_metric(task: str) -> str:
    return {"binary": "logloss", "multiclass": "mlogloss", "regression": "rmse"}[task]
