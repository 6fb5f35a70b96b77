"""What the train stage decides after the fit: whether a probability calibrator is kept (``recipe.calibration``)
and a binary model's decision threshold (``recipe.threshold``).

The calibrator is never fitted on predictions of rows the model that made them saw: by default
(``calibration_method: oof``) on cross-fitted out-of-fold probabilities of the train split (``calibration_folds``
fits of the same recipe, each on the other folds; then the model is fitted on every train row), as
scikit-learn's ``CalibratedClassifierCV(ensemble=False)``; with ``holdout``, on a share of the train split held
out of the model's fit (:func:`fit_rows`). It is kept only when it lowers the valid split's Brier score (or
``calibration_force``). The threshold is chosen on the valid split's probabilities, calibrated when kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmp.config.schema import RecipeConfig
from mmp.errors import ConfigError
from mmp.evaluation.calibration import RELIABILITY_FILES, brier, choose_threshold, ece, write_reliability_plot
from mmp.model.calibration import Calibrator, fit_calibrator
from mmp.model.spec import FitData, ModelSpec
from mmp.model.trained import TrainedModel
from mmp.pipeline.cv import out_of_fold


@dataclass
class Decided:
    params: dict[str, Any] = field(default_factory=dict)  # logged as run params
    metrics: dict[str, float] = field(default_factory=dict)  # logged as run metrics
    test_before: np.ndarray | None = None  # test probabilities before and after calibration (reliability plot)
    test_after: np.ndarray | None = None


def fit_rows(recipe: RecipeConfig, task: str, y_train: np.ndarray, seed: int) -> np.ndarray:
    """The train rows the model is fitted on (a boolean mask): all, or with ``calibration_method: holdout`` all
    but a seeded, per-class share of ``recipe.calibration_size`` held out for the calibrator. Checks the
    settings against the task first."""
    if recipe.calibration != "none" and task == "regression":
        raise ConfigError("recipe.calibration applies to classification; set it to none for a regression task")
    if task != "binary" and recipe.threshold != 0.5:
        raise ConfigError(f"recipe.threshold applies to binary tasks (this one is {task}); set it to 0.5")
    rows = np.ones(len(y_train), dtype=bool)
    if recipe.calibration == "none" or recipe.calibration_method != "holdout":
        return rows
    rng = np.random.default_rng(seed + 1)  # not the split's own stream
    codes = np.asarray(y_train, dtype=np.int64)
    for code in np.unique(codes):
        members = rng.permutation(np.flatnonzero(codes == code))
        rows[members[: int(round(len(members) * recipe.calibration_size))]] = False
    if rows.all() or not rows.any():
        raise ConfigError(
            f"recipe.calibration_size {recipe.calibration_size} leaves no rows to fit or to calibrate on "
            f"({len(y_train)} train rows); change it or use more data"
        )
    return rows


@dataclass(frozen=True)
class CalibrationRows:
    """What a calibrator is fitted on: uncalibrated probabilities of rows their model never saw, their class
    codes, and how they were made (logged)."""

    proba: np.ndarray
    y: np.ndarray
    method: str  # oof | holdout
    folds: int = 0  # oof: the cross-fitting folds

    @classmethod
    def held_out(
        cls, model: TrainedModel, x_train: np.ndarray, y_train: np.ndarray, rows: np.ndarray
    ) -> CalibrationRows:
        """``holdout``: the final model's probabilities of the train rows ``rows``, held out of its fit."""
        return cls(model.uncalibrated_output(x_train[rows]), y_train[rows], "holdout")


def cross_fitted(
    recipe: RecipeConfig,
    spec: ModelSpec,
    task: str,
    params: dict[str, Any],
    data: FitData,
    fold_of: np.ndarray,
    temporal: bool,
    classes: list[str],
) -> CalibrationRows:
    """``oof``: out-of-fold probabilities of the train split, from ``recipe.calibration_folds`` fits of the
    recipe on the other folds (:func:`mmp.pipeline.cv.out_of_fold`)."""
    oof, validated = out_of_fold(spec, task, params, data, fold_of, temporal, classes)
    return CalibrationRows(oof[validated], data.y_train[validated], "oof", recipe.calibration_folds)


def decide(
    recipe: RecipeConfig,
    model: TrainedModel,
    x: dict[str, np.ndarray],
    y: dict[str, np.ndarray],
    calibration_rows: CalibrationRows | None,
) -> Decided:
    """Set ``model.calibrator`` (fitted on ``calibration_rows``, needed when ``recipe.calibration`` is set) and
    ``model.threshold``; return what to log."""
    decided = Decided()
    if recipe.calibration != "none":
        if calibration_rows is None:
            raise ValueError("recipe.calibration is set: decide() needs the rows to calibrate on")
        _calibrate(recipe, model, x, y, calibration_rows, decided)
    if model.task == "binary":
        _set_threshold(recipe, model, y["valid"], model.output(x["valid"])[:, 1], decided)
    return decided


def _calibrate(
    recipe: RecipeConfig,
    model: TrainedModel,
    x: dict[str, np.ndarray],
    y: dict[str, np.ndarray],
    rows: CalibrationRows,
    decided: Decided,
) -> None:
    calibrator = fit_calibrator(recipe.calibration, rows.proba, rows.y)
    valid = model.uncalibrated_output(x["valid"])
    judged = ("valid", y["valid"], valid, calibrator.apply(valid))
    _judge(recipe, model, calibrator, judged, x["test"], y["test"], rows, decided)


def _judge(
    recipe: RecipeConfig,
    model: TrainedModel,
    calibrator: Calibrator,
    judged: tuple[str, np.ndarray, np.ndarray, np.ndarray],
    x_test: np.ndarray,
    y_test: np.ndarray,
    rows: CalibrationRows,
    decided: Decided,
) -> None:
    """Score the calibrator on ``judged`` (name, truth, before, after) and the test split; keep it on
    ``model`` when it lowers the judged Brier score, or when forced; record the scores and the decision."""
    bins = recipe.calibration_bins
    test_before = model.uncalibrated_output(x_test)
    test_after = calibrator.apply(test_before)
    name = judged[0]
    for split, truth, before, after in (judged, ("test", y_test, test_before, test_after)):
        decided.metrics.update(
            {
                f"{split}_brier_uncalibrated": brier(truth, before),
                f"{split}_brier_calibrated": brier(truth, after),
                f"{split}_ece_uncalibrated": ece(truth, before, bins),
                f"{split}_ece_calibrated": ece(truth, after, bins),
            }
        )
    decided.test_before, decided.test_after = test_before, test_after
    was, now = decided.metrics[f"{name}_brier_uncalibrated"], decided.metrics[f"{name}_brier_calibrated"]
    verdict = "kept" if now < was else ("forced" if recipe.calibration_force else "dropped")
    model.calibrator = None if verdict == "dropped" else calibrator
    where = "out-of-fold" if name == "oof" else name
    decided.params.update(
        {
            "calibration_decision": f"{verdict}: {where} Brier {was:.5f} -> {now:.5f} ({recipe.calibration})",
            "calibration_kept": verdict != "dropped",
            "calibration_rows": len(rows.y),
            "calibration_method": rows.method,
            "calibration_folds": rows.folds,
            "calibration_ece_bins": bins,
        }
    )


def write_reliability(folder: Path, y_test: np.ndarray, decided: Decided, bins: int) -> None:
    """The reliability diagram of the test split, before and after calibration; stale files go otherwise."""
    if decided.test_before is None or decided.test_after is None:
        for name in RELIABILITY_FILES:
            (folder / name).unlink(missing_ok=True)
        return
    write_reliability_plot(folder, y_test, decided.test_before, decided.test_after, bins)


def decide_from_folds(
    recipe: RecipeConfig,
    model: TrainedModel,
    oof: np.ndarray,
    y: np.ndarray,
    fold_of: np.ndarray,
    validated: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
) -> Decided:
    """:func:`decide` under cross-validation: the calibrator is fitted on the out-of-fold probabilities, and
    kept when it lowers their Brier score, each fold calibrated by a calibrator fitted on the other folds (so no
    row judges a calibrator it fitted); the threshold is chosen on the (calibrated) out-of-fold probabilities."""
    decided = Decided()
    oof, y, fold_of = oof[validated], y[validated], fold_of[validated]
    chosen_on = oof
    if recipe.calibration != "none":
        crossed = np.empty_like(oof)
        for fold in np.unique(fold_of):
            own = fold_of == fold
            crossed[own] = fit_calibrator(recipe.calibration, oof[~own], y[~own]).apply(oof[own])
        calibrator = fit_calibrator(recipe.calibration, oof, y)
        rows = CalibrationRows(oof, y, "oof", len(np.unique(fold_of)))  # cv.folds' own out-of-fold predictions
        _judge(recipe, model, calibrator, ("oof", y, oof, crossed), x_test, y_test, rows, decided)
        if model.calibrator is not None:
            chosen_on = calibrator.apply(oof)
    if model.task == "binary":
        _set_threshold(recipe, model, y, chosen_on[:, 1], decided)
    return decided


def _set_threshold(
    recipe: RecipeConfig, model: TrainedModel, y: np.ndarray, positive: np.ndarray, decided: Decided
) -> None:
    if recipe.threshold == "auto":
        metric = recipe.threshold_metric
        threshold, score = choose_threshold(y, positive, metric, recipe.threshold_costs)
        decided.metrics[f"threshold_valid_{'f1' if metric == 'f1' else 'cost_per_row'}"] = score
    else:
        threshold = float(recipe.threshold)
    model.threshold = threshold
    decided.metrics["decision_threshold"] = threshold
