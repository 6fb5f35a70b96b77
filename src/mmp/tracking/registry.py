"""Models in MLflow: the model a train run logged, and ``mmp promote`` (the model registry, with aliases).

A promoted version carries its run's metrics and data set as tags, so the registry alone tells what a
version scored on which data. Aliases (``champion``), not the deprecated stages, name the version to serve:
``models:/<name>@champion``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmp.config import Config
from mmp.errors import MmpError
from mmp.tracking.store import setup
from mmp.tracking.tags import TAG_PREFIX


class ModelNotFound(MmpError):
    """The run or model URI does not name an mmp model in the tracking store."""


@dataclass(frozen=True)
class Promotion:
    name: str
    version: str
    alias: str
    run_id: str
    model_uri: str  # what serving takes: models:/<name>@<alias>


def run_of(run_id: str) -> Any:
    """The run, or ModelNotFound naming the store."""
    import mlflow

    try:
        return mlflow.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise ModelNotFound(
            f"No run '{run_id}' in the tracking store {mlflow.get_tracking_uri()}; list runs with `mmp runs`"
        ) from None


def logged_model_uri(run_id: str) -> str:
    """``models:/<model_id>`` of the newest complete model the run logged. MLflow must already be set up."""
    import mlflow

    run = run_of(run_id)
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}'",
        order_by=[{"field_name": "creation_timestamp", "ascending": False}],
        output_format="list",
    )
    # A mirror interrupted by the store may have left a model that never finished uploading; `mmp mirror`
    # then logs a complete one. Use the newest complete model.
    models = [model for model in models if str(model.status) == "READY"]
    if not models:
        stage = run.data.tags.get(f"{TAG_PREFIX}stage", "?")
        raise ModelNotFound(
            f"Run '{run_id}' ({stage} stage) logged no model; pick a train run (`mmp runs --stage train`)"
        )
    return f"models:/{models[0].model_id}"


def version_tags(run: Any) -> dict[str, str]:
    """What a registered version records of its run: split metrics (no curves), data set, recipe, task."""
    metrics = {
        name: f"{value:.6g}"
        for name, value in run.data.metrics.items()
        if name.split("_", 1)[0] in ("train", "valid", "test") and "_curve_" not in name
    }
    kept = ("data", "recipe", "task", "model_class")
    tags = {
        f"{TAG_PREFIX}{key}": run.data.tags[f"{TAG_PREFIX}{key}"]
        for key in kept
        if f"{TAG_PREFIX}{key}" in run.data.tags
    }
    return {**metrics, **tags, f"{TAG_PREFIX}run_id": run.info.run_id}


def promote(config: Config, run_id: str, name: str, alias: str) -> Promotion:
    """Register the run's model as a new version of ``name`` and point ``alias`` at it."""
    import mlflow

    setup(config)
    source = logged_model_uri(run_id)
    run = run_of(run_id)
    try:
        version = mlflow.register_model(source, name, tags=version_tags(run))
        mlflow.MlflowClient().set_registered_model_alias(name, alias, version.version)
    except mlflow.exceptions.MlflowException as exc:
        message = " ".join(str(exc).split())[:300]
        raise MmpError(f"Cannot promote run '{run_id}' as {name}@{alias}: {message}") from None
    return Promotion(name, str(version.version), alias, run_id, f"models:/{name}@{alias}")
