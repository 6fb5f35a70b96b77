"""The MLflow pyfunc flavour of an mmp model: raw input rows in, predictions out.

Classifiers return the user's class labels; pass ``params={"predict_method": "predict_proba"}``
for a frame of class probabilities (one column per class).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import polars as pl

from mmp.model.predictor import Predictor

PREDICT_METHODS = ("predict", "predict_proba")


def to_polars(model_input: Any) -> pl.DataFrame:
    if isinstance(model_input, pl.DataFrame):
        return model_input
    if isinstance(model_input, pd.DataFrame):
        return pl.from_pandas(model_input)
    if isinstance(model_input, dict):
        return pl.DataFrame(model_input)
    if isinstance(model_input, list):
        return pl.DataFrame(model_input)
    raise TypeError(f"mmp models take a DataFrame of raw rows, not {type(model_input).__name__}")


class MmpModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        self.predictor = Predictor.load(Path(context.artifacts["preprocessing"]), Path(context.artifacts["model"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        method = (params or {}).get("predict_method", "predict")
        if method not in PREDICT_METHODS:
            raise ValueError(f"params.predict_method must be one of {', '.join(PREDICT_METHODS)}, got {method!r}")
        frame = to_polars(model_input)
        if method == "predict_proba" and self.predictor.task != "regression":
            proba = self.predictor.predict_proba(frame)
            return pd.DataFrame(proba, columns=[str(c) for c in self.predictor.classes])
        predictions = self.predictor.predict(frame)
        return predictions if self.predictor.task == "regression" else np.asarray(predictions, dtype=str)
