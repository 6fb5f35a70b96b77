"""What mmp's per-round evaluation of the train split costs XGBoost's fit (informational).

    .venv/bin/python bench/bench_fit_eval.py [--rows 1000000] [--reps 2]

mmp fits with ``eval_set=[(x_train, y_train), (x_valid, y_valid)]`` to log a train learning curve; the
plain script evaluates only the valid split (early stopping needs nothing else). Same data, split,
encoding and parameters (recipes/xgb-baseline.yaml) as bench/plain_xgboost.py, both variants fitted
alternately in one process; the figure is the fit's CPU time (user + system), which other processes'
load disturbs far less than wall time. Both variants give the same model.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import make_data
from common import PYTHON, clean_env, markdown_table, median, save_result, say

VARIANTS = ("valid only (plain)", "train + valid (mmp)")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(csv: Path, reps: int) -> dict[str, list[dict[str, float]]]:
    """Fit both variants ``reps`` times in this process, alternating which goes first."""
    import numpy as np
    import plain_xgboost as plain
    import polars as pl
    import xgboost as xgb

    frame = pl.read_csv(csv, infer_schema_length=10_000)
    codes = plain.stratified_split(frame["target"].to_numpy(), plain.SEED)
    parts = {name: frame.filter(pl.Series(codes == code)) for code, name in enumerate(("train", "valid", "test"))}
    exprs, types = plain.encoder(parts["train"], [c for c in frame.columns if c not in ("id", "target")])
    x = {name: np.ascontiguousarray(part.select(exprs).to_numpy(), dtype=np.float32) for name, part in parts.items()}
    y = {name: part["target"].to_numpy() for name, part in parts.items()}
    eval_sets = {
        VARIANTS[0]: [(x["valid"], y["valid"])],
        VARIANTS[1]: [(x["train"], y["train"]), (x["valid"], y["valid"])],
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for rep in range(reps):
        for name in VARIANTS if rep % 2 == 0 else tuple(reversed(VARIANTS)):
            say(f"fit_eval: rep {rep + 1}/{reps}: {name}")
            model = xgb.XGBClassifier(**plain.PARAMS, enable_categorical=True, feature_types=types)
            started, cpu = time.perf_counter(), _cpu()
            model.fit(x["train"], y["train"], eval_set=eval_sets[name], verbose=False)
            runs[name].append(
                {
                    "seconds": time.perf_counter() - started,
                    "cpu_seconds": _cpu() - cpu,
                    "best_iteration": model.best_iteration,
                }
            )
    return runs


def run(rows: int = 1_000_000, reps: int = 2) -> dict[str, Any]:
    """Measure in a child process with OMP_WAIT_POLICY=PASSIVE (steadier on a shared machine)."""
    csv = make_data.ensure(make_data.Options(rows=rows))
    child = subprocess.run(
        [PYTHON, __file__, "--child", str(csv), "--reps", str(reps)],
        env=clean_env(OMP_WAIT_POLICY="PASSIVE"),
        stdout=subprocess.PIPE,
        check=True,
        text=True,
    )
    runs = json.loads(child.stdout.strip().splitlines()[-1])
    cpu_med = {name: median([r["cpu_seconds"] for r in values]) for name, values in runs.items()}
    wall_med = {name: median([r["seconds"] for r in values]) for name, values in runs.items()}
    return {
        "benchmark": "fit_eval",
        "rows": rows,
        "reps": reps,
        "runs": runs,
        "cpu_seconds": cpu_med,
        "seconds": wall_med,
        "cpu_ratio": cpu_med[VARIANTS[1]] / cpu_med[VARIANTS[0]],
    }


def table(result: dict[str, Any]) -> list[list[str]]:
    """Rows for the summary table."""
    cpu, wall = result["cpu_seconds"], result["seconds"]
    return [
        [
            f"XGBoost fit CPU time, {result['rows']:,} rows, train split also evaluated each round (informational)",
            f"{cpu[VARIANTS[1]]:.1f} CPU-s ({wall[VARIANTS[1]]:.1f} s wall)",
            f"valid only {cpu[VARIANTS[0]]:.1f} CPU-s ({wall[VARIANTS[0]]:.1f} s wall)",
            f"{result['cpu_ratio']:.2f}x",
            "none",
            "INFO",
        ]
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # internal: measure this CSV, print JSON
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.reps)))
        return 0
    result = run(args.rows, args.reps)
    path = save_result("fit_eval", result)
    print(markdown_table(table(result)))
    say(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
