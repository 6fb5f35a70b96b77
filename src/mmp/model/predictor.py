"""The one prediction path: raw rows in, a :class:`Prediction` out. Evaluation, the MLflow pyfunc model,
batch inference and every serving route call it; the fast paths (row encoding, XGBoost's C call) live
below it, in the preprocessing and the adapters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mmp.data.preprocessing import Preprocessor
from mmp.model.trained import TrainedModel

PREPROCESSING_FILE = "preprocessing.json"
PREDICT_METHODS = ("predict", "predict_proba")  # what `params={"predict_method": ...}` may ask for


@dataclass(frozen=True)
class Prediction:
    """A model's answer for some rows: class probabilities (classification) or values (regression)."""

    task: str
    classes: list[str]
    output: np.ndarray  # (rows, classes) probabilities, or (rows,) values

    @property
    def is_regression(self) -> bool:
        return self.task == "regression"

    @cached_property
    def labels(self) -> np.ndarray:
        """The predicted class label of each row (the most probable class), or the value for regression."""
        if self.is_regression:
            return np.asarray(self.output, dtype=float)
        return np.asarray(self.classes, dtype=object)[self.output.argmax(axis=1)]

    def probabilities(self) -> list[dict[str, float]]:
        """Per row, each class label with its probability."""
        return [dict(zip(self.classes, map(float, row), strict=True)) for row in self.output]

    def values(self, method: str = "predict") -> list[Any]:
        """What MLflow's ``predict`` answers per row: labels or values, or labelled probabilities."""
        if method == "predict_proba" and not self.is_regression:
            return self.probabilities()
        return [float(v) for v in self.labels] if self.is_regression else [str(v) for v in self.labels]

    def records(self) -> list[dict[str, Any]]:
        """Per row: the prediction, and the labelled probabilities for classifiers (``/predict``)."""
        if self.is_regression:
            return [{"prediction": value} for value in self.values()]
        return [
            {"prediction": label, "probabilities": proba}
            for label, proba in zip(self.values(), self.probabilities(), strict=True)
        ]


@dataclass
class Predictor:
    preprocessor: Preprocessor
    model: TrainedModel

    @classmethod
    def load(cls, preprocessing_file: Path, model_dir: Path) -> Predictor:
        return cls(Preprocessor.load(preprocessing_file), TrainedModel.load(model_dir))

    @property
    def task(self) -> str:
        return self.model.task

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.model.classes or []]

    def predict_encoded(self, x: np.ndarray) -> Prediction:
        """The prediction for an encoded feature matrix (``preprocessor.transform`` or ``encode_rows``)."""
        return Prediction(self.task, self.classes, self.model.output(x))

    def predict_frame(self, frame: pl.DataFrame) -> Prediction:
        return self.predict_encoded(self.preprocessor.transform(frame))

    def predict_rows(self, rows: Sequence[Mapping[str, Any]]) -> Prediction:
        """Validated rows as dicts (the server's small requests), encoded without building a frame."""
        return self.predict_encoded(self.preprocessor.encode_rows(rows))

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        """Predicted class labels (the user's values) or regression values."""
        return self.predict_frame(frame).labels

    def predict_proba(self, frame: pl.DataFrame) -> np.ndarray:
        """Class probabilities, one column per class in :attr:`classes` order."""
        return self.predict_frame(frame).output
