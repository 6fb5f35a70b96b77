"""What a recipe's ``model.name`` means, and what a fit takes and gives: plain data, no library code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

OnIteration = Callable[[int, float], None]  # (round, valid score) after each boosting round; may raise to stop


@dataclass(frozen=True)
class ModelSpec:
    """A recipe's ``model.name``: the library adapter that builds it, one class per task, and its input needs."""

    name: str
    library: str  # the adapter's key in :data:`mmp.model.registry.ADAPTERS`
    classifier: str | None  # "module:Class"
    regressor: str | None
    encoding: str  # preferred categorical encoding: native | ordinal | onehot
    handles_missing: bool  # NaN in numeric inputs is fine
    linear: bool = False  # wants one-hot, imputed, scaled inputs (linear and distance-based models)
    native_categoricals: bool = False  # takes category codes as categories
    max_native_levels: int | None = None  # more levels than this fall back to ordinal codes
    # Parameters that only apply to one of the two classes (the linear family shares a recipe).
    classifier_only: tuple[str, ...] = ()
    regressor_only: tuple[str, ...] = ()
    fixed: dict[str, Any] = field(default_factory=dict)  # parameters mmp always sets

    @property
    def class_modules(self) -> list[str]:
        """The modules of the library's classes: what building (and fitting) one imports."""
        return [path.split(":")[0] for path in (self.classifier, self.regressor) if path]


@dataclass
class FitData:
    """The encoded splits a fit sees, and how to treat them."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    categorical_indices: list[int] = field(default_factory=list)  # features to treat as native categories
    early_stopping_rounds: int | None = None
    class_weights: list[float] | None = None  # one per class code (recipe.class_weight); None: unweighted


@dataclass
class FitResult:
    estimator: Any
    best_iteration: int | None
    history: dict[str, list[float]]  # per-iteration eval metric, by split, for boosted models
