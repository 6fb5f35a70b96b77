"""The cost of mmp's train curve: XGBoost fits with the valid split only, and with a train sample too.

    .venv/bin/python bench/make_data.py --rows 300000     # once: bench/data/synthetic_300000_s12345.csv
    .venv/bin/python bench/bench_train_curve.py [--rows 300000] [--reps 2]

The plain script's encoding and hyperparameters (bench/plain_xgboost.py), in one process, alternating:
valid only; valid + 50,000 train rows (what mmp scored before); valid + 10,000 train rows (mmp now).
Prints wall and CPU seconds of each fit and its best iteration (the model must not change).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import polars as pl
import xgboost as xgb
from common import BENCH_DIR
from plain_xgboost import PARAMS, encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    frame = pl.read_csv(BENCH_DIR / "data" / f"synthetic_{args.rows}_s12345.csv", infer_schema_length=10_000)
    features = [c for c in frame.columns if c not in ("target", "id")]
    exprs, types = encoder(frame, features)
    x = np.ascontiguousarray(frame.select(exprs).to_numpy(), dtype=np.float32)
    y = frame["target"].to_numpy()
    train, valid = int(len(y) * 0.7), int(len(y) * 0.85)
    for _ in range(args.reps):
        for label, sample in (("valid only", 0), ("valid + 50,000 train rows", 50_000), ("valid + 10,000", 10_000)):
            evals = [(x[train:valid], y[train:valid])]
            if sample:
                evals.insert(0, (x[:sample], y[:sample]))
            model = xgb.XGBClassifier(**PARAMS, enable_categorical=True, feature_types=types)
            wall, cpu = time.perf_counter(), time.process_time()
            model.fit(x[:train], y[:train], eval_set=evals, verbose=False)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(f"{label:28s} wall {wall:6.2f} s  cpu {cpu:6.2f} s  best iteration {model.best_iteration}")


if __name__ == "__main__":
    main()
