"""The LightGBM baseline for bench_loop.py's 1M-row item: plain_xgboost.py's prepare work, then the
lgbm-tuned recipe's LightGBM fit, written directly with Polars and LightGBM.

The same read, stratified split and integer codes as plain_xgboost.py (LightGBM's native categorical
features; missing and unseen levels are NaN), LightGBM with recipes/lgbm-tuned.yaml's hyperparameters and
early stopping on valid, metrics on every split, the model and the splits saved. No config system, no
experiment tracking.

    .venv/bin/python bench/plain_lightgbm.py DATA.csv OUT_DIR [--target target] [--id id]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightgbm as lgb
from plain_xgboost import SEED, Laps, command, read_split_encode, save, scores

# recipes/lgbm-tuned.yaml
PARAMS: dict[str, Any] = {
    "n_estimators": 600,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "max_depth": -1,
    "min_child_samples": 20,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "reg_lambda": 1.0,
    "n_jobs": 2,
    "random_state": SEED,
    "verbose": -1,
}
EARLY_STOPPING_ROUNDS = 50


def run(data: Path, out: Path, target: str, id_columns: list[str]) -> dict[str, Any]:
    """Do the whole job; return metrics and per-phase seconds."""
    lap = Laps()
    parts, x, y, types = read_split_encode(data, target, id_columns, lap)
    categorical = [i for i, kind in enumerate(types) if kind == "c"]
    model = lgb.LGBMClassifier(**PARAMS)
    model.fit(
        x["train"],
        y["train"],
        eval_X=(x["valid"],),
        eval_y=(y["valid"],),
        categorical_feature=categorical,
        callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)],
    )
    lap("fit")
    by_split = {name: scores(y[name], model.predict_proba(x[name])[:, 1]) for name in parts}
    lap("evaluate")
    save(out, parts, by_split)
    model.booster_.save_model(str(out / "model.txt"))
    lap("save")
    return {"metrics": by_split, "best_iteration": model.best_iteration_, "phases": lap.phases}


def main(argv: Sequence[str] | None = None) -> int:
    return command(run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
