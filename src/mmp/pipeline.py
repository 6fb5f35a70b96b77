"""The stages: prepare, train and explain. The DVC stage scripts, the CLI and sweeps all call these.

Each stage checks its inputs before it starts an MLflow run, computes, writes its DVC outputs
atomically, then mirrors everything to its MLflow run. A mirror that the store interrupts is
recorded and replayed later by ``mmp mirror`` (:func:`remirror_pending`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mmp import data as data_lib
from mmp import pending, preload, tracking
from mmp.config import Config, dump_yaml, from_dict, tracking_root
from mmp.errors import ConfigError, DataError, TrackingError
from mmp.metrics import classification_metrics, flat_metrics, primary_metric, regression_metrics
from mmp.models import (
    FitResult,
    TrainedModel,
    build_and_fit,
    check_model_name,
    class_path,
    display_name,
    resolve_params,
)
from mmp.outputs import read_json, staged_dir, write_json_atomic
from mmp.predictor import PREPROCESSING_FILE, Predictor
from mmp.preprocessing import Preprocessor

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
CONFIG_ARTIFACT = "config.yaml"


@dataclass(frozen=True)
class StageResult:
    run_id: str
    outputs: list[Path]
    metrics: dict[str, Any]


# --------------------------------------------------------------------------- prepare


def run_prepare(config: Config, context: tracking.RunContext | None = None) -> StageResult:
    """Load, validate and split the data; fit preprocessing on the train split."""
    tracking.preflight(config)  # bad credentials or a server that is down fail here, before any data work
    family = check_model_name(config.recipe.model.name)
    data_cfg = config.data
    data_path = config.resolve(data_cfg.path)
    recorder = tracking.start_recorder(config, "prepare", context)
    if recorder is None:
        preload.start(preload.MLFLOW)  # while Polars reads
    frame = data_lib.load(data_cfg, data_path)
    cleaned = data_lib.clean_and_check(frame, data_cfg, config.recipe.task)
    class_path(family, cleaned.task)  # the model must be able to do this task
    parts = data_lib.split(cleaned.frame, data_cfg.target, cleaned.task, config.split, config.seed)
    features = data_lib.feature_columns(cleaned.frame, data_cfg)
    preprocessor = Preprocessor.fit(
        parts["train"],
        target=data_cfg.target,
        task=cleaned.task,
        classes=cleaned.classes,
        id_columns=data_cfg.id_columns,
        features=features,
        categorical_columns=data_cfg.categorical_columns,
        family=family,
        settings=config.recipe.preprocessing,
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
                "data": {"name": data_cfg.name, "path": str(data_cfg.path), "digest": digest},
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


# The _mirror_* functions log a finished stage to its MLflow run from the stage's DVC outputs (plus
# ``extras``: what the outputs do not hold). The stage calls them through tracking.mirror, and
# `mmp mirror` calls the same functions to replay a mirror that the store interrupted.


def _mirror_prepare(config: Config, run: Any, extras: dict[str, Any]) -> None:
    import mlflow

    out_dir = config.resolve(config.paths.prepared_dir)
    manifest = read_json(out_dir / MANIFEST_FILE)
    rows = {f"rows_{name}": count for name, count in manifest["rows"].items()}
    mlflow.log_metrics({**rows, "rows_dropped_null_target": manifest["dropped_null_target"]})
    head = pl.read_parquet(out_dir / "train.parquet", n_rows=5)
    data_path = config.resolve(config.data.path)
    tracking.log_dataset(data_path, manifest["data"]["digest"], config.data.name, "training", head.to_pandas())
    mlflow.log_artifact(str(out_dir / PREPROCESSING_FILE))
    mlflow.log_artifact(str(out_dir / MANIFEST_FILE))
    mlflow.log_text(dump_yaml(tracking.loggable_config(config)), CONFIG_ARTIFACT)


# --------------------------------------------------------------------------- train


def load_prepared(config: Config) -> tuple[dict[str, Any], Preprocessor, dict[str, pl.DataFrame]]:
    prepared = config.resolve(config.paths.prepared_dir)
    manifest_path = prepared / MANIFEST_FILE
    if not manifest_path.is_file():
        raise DataError(
            f"No prepared data in {prepared}; run the prepare stage first (dvc repro, or mmp train to run both)"
        )
    manifest = read_json(manifest_path)
    preprocessor = Preprocessor.load(prepared / PREPROCESSING_FILE)
    splits = {name: pl.read_parquet(prepared / f"{name}.parquet") for name in data_lib.SPLITS}
    return manifest, preprocessor, splits


def model_output(predictor: Predictor, x: np.ndarray) -> np.ndarray:
    """Class probabilities (classification) or predicted values (regression) for encoded rows."""
    if predictor.task == "regression":
        return predictor.model.predict_value(x)
    return predictor.model.predict_proba(x)


def evaluate(task: str, y: np.ndarray, output: np.ndarray) -> dict[str, float]:
    """The task's metrics from true labels and :func:`model_output`."""
    return regression_metrics(y, output) if task == "regression" else classification_metrics(y, output)


def run_train(
    config: Config,
    context: tracking.RunContext | None = None,
    on_iteration: Callable[[int, float], None] | None = None,
) -> StageResult:
    """Fit the recipe's model on the train split, early-stop on valid, evaluate every split.

    ``on_iteration(step, valid_loss)`` is called after each boosting round (search pruning).
    """
    tracking.preflight(config)  # bad credentials or a server that is down fail here, before any data work
    family = check_model_name(config.recipe.model.name)
    recorder = tracking.start_recorder(config, "train", context)
    manifest, preprocessor, splits = load_prepared(config)
    task = manifest["task"]
    if config.recipe.task not in ("auto", task) and not (config.recipe.task == "multiclass" and task == "binary"):
        raise ConfigError(
            f"recipe.task is {config.recipe.task} but the prepared data is {task}; re-run prepare (dvc repro)"
        )
    params = resolve_params(family, task, config.recipe.model.params, config.seed)
    model_class = display_name(class_path(family, task))
    x = {name: preprocessor.transform(frame) for name, frame in splits.items()}
    y = {name: preprocessor.encode_target(frame[preprocessor.target]) for name, frame in splits.items()}
    tags = {
        f"{tracking.TAG_PREFIX}task": task,
        f"{tracking.TAG_PREFIX}model_class": model_class,
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
        fit = build_and_fit(
            family,
            task,
            params,
            x["train"],
            y["train"],
            x["valid"],
            y["valid"],
            preprocessor.categorical_indices,
            config.recipe.model.early_stopping_rounds if family.early_stopping else None,
            on_iteration,
        )
        fit_seconds = time.perf_counter() - started
        means = np.nan_to_num(np.nanmean(x["train"], axis=0)).tolist()
        model = TrainedModel(family, task, fit.estimator, preprocessor.classes or [], means)
        predictor = Predictor(preprocessor, model)
        outputs = {name: model_output(predictor, x[name]) for name in data_lib.SPLITS}
        by_split = {name: evaluate(task, y[name], outputs[name]) for name in data_lib.SPLITS}
        model_dir = config.resolve(config.paths.model_dir)
        with staged_dir(model_dir) as scratch:
            model.save(scratch, mlflow_run_id=run.info.run_id)
        metrics_file = config.resolve(config.paths.metrics_file)
        write_json_atomic(metrics_file, by_split)
        plots_dir = config.resolve(config.paths.plots_dir)
        extras = {
            "fit_seconds": fit_seconds,
            "best_iteration": fit.best_iteration,
            "history": {split: [float(v) for v in values] for split, values in fit.history.items()},
            tracking.LATE_ARTIFACTS: {"plots": config.paths.plots_dir},
        }

        def draw_charts() -> None:  # while a recorder process logs the model
            _write_evaluation_plots(plots_dir, predictor, y["test"], outputs["test"], fit)

        written = [model_dir, metrics_file, plots_dir]
        tracking.mirror(config, "train", run, _mirror_train, extras, written, meanwhile=draw_charts)
    primary = primary_metric(task, config.recipe.metrics.primary)
    log.info(
        "train: %s test %s=%.4f (run %s)",
        model_class,
        primary,
        by_split["test"].get(primary, float("nan")),
        run.info.run_id,
    )
    return StageResult(run.info.run_id, [model_dir, metrics_file, plots_dir], by_split)


def _write_evaluation_plots(
    folder: Path, predictor: Predictor, y: np.ndarray, output: np.ndarray, fit: FitResult
) -> None:
    from mmp.plots import feature_importances, fold_importances, write_evaluation_plots

    pre, model = predictor.preprocessor, predictor.model
    raw = feature_importances(model.estimator, len(pre.feature_names))
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
    mlflow.log_metrics({**flat_metrics(read_json(metrics_file)), "fit_seconds": extras["fit_seconds"]})
    if extras["best_iteration"] is not None:
        mlflow.log_metric("best_iteration", extras["best_iteration"])
    for split, values in extras["history"].items():
        # Per-iteration scores as step metrics: the UI draws them as learning curves.
        _log_curve(f"{split}_curve_{_curve_metric(predictor.task)}", values)
    data_path = config.resolve(config.data.path)
    tracking.log_dataset(
        data_path, manifest["data"]["digest"], config.data.name, "training", test_frame.head(5).to_pandas()
    )
    mlflow.log_artifact(str(prepared / PREPROCESSING_FILE))
    mlflow.log_artifact(str(metrics_file))
    mlflow.log_text(dump_yaml(tracking.loggable_config(config)), CONFIG_ARTIFACT)
    if prepare_run := manifest.get("prepare_run_id"):
        link = f"#/experiments/{run.info.experiment_id}/runs/{prepare_run}"
        mlflow.set_tag("mlflow.note.content", f"Trained on data prepared by run [{prepare_run}]({link}).")
    log_pyfunc_model(predictor, test_frame, prepared / PREPROCESSING_FILE, model_dir)


def _curve_metric(task: str) -> str:
    return {"binary": "logloss", "multiclass": "mlogloss", "regression": "rmse"}[task]


def _log_curve(name: str, values: list[float]) -> None:
    import mlflow
    from mlflow.entities import Metric

    timestamp = int(time.time() * 1000)
    client = mlflow.MlflowClient()
    run_id = mlflow.active_run().info.run_id  # type: ignore[union-attr]
    metrics = [Metric(name, float(v), timestamp, step) for step, v in enumerate(values)]
    for start in range(0, len(metrics), 1000):  # the tracking API takes at most 1000 per batch
        client.log_batch(run_id, metrics=metrics[start : start + 1000], synchronous=True)


def log_pyfunc_model(predictor: Predictor, sample: pl.DataFrame, preprocessing_file: Path, model_dir: Path) -> str:
    """Log the model as an MLflow pyfunc taking raw rows; return its model URI."""
    import mlflow
    from mlflow.models import infer_signature

    from mmp import mlflow_model

    rows = sample.select(predictor.preprocessor.input_columns).head(5)
    output = predictor.predict(rows)
    example = rows.to_pandas()
    signature = infer_signature(example, np.asarray(output), params={"predict_method": "predict"})
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(Path(mlflow_model.__file__).with_name("mlflow_model_code.py")),
        artifacts={"preprocessing": str(preprocessing_file), "model": str(model_dir)},
        signature=signature,
        input_example=example,
        pip_requirements=_pip_requirements(predictor),
    )
    return info.model_uri


def _pip_requirements(predictor: Predictor) -> list[str]:
    from importlib import metadata

    packages = ["mlflow", "polars", "pyarrow", "pandas", "numpy", "scikit-learn", "skops"]
    packages += {"xgboost": ["xgboost"], "lightgbm": ["lightgbm"]}.get(predictor.model.family.name, [])
    return [f"{p}=={metadata.version(p)}" for p in packages]


# --------------------------------------------------------------------------- explain

SHAP_IMPORTANCE_FILE = "shap_importance.json"
SHAP_VALUES_FILE = "shap_values.parquet"
_BACKGROUND_ROWS = 1000
_PROGRESS_ROWS = 20_000


def run_explain(config: Config, context: tracking.RunContext | None = None) -> StageResult:
    """SHAP values for a seeded sample of the test split, logged into the train run they explain."""
    from mmp.explain import explain, explainer_name
    from mmp.models import MODEL_INFO_FILE

    tracking.preflight(config)  # bad credentials or a server that is down fail here, before any data work
    recorder = tracking.start_recorder(config, "explain", context)
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
        f"{tracking.TAG_PREFIX}model_class": display_name(model.class_path),
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
    return StageResult(run.info.run_id, [out_dir], {"mean_abs_shap": importance})


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
    from mmp.shap_plots import write_shap_plots

    # Colour by the encoded value where a column maps to one feature; one-hot groups have none.
    groups = preprocessor.feature_groups
    data = np.full((len(x), len(explanation.feature_names)), np.nan)
    for position, name in enumerate(explanation.feature_names):
        members = [i for i, group in enumerate(groups) if group == name]
        if len(members) == 1:
            data[:, position] = x[:, members[0]]
    write_shap_plots(
        folder, explanation, data, top_k=config.explain.dependence_top_k, max_display=config.explain.max_display
    )


def _mirror_explain(config: Config, run: Any, extras: dict[str, Any]) -> None:
    import mlflow

    out_dir = config.resolve(config.paths.explain_dir)
    importance = read_json(out_dir / SHAP_IMPORTANCE_FILE)["mean_abs_shap"]
    metrics = {f"shap_{_metric_key(name)}": value for name, value in importance.items()}
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


def _metric_key(name: str) -> str:
    """MLflow metric names allow letters, digits and _-. /; anything else becomes _."""
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in name)


# --------------------------------------------------------------------------- re-mirroring

MIRRORS: dict[str, tracking.MirrorFunction] = {
    "prepare": _mirror_prepare,
    "train": _mirror_train,
    "explain": _mirror_explain,
}


def remirror_pending(root: Path) -> list[pending.PendingMirror]:
    """Replay the project's interrupted mirrors, oldest first, each into its own run (``mmp mirror``).

    A record whose outputs a later run has replaced cannot be completed: its run is marked FAILED and the
    record dropped. The first store failure stops the replay with a TrackingError; later records stay.
    Returns the records handled.
    """
    import mlflow

    handled = []
    for record in pending.load_all(root):
        config = from_dict(record.config, root=root, overrides=tuple(record.overrides))
        try:
            if changed := pending.changed_outputs(record, root):
                tracking.setup(config)
                reason = f"its outputs ({', '.join(changed)}) were replaced by a later run before they were logged"
                client = mlflow.MlflowClient()
                client.set_tag(record.run_id, f"{tracking.TAG_PREFIX}error", reason)
                client.set_terminated(record.run_id, "FAILED")
                log.warning("%s run %s left FAILED: %s", record.stage, record.run_id, reason)
            else:
                with tracking.stage_run(config, record.stage, resume_run_id=record.run_id) as run:
                    MIRRORS[record.stage](config, run, record.extras)
                    tracking.log_late_artifacts(config, record.extras)
                log.info("mirrored the %s stage into run %s", record.stage, record.run_id)
        except Exception as exc:
            if not tracking.is_store_failure(exc):
                raise
            uri = tracking.resolve_tracking_uri(config.mlflow.tracking_uri, tracking_root(root))
            raise TrackingError(tracking.describe_failure(uri, exc, config.mlflow.experiment_name)) from None
        pending.remove(record)
        handled.append(record)
    return handled
