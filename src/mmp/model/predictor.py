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

from mmp.data.preprocessing import ColumnState, Preprocessor
from mmp.errors import DataError
from mmp.model.trained import TrainedModel

PREPROCESSING_FILE = "preprocessing.json"
PREDICT_METHODS = ("predict", "predict_proba")  # what `params={"predict_method": ...}` may ask for
FLOAT32_MAX = float(np.finfo(np.float32).max)  # models see float32: a larger finite number becomes infinity


@dataclass(frozen=True)
class Prediction:
    """A model's answer for some rows: class probabilities (classification) or values (regression)."""

    task: str
    classes: list[str]
    output: np.ndarray  # (rows, classes) probabilities, or (rows,) values
    threshold: float | None = None  # binary: the positive (second) class when its probability exceeds it

    @property
    def is_regression(self) -> bool:
        return self.task == "regression"

    @cached_property
    def labels(self) -> np.ndarray:
        """The predicted class label of each row, or the value for regression.

        Binary with a threshold: the positive class when its probability exceeds the threshold (0.5 is the
        most probable class); otherwise the most probable class.
        """
        if self.is_regression:
            return np.asarray(self.output, dtype=float)
        return np.asarray(self.classes, dtype=object)[self.codes]

    @cached_property
    def codes(self) -> np.ndarray:
        """The predicted class code of each row (classification)."""
        if self.threshold is not None and self.output.shape[1] == 2:
            return (self.output[:, 1] > self.threshold).astype(np.int64)
        return self.output.argmax(axis=1)

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

    def takes_missing(self, column: ColumnState) -> bool:
        """The one null policy, shared by serving, the pyfunc model and batch inference.

        A missing value (null or NaN) is taken where the model can handle it: in a categorical column
        (it is encoded like an unseen category), and in a numeric column that was nullable in train, has
        an imputer fitted on train, or feeds a model with native missing-value support
        (XGBoost, LightGBM, CatBoost, HistGradientBoosting).
        """
        return (
            column.kind == "categorical"
            or column.nullable
            or column.impute is not None
            or self.model.spec.handles_missing
        )

    @cached_property
    def strict_columns(self) -> frozenset[str]:
        """Input columns that cannot take a missing value (see :meth:`takes_missing`)."""
        return frozenset(c.name for c in self.preprocessor.columns if not self.takes_missing(c))

    def check_frame(self, frame: pl.DataFrame) -> None:
        """Raise :class:`DataError` naming the column for a missing value the model cannot take, or a number
        beyond float32's range (the models' input type), instead of a library's message or a wrong answer."""
        for column in self.preprocessor.columns:
            if column.name not in frame.columns or column.kind != "numeric":
                continue
            series = frame[column.name]
            if series.dtype in (pl.String, pl.Categorical, pl.Enum):
                series = _parse_numbers(column.name, series.cast(pl.String))
            if not series.dtype.is_numeric():
                continue
            values = series.cast(pl.Float64)
            if column.name in self.strict_columns:
                missing = values.null_count() + (values.is_nan().sum() if values.dtype.is_float() else 0)
                if missing:
                    raise DataError(
                        f"Column '{column.name}' has {missing} missing value(s), but the model was trained without "
                        "missing values there and cannot take them (no imputer, no native missing-value support); "
                        "fill them, or retrain with preprocessing.numeric_imputation set"
                    )
            too_large = int((values.abs() > FLOAT32_MAX).sum() or 0)
            if too_large:
                raise DataError(
                    f"Column '{column.name}' has {too_large} value(s) beyond the model's float32 range "
                    f"(+/-{FLOAT32_MAX:.4g}), or infinite"
                )

    def predict_encoded(self, x: np.ndarray) -> Prediction:
        """The prediction for an encoded feature matrix (``preprocessor.transform`` or ``encode_rows``)."""
        return Prediction(self.task, self.classes, self.model.output(x), self.model.threshold)

    def predict_frame(self, frame: pl.DataFrame) -> Prediction:
        """Raw rows as a frame (batch inference, the pyfunc model, evaluation), checked by :meth:`check_frame`."""
        self.check_frame(frame)
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


def _parse_numbers(name: str, text: pl.Series) -> pl.Series:
    """Numbers sent as text ("3", "2.5") for a numeric column; text that is not a number is refused, not read as
    missing. An empty string counts as missing, as in a CSV file."""
    text = text.str.strip_chars()
    numbers = text.cast(pl.Float64, strict=False)
    bad = text.filter(numbers.is_null() & text.is_not_null() & (text != ""))
    if len(bad):
        raise DataError(
            f"Column '{name}' is numeric, but {len(bad)} value(s) are not numbers (first: {bad[0][:40]!r}); "
            "send numbers or leave the value empty"
        )
    return numbers
