"""Kept for models logged before the model layer moved: their code file imports ``mmp.mlflow_model``."""

from mmp.model.pyfunc import MmpModel

__all__ = ["MmpModel"]
