"""Models-from-code entry point: MLflow runs this file to build the pyfunc model (no pickling)."""

from mlflow.models import set_model

from mmp.model.pyfunc import MmpModel

set_model(MmpModel())
