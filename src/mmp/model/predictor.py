"""Raw rows in, predictions out: the fitted preprocessing and model, shared by evaluation, the
MLflow pyfunc model, batch inference and serving."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mmp.data.preprocessing import Preprocessor
from mmp.model.registry import TrainedModel

PREPROCESSING_FILE = "preprocessing.json"


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
        return list(self.model.classes or [])

    def predict_proba(self, frame: pl.DataFrame) -> np.ndarray:
        """Class probabilities, one column per class in :attr:`classes` order."""
        return self.model.predict_proba(self.preprocessor.transform(frame))

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        """Predicted class labels (the user's values) or regression values."""
        x = self.preprocessor.transform(frame)
        if self.task == "regression":
            return self.model.predict_value(x)
        return np.asarray(self.classes, dtype=object)[self.model.predict_proba(x).argmax(axis=1)]
