"""Finding a trained mmp model in MLflow and bringing it local: by run id, ``models:/<name>@<alias>``,
``models:/<model_id>`` or ``runs:/<run_id>/model``, from the local store or a tracking server.

Serving and batch inference load the model through here once, then predict with :class:`Predictor`
directly (no pyfunc indirection on the request path).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmp.config import Config
from mmp.model.predictor import Predictor
from mmp.tracking import TAG_PREFIX, setup
from mmp.tracking.registry import ModelNotFound, logged_model_uri

log = logging.getLogger(__name__)

SOURCE_FILE = "mmp_source.json"  # written next to the downloaded model: where it came from


@dataclass
class ModelCard:
    """What a person (and /metadata) wants to know about the served model."""

    model_uri: str
    run_id: str | None
    model_class: str | None
    recipe: str | None
    data: str | None
    task: str
    metrics: dict[str, float] = field(default_factory=dict)
    top_features: list[tuple[str, float]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class LocalModel:
    """A model downloaded from MLflow: its predictor and its card."""

    predictor: Predictor
    card: ModelCard
    directory: Path


def resolve_model_uri(run_id: str | None = None, model_uri: str | None = None) -> str:
    """The model URI of a run's mmp model, or ``model_uri`` itself. MLflow must already be set up."""
    if model_uri:
        return model_uri
    if not run_id:
        raise ModelNotFound("Name the model with --run-id RUN_ID or --model-uri models:/NAME@ALIAS")
    return logged_model_uri(run_id)


def download(config: Config, *, run_id: str | None = None, model_uri: str | None = None, dest: Path) -> Path:
    """Download the model's artifacts into ``dest`` and record its card next to them."""
    import mlflow

    setup(config)
    uri = resolve_model_uri(run_id, model_uri)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest)))
        info = mlflow.models.get_model_info(uri)
    except mlflow.exceptions.MlflowException as exc:
        message = " ".join(str(exc).split())[:300]
        raise ModelNotFound(f"Cannot load {uri}: {message}; check the run id or model URI") from None
    if "preprocessing" not in _artifact_paths(local):
        raise ModelNotFound(
            f"{uri} is not an mmp model (no preprocessing artifact); serve it with `mlflow models serve`"
        )
    card = _card(uri, info.run_id)
    (local / SOURCE_FILE).write_text(json.dumps(card.__dict__, indent=2), encoding="utf-8")
    return local


def _card(uri: str, run_id: str | None) -> ModelCard:
    import mlflow

    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    if run_id:
        run = mlflow.get_run(run_id)
        metrics = dict(run.data.metrics)
        tags = {k: v for k, v in run.data.tags.items() if k.startswith(TAG_PREFIX) or k.startswith("mlflow.source.git")}
    shap = sorted(((k[len("shap_") :], v) for k, v in metrics.items() if k.startswith("shap_")), key=lambda kv: -kv[1])
    return ModelCard(
        model_uri=uri,
        run_id=run_id,
        model_class=tags.get(f"{TAG_PREFIX}model_class"),
        recipe=tags.get(f"{TAG_PREFIX}recipe"),
        data=tags.get(f"{TAG_PREFIX}data"),
        task=tags.get(f"{TAG_PREFIX}task", ""),
        metrics={
            k: v for k, v in metrics.items() if k.split("_", 1)[0] in ("train", "valid", "test") and "_curve_" not in k
        },
        top_features=shap[:10],
        tags=tags,
    )


def _artifact_paths(directory: Path) -> dict[str, str]:
    """The pyfunc's artifact name -> path inside the model folder, from its MLmodel file."""
    import yaml

    mlmodel = yaml.safe_load((directory / "MLmodel").read_text(encoding="utf-8"))
    artifacts = mlmodel.get("flavors", {}).get("python_function", {}).get("artifacts", {}) or {}
    return {name: spec["path"] for name, spec in artifacts.items()}


def load_local(directory: Path) -> LocalModel:
    """Load a downloaded model (what each server worker does once, at start)."""
    paths = _artifact_paths(directory)
    predictor = Predictor.load(directory / paths["preprocessing"], directory / paths["model"])
    raw: dict[str, Any] = json.loads((directory / SOURCE_FILE).read_text(encoding="utf-8"))
    card = ModelCard(**{**raw, "top_features": [tuple(pair) for pair in raw.get("top_features", [])]})
    if not card.task:
        card.task = predictor.task
    return LocalModel(predictor, card, directory)


def load(config: Config, *, run_id: str | None = None, model_uri: str | None = None, dest: Path) -> LocalModel:
    """Download and load in one go (batch inference, tests)."""
    return load_local(download(config, run_id=run_id, model_uri=model_uri, dest=dest))
