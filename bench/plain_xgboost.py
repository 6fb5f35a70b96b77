"""The baseline for bench_pipeline.py: mmp's prepare + train work, written directly with Polars and XGBoost.

What a competent user would write by hand for the xgb-baseline recipe: read the CSV, drop rows with a
missing target, seeded stratified 70/15/15 split, categoricals as integer codes fitted on train (native
categorical features in XGBoost; missing and unseen levels are NaN), XGBoost with the recipe's
hyperparameters and early stopping on valid, metrics on every split, the model and the splits saved.
No config system, no experiment tracking.

    .venv/bin/python bench/plain_xgboost.py DATA.csv OUT_DIR [--target target] [--id id]

Prints one JSON line: the metrics by split, best iteration and the wall time of each phase.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import xgboost as xgb
from sklearn import metrics

SEED = 42
VALID_SIZE = TEST_SIZE = 0.15
# recipes/xgb-baseline.yaml
PARAMS: dict[str, Any] = {
    "tree_method": "hist",
    "n_estimators": 300,
    "max_depth": 6,
    "learning_rate": 0.1,
    "subsample": 0.9,
    "colsample_bytree": 0.9,
    "min_child_weight": 1.0,
    "n_jobs": 2,
    "early_stopping_rounds": 30,
    "random_state": SEED,
}


def stratified_split(y: np.ndarray, seed: int) -> np.ndarray:
    """Per-row split code (0 train, 1 valid, 2 test), shuffled within each class."""
    rng = np.random.default_rng(seed)
    assignment = np.zeros(len(y), dtype=np.int8)
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        n_test, n_valid = round(len(rows) * TEST_SIZE), round(len(rows) * VALID_SIZE)
        assignment[rows[:n_test]] = 2
        assignment[rows[n_test : n_test + n_valid]] = 1
    return assignment


def encoder(train: pl.DataFrame, features: list[str]) -> tuple[list[pl.Expr], list[str]]:
    """Polars expressions giving float32 features, and XGBoost feature types ('q' or 'c')."""
    exprs, types = [], []
    for name in features:
        if train[name].dtype.is_numeric():
            exprs.append(pl.col(name).cast(pl.Float32))
            types.append("q")
        else:
            levels = sorted(train[name].drop_nulls().unique().to_list())
            codes = pl.col(name).replace_strict(levels, range(len(levels)), default=None, return_dtype=pl.Float32)
            exprs.append(codes.fill_null(float("nan")))
            types.append("c")
    return exprs, types


def scores(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """The same binary metrics mmp reports."""
    predicted = (proba >= 0.5).astype(int)
    result = {
        "accuracy": metrics.accuracy_score(y, predicted),
        "precision_macro": metrics.precision_score(y, predicted, average="macro", zero_division=0),
        "recall_macro": metrics.recall_score(y, predicted, average="macro", zero_division=0),
        "f1_macro": metrics.f1_score(y, predicted, average="macro", zero_division=0),
        "log_loss": metrics.log_loss(y, np.clip(proba, 1e-15, 1.0), labels=[0, 1]),
        "roc_auc": metrics.roc_auc_score(y, proba),
    }
    return {name: float(value) for name, value in result.items()}


def read_split_encode(
    data: Path, target: str, id_columns: list[str], lap: Callable[[str], None]
) -> tuple[dict[str, pl.DataFrame], dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    """Read the CSV, split it, encode the features: the splits, their float32 features and labels, and the
    feature types ('q' or 'c'). Shared by the plain LightGBM script."""
    frame = pl.read_csv(data, infer_schema_length=10_000).filter(pl.col(target).is_not_null())
    lap("read_csv")
    assignment = stratified_split(frame[target].to_numpy(), SEED)
    parts = {name: frame.filter(pl.Series(assignment == code)) for code, name in enumerate(("train", "valid", "test"))}
    lap("split")
    features = [c for c in frame.columns if c != target and c not in id_columns]
    exprs, types = encoder(parts["train"], features)
    x = {name: part.select(exprs).to_numpy().astype(np.float32, copy=False) for name, part in parts.items()}
    y = {name: part[target].to_numpy() for name, part in parts.items()}
    lap("encode")
    return parts, x, y, types


class Laps:
    """Seconds per phase: each call closes the phase it names."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._clock = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = round(now - self._clock, 3)
        self._clock = now


def save(out: Path, parts: dict[str, pl.DataFrame], by_split: dict[str, dict[str, float]]) -> None:
    """The splits and the metrics, as mmp's prepare and train stages write theirs."""
    out.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        part.write_parquet(out / f"{name}.parquet")
    (out / "metrics.json").write_text(json.dumps(by_split, indent=2) + "\n", encoding="utf-8")


def run(data: Path, out: Path, target: str, id_columns: list[str]) -> dict[str, Any]:
    """Do the whole job; return metrics and per-phase seconds."""
    lap = Laps()
    parts, x, y, types = read_split_encode(data, target, id_columns, lap)
    model = xgb.XGBClassifier(**PARAMS, enable_categorical=True, feature_types=types)
    model.fit(x["train"], y["train"], eval_set=[(x["valid"], y["valid"])], verbose=False)
    lap("fit")
    by_split = {name: scores(y[name], model.predict_proba(x[name])[:, 1]) for name in parts}
    lap("evaluate")
    save(out, parts, by_split)
    model.save_model(out / "model.ubj")
    lap("save")
    return {"metrics": by_split, "best_iteration": model.best_iteration, "phases": lap.phases}


def main(argv: Sequence[str] | None = None) -> int:
    return command(run, __doc__, argv)


def command(job: Callable[[Path, Path, str, list[str]], dict[str, Any]], doc: str, argv: Sequence[str] | None) -> int:
    """A plain script's command line: run ``job`` on DATA.csv into OUT_DIR, print its result as one JSON line."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("data", type=Path, help="CSV file")
    parser.add_argument("out", type=Path, help="output folder (splits, model, metrics)")
    parser.add_argument("--target", default="target")
    parser.add_argument("--id", dest="id_columns", action="append", default=None, help="id column (repeatable)")
    args = parser.parse_args(argv)
    result = job(args.data, args.out, args.target, args.id_columns if args.id_columns is not None else ["id"])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
