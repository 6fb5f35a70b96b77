"""A fitted model: its spec, task, library estimator and classes, with everything asked of it going
through its library's adapter (:mod:`mmp.model.adapters`)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmp.model.adapters.base import Adapter, class_path, display_name
from mmp.model.calibration import Calibrator
from mmp.model.registry import MODELS, adapter_for
from mmp.model.spec import FitData, FitResult, ModelSpec, OnIteration

MODEL_INFO_FILE = "model_info.json"
LARGE_BATCH_ROWS = 1_000  # a prediction this large uses every core even where threads are limited
_CORES = os.cpu_count() or 1


def fit(
    spec: ModelSpec, task: str, params: dict[str, Any], data: FitData, on_iteration: OnIteration | None = None
) -> FitResult:
    """Build the library estimator and fit it, early-stopping on the valid split where the library can.

    ``on_iteration(step, valid_score)`` gets the valid split's eval metric after every boosting round;
    it may raise to stop the fit (a pruned search trial).
    """
    adapter = adapter_for(spec)
    if not adapter.early_stopping:
        data.early_stopping_rounds = None
    return adapter.fit(spec, task, params, data, on_iteration)


@dataclass
class TrainedModel:
    """A fitted model with what is needed to predict from an encoded feature matrix."""

    spec: ModelSpec
    task: str
    estimator: Any
    classes: list[Any]
    feature_means: list[float] | None = None  # train means of the encoded features (linear SHAP background)
    calibrator: Calibrator | None = None  # applied to the library's probabilities (recipe.calibration)
    threshold: float | None = None  # binary: the positive class when its probability exceeds it (else argmax)

    @property
    def adapter(self) -> Adapter:
        return adapter_for(self.spec)

    @property
    def class_path(self) -> str:
        return class_path(self.spec, self.task)

    @property
    def class_name(self) -> str:
        """'xgboost.XGBClassifier': the library class, as tags and the model card show it."""
        return display_name(self.class_path)

    @property
    def requirements(self) -> tuple[str, ...]:
        """The pip distributions this model's library needs, beyond mmp's prediction runtime."""
        return self.adapter.requirements

    def output(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (rows, classes), calibrated when a calibrator was kept, or regression values (rows,)."""
        proba = self.uncalibrated_output(x)
        return proba if self.calibrator is None else self.calibrator.apply(proba)

    def uncalibrated_output(self, x: np.ndarray) -> np.ndarray:
        """The library's own probabilities or values."""
        with self._batch_threads(len(x)):
            return self.adapter.output(self, x)

    def raw_output(self, x: np.ndarray) -> np.ndarray:
        """The output that SHAP contributions add up to (margin, log-odds, probability or value), uncalibrated."""
        return self.adapter.raw_output(self, x)

    def importances(self) -> np.ndarray | None:
        return self.adapter.importances(self.estimator)

    def cached(self, key: str, build: Callable[[], Any]) -> Any:
        """Something built once per model (an explainer: serving explains many small requests)."""
        cache = self.__dict__.setdefault("_cache", {})
        if key not in cache:
            cache[key] = build()
        return cache[key]

    def limit_threads(self, threads: int) -> None:
        """Predict with at most ``threads`` threads.

        A server runs one process per core: an OpenMP team per request in each of them oversubscribes the
        cores and costs more than it gains on small batches.
        """
        self.adapter.set_threads(self.estimator, threads)
        self._threads = threads

    @contextlib.contextmanager
    def _batch_threads(self, rows: int) -> Iterator[None]:
        """Every core for a large batch: its work dwarfs an OpenMP team's start-up."""
        limit = getattr(self, "_threads", 0)
        if not limit or limit >= _CORES or rows < LARGE_BATCH_ROWS:
            yield
            return
        self.limit_threads(_CORES)
        try:
            yield
        finally:
            self.limit_threads(limit)

    def save(self, folder: Path, **extra: Any) -> None:
        """Write the native model file and ``model_info.json`` (plus ``extra`` fields, e.g. the run id)."""
        folder.mkdir(parents=True, exist_ok=True)
        filename = self.adapter.save(self.estimator, folder)
        info = {
            "family": self.spec.name,
            "class": self.class_name,
            "task": self.task,
            "classes": self.classes,
            "file": filename,
            "feature_means": self.feature_means,
            "calibration": None if self.calibrator is None else self.calibrator.to_dict(),
            "threshold": self.threshold,
            **extra,
        }
        (folder / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> TrainedModel:
        info = json.loads((folder / MODEL_INFO_FILE).read_text(encoding="utf-8"))
        spec = MODELS[info["family"]]  # "family": the recipe's model name (the key kept by earlier versions)
        task = info["task"]
        estimator = adapter_for(spec).load(spec, task, folder / info["file"])
        calibrator = Calibrator.from_dict(info.get("calibration"))
        return cls(spec, task, estimator, info["classes"], info.get("feature_means"), calibrator, info.get("threshold"))
