"""Titanic's preprocessing, fitted in process as the prepare stage does: shared by the model-level tests."""

from __future__ import annotations

import numpy as np
import polars as pl

from mmp.config import PreprocessingConfig
from mmp.data.preprocessing import Preprocessor
from mmp.model.registry import encoding_plan
from mmp.model.spec import ModelSpec

CLASSES = ["died", "survived"]


def titanic_matrices(
    parts: dict[str, pl.DataFrame], spec: ModelSpec
) -> tuple[Preprocessor, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Fit the preprocessing on ``parts["train"]`` for ``spec`` (default settings); every part's features
    and encoded target, by part name."""
    pre = Preprocessor.fit(
        parts["train"],
        target="survived",
        task="binary",
        classes=CLASSES,
        id_columns=[],
        features=[c for c in parts["train"].columns if c != "survived"],
        categorical_columns=[],
        plan=encoding_plan(spec, PreprocessingConfig()),
    )
    x = {name: pre.transform(part) for name, part in parts.items()}
    y = {name: pre.encode_target(part["survived"]) for name, part in parts.items()}
    return pre, x, y
