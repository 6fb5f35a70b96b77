"""Probability calibration applied after a classifier's own probabilities: isotonic or sigmoid (Platt), one
curve per class (one-vs-rest, renormalised) or one for a binary task's positive class.

Applying a fitted calibrator needs NumPy only (a logged model loads it where scikit-learn may be absent); it is
saved as JSON in ``model_info.json``. Fitting (:func:`fit_calibrator`) uses scikit-learn, at train time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

METHODS = ("isotonic", "sigmoid")
_EPS = 1e-12
# Isotonic regression maps score ranges to one value; these ties would lower the ROC AUC. A tiny share of the
# raw probability breaks them: the curve becomes strictly increasing (the model's ranking, so its AUC, is kept)
# and stays within [0, 1]; probabilities and ECE move by at most this much.
TIE_BREAK = 1e-6


@dataclass(frozen=True)
class Calibrator:
    """``curves[c]``: isotonic ``{"x": [...], "y": [...]}`` (clipped interpolation, as scikit-learn's
    ``IsotonicRegression.predict``, ties broken by the raw probability: :data:`TIE_BREAK`) or sigmoid
    ``{"a": a, "b": b}`` on the log-odds of class ``c``."""

    method: str
    curves: list[dict[str, Any]]

    def apply(self, proba: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, same shape as ``proba`` (rows, classes)."""
        proba = np.asarray(proba, dtype=float)
        if len(self.curves) == 1:  # binary: the positive class's curve
            positive = _curve(self.method, self.curves[0], proba[:, 1])
            return np.column_stack([1.0 - positive, positive])
        columns = np.column_stack([_curve(self.method, c, proba[:, i]) for i, c in enumerate(self.curves)])
        total = columns.sum(axis=1, keepdims=True)
        # A row every curve sends to 0 keeps the model's own probabilities.
        return np.where(total > _EPS, columns / np.maximum(total, _EPS), proba)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "curves": self.curves}

    @classmethod
    def from_dict(cls, info: dict[str, Any] | None) -> Calibrator | None:
        return None if not info else cls(info["method"], info["curves"])


def _curve(method: str, curve: dict[str, Any], p: np.ndarray) -> np.ndarray:
    if method == "isotonic":
        return (1.0 - TIE_BREAK) * np.interp(p, curve["x"], curve["y"]) + TIE_BREAK * np.clip(p, 0.0, 1.0)
    return 1.0 / (1.0 + np.exp(-(curve["a"] * _logit(p) + curve["b"])))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def fit_calibrator(method: str, proba: np.ndarray, y: np.ndarray) -> Calibrator:
    """Fit ``method`` on held-out probabilities ``proba`` (rows, classes) and their class codes ``y``."""
    k = proba.shape[1]
    targets = [1] if k == 2 else range(k)
    curves = [_fit_curve(method, proba[:, c], (np.asarray(y) == c).astype(float)) for c in targets]
    return Calibrator(method, curves)


def _fit_curve(method: str, p: np.ndarray, hit: np.ndarray) -> dict[str, Any]:
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, hit)
        return {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
    if hit.min() == hit.max():  # one outcome only: nothing to fit, keep the probabilities
        return {"a": 1.0, "b": 0.0}
    from sklearn.linear_model import LogisticRegression

    # Platt scaling on the log-odds; a large C: the calibration rows, not a prior, set the two numbers.
    platt = LogisticRegression(C=1e6).fit(_logit(p)[:, None], hit)
    return {"a": float(platt.coef_[0, 0]), "b": float(platt.intercept_[0])}
