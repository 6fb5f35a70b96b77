"""Class weights for imbalanced classification: ``recipe.class_weight`` as one weight per class code.

Pure: the adapters apply the weights through their library's own mechanism (a class-weight parameter, or
sample weights).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmp.errors import ConfigError


def class_weights(setting: Any, y: np.ndarray, classes: list[str], task: str) -> list[float] | None:
    """One weight per class code (``classes`` order), or None for ``none``.

    ``balanced`` is scikit-learn's rule, ``rows / (classes * rows of the class)``, counted on ``y`` (the train
    split's class codes); a mapping gives a weight per class label, 1.0 for the classes it leaves out.
    """
    if setting == "none" or setting is None:
        return None
    if task == "regression":
        raise ConfigError("recipe.class_weight applies to classification; set it to none for a regression task")
    if setting == "balanced":
        counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=len(classes)).astype(float)
        return [float(len(y) / (len(classes) * c)) if c else 1.0 for c in counts]
    labels = [str(c) for c in classes]
    unknown = [str(label) for label in setting if str(label) not in labels]
    if unknown:
        raise ConfigError(
            f"recipe.class_weight names class(es) {', '.join(unknown)} that the target does not have; "
            f"its classes are {', '.join(labels)}"
        )
    given = {str(label): float(weight) for label, weight in setting.items()}
    return [given.get(label, 1.0) for label in labels]


def sample_weights(weights: list[float] | None, y: np.ndarray) -> np.ndarray | None:
    """Each row's weight: its class's."""
    if weights is None:
        return None
    return np.asarray(weights, dtype=float)[np.asarray(y, dtype=np.int64)]
