"""The MLflow pyfunc flavour of an mmp model: raw input rows in, predictions out.

Classifiers return the user's class labels; pass ``params={"predict_method": "predict_proba"}`` for a
frame of class probabilities (one column per class). The model is logged from code
(:mod:`mmp.model.pyfunc_code`) with the ``mmp`` package as its code path, so that it loads where mmp is
not installed, from the model's own ``requirements.txt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import polars as pl

from mmp.model.predictor import PREDICT_METHODS, Predictor

CODE_FILE = Path(__file__).with_name("pyfunc_code.py")  # what MLflow runs to build the model
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/mmp: copied into the model as its code
# The distributions every mmp model imports to predict; the model's library adds its own (its adapter's).
RUNTIME_REQUIREMENTS = ("mlflow", "polars", "pyarrow", "pandas", "numpy", "pyyaml")


def to_polars(model_input: Any) -> pl.DataFrame:
    if isinstance(model_input, pl.DataFrame):
        return model_input
    if isinstance(model_input, pd.DataFrame):
        return pl.from_pandas(model_input)
    if isinstance(model_input, (dict, list)):
        return pl.DataFrame(model_input)
    raise TypeError(f"mmp models take a DataFrame of raw rows, not {type(model_input).__name__}")


def requirements(predictor: Predictor) -> list[str]:
    """Pinned pip requirements of a logged model: the runtime and the model's library, at the versions here."""
    from importlib import metadata

    packages = dict.fromkeys([*RUNTIME_REQUIREMENTS, *predictor.model.requirements])
    return [f"{package}=={metadata.version(package)}" for package in packages]


class MmpModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        self.predictor = Predictor.load(Path(context.artifacts["preprocessing"]), Path(context.artifacts["model"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        method = (params or {}).get("predict_method", "predict")
        if method not in PREDICT_METHODS:
            raise ValueError(f"params.predict_method must be one of {', '.join(PREDICT_METHODS)}, got {method!r}")
        prediction = self.predictor.predict_frame(to_polars(model_input))
        if method == "predict_proba" and not prediction.is_regression:
            return pd.DataFrame(prediction.output, columns=prediction.classes)
        return prediction.labels if prediction.is_regression else np.asarray(prediction.labels, dtype=str)


def _nullable_integers(schema: Any) -> Any:
    """Declare integer columns ``any``: MLflow's ``long`` refuses a missing value (pandas sends it as a float)
    and its ``double`` refuses int64. The predictor's own checks then apply, the same as the server's and batch
    inference's: a null where the model takes one is scored (the one null policy, docs/serving.md)."""
    from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

    integers = (DataType.integer, DataType.long)
    return Schema(
        [
            ColSpec(AnyType(), column.name, column.required) if column.type in integers else column
            for column in schema.inputs
        ]
    )


def log_model(predictor: Predictor, sample: pl.DataFrame, preprocessing_file: Path, model_dir: Path) -> str:
    """Log the model, self-contained, as an MLflow pyfunc taking raw rows; return its model URI.

    The ``mmp`` package travels with the model as its code path: the model loads, from its own
    ``requirements.txt``, where mmp is not installed (``mlflow models serve --env-manager virtualenv``).
    """
    from mlflow.models import infer_signature

    rows = sample.select(predictor.preprocessor.input_columns).head(5)
    example = rows.to_pandas()
    signature = infer_signature(example, np.asarray(predictor.predict(rows)), params={"predict_method": "predict"})
    signature.inputs = _nullable_integers(signature.inputs)
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(CODE_FILE),
        artifacts={"preprocessing": str(preprocessing_file), "model": str(model_dir)},
        code_paths=[str(PACKAGE_DIR)],
        signature=signature,
        input_example=example,
        pip_requirements=requirements(predictor),
    )
    return info.model_uri
