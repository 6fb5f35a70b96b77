"""Models-from-code entry point: MLflow runs this file to build the pyfunc model (no pickling)."""

from mlflow.models import set_model

from mmp.mlflow_model import MmpModel

set_model(MmpModel())
