"""k-fold cross-validation (``cv.folds``) on the train and valid splits together: a fit per fold (in parallel
where cores allow), per-fold metrics with their mean and standard deviation, out-of-fold predictions (for
calibration and the threshold), and the final model refitted on every row with the folds' mean best iteration.
The test split is not touched here: the train stage scores it once, with the final model."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmp.evaluation.metrics import classification_metrics, regression_metrics
from mmp.model.registry import adapter_for
from mmp.model.spec import FitData, FitResult, ModelSpec
from mmp.model.trained import TrainedModel, fit


@dataclass
class CrossValidated:
    final: FitResult  # refitted on every train+valid row
    oof: np.ndarray  # out-of-fold probabilities or values, one per train+valid row (NaN where never validated)
    validated: np.ndarray  # rows with an out-of-fold prediction (all but the oldest block of a temporal split)
    fold_of: np.ndarray  # each row's fold (temporal: its time block)
    fold_metrics: list[dict[str, float]]
    best_iterations: list[int | None]

    def summary(self) -> dict[str, float]:
        """``cv_<metric>_mean`` and ``cv_<metric>_std`` over the folds."""
        names = self.fold_metrics[0].keys()
        out: dict[str, float] = {}
        for name in names:
            values = np.array([m[name] for m in self.fold_metrics if name in m], dtype=float)
            out[f"cv_{name}_mean"], out[f"cv_{name}_std"] = float(values.mean()), float(values.std())
        if self.best_iterations and all(b is not None for b in self.best_iterations):
            out["cv_best_iteration_mean"] = float(np.mean(self.best_iterations))  # the refit's rounds, less one
        return out


def cross_validate(
    spec: ModelSpec,
    task: str,
    params: dict[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    fold_of: np.ndarray,
    k: int,
    temporal: bool,
    classes: list[str],
    categorical_indices: list[int],
    early_stopping_rounds: int | None,
    class_weights: list[float] | None,
) -> CrossValidated:
    """Fit one model per fold, early-stopping on the fold's held-out rows, then refit on every row."""
    adapter = adapter_for(spec)
    stopping = early_stopping_rounds if adapter.early_stopping else None
    fold_ids = range(1, k + 1) if temporal else range(k)  # temporal: block 0 only ever trains

    def fold_data(fold: int) -> FitData:
        held = fold_of == fold
        train = fold_of < fold if temporal else ~held
        return FitData(x[train], y[train], x[held], y[held], categorical_indices, stopping, class_weights)

    fitted = _fit_folds(spec, task, params, fold_ids, fold_data)
    width = (len(x),) if task == "regression" else (len(x), len(classes))
    oof = np.full(width, np.nan)
    metrics, best = [], []
    for fold, result in zip(fold_ids, fitted, strict=True):
        held = fold_of == fold
        output = TrainedModel(spec, task, result.estimator, classes).uncalibrated_output(x[held])
        oof[held] = output
        metrics.append(
            regression_metrics(y[held], output) if task == "regression" else classification_metrics(y[held], output)
        )
        best.append(result.best_iteration)
    final_params = dict(params)
    if stopping and all(b is not None for b in best):
        # The folds' mean best iteration, as a round count: the refit has no held-out rows to stop on.
        for alias in adapter.rounds_params[1:]:
            final_params.pop(alias, None)
        final_params[adapter.rounds_params[0]] = int(round(float(np.mean(best)))) + 1
    final = fit(spec, task, final_params, FitData(x, y, x, y, categorical_indices, None, class_weights))
    validated = fold_of >= 1 if temporal else np.ones(len(x), dtype=bool)
    return CrossValidated(final, oof, validated, fold_of, metrics, best)


def out_of_fold(
    spec: ModelSpec,
    task: str,
    params: dict[str, Any],
    data: FitData,
    fold_of: np.ndarray,
    temporal: bool,
    classes: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Cross-fitted probabilities of ``data``'s train rows (for a calibrator when ``cv.folds`` is off): each
    fold's rows predicted by the same recipe fitted on the other folds (temporal: on the older blocks),
    early-stopping on ``data``'s valid rows as the final model does. Returns the probabilities and the rows
    that have one (temporal: all but the oldest block)."""
    last = int(fold_of.max())
    fold_ids = range(1, last + 1) if temporal else range(last + 1)

    def fold_data(fold: int) -> FitData:
        train = fold_of < fold if temporal else fold_of != fold
        return dataclasses.replace(data, x_train=data.x_train[train], y_train=data.y_train[train])

    fitted = _fit_folds(spec, task, params, fold_ids, fold_data)
    oof = np.full((len(fold_of), len(classes)), np.nan)
    for fold, result in zip(fold_ids, fitted, strict=True):
        held = fold_of == fold
        oof[held] = TrainedModel(spec, task, result.estimator, classes).uncalibrated_output(data.x_train[held])
    validated = fold_of >= 1 if temporal else np.ones(len(fold_of), dtype=bool)
    return oof, validated


def _fit_folds(
    spec: ModelSpec,
    task: str,
    params: dict[str, Any],
    fold_ids: range,
    fold_data: Callable[[int], FitData],
) -> list[FitResult]:
    """One fit per fold id, in parallel when the cores outnumber the threads one fit uses (the recipe's
    n_jobs, else 1); the results in ``fold_ids``' order."""
    per_fit = int(params.get("n_jobs") or params.get("thread_count") or 1)
    workers = max(1, min(len(fold_ids), (os.cpu_count() or 1) // max(per_fit, 1)))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda fold: fit(spec, task, params, fold_data(fold)), fold_ids))
