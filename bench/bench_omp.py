"""XGBoost's fit time with OpenMP's default wait policy against OMP_WAIT_POLICY=PASSIVE (informational).

    .venv/bin/python bench/bench_omp.py [--rows 300000] [--reps 2]

Runs bench/plain_xgboost.py (xgb-baseline parameters, n_jobs=2) on the synthetic data with and without
OMP_WAIT_POLICY=PASSIVE, interleaved. On a machine whose CPUs are shared with other work, spinning
OpenMP threads that wait for a descheduled sibling make the fit several times slower; this measures
by how much, here and now. No target: it explains the noise in bench_pipeline.py and backs a
recommendation in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Sequence
from typing import Any

import make_data
from common import (
    BENCH_DIR,
    PYTHON,
    RESULTS_DIR,
    check,
    clean_env,
    markdown_table,
    median,
    run_measured,
    save_result,
    say,
    temp_dir,
)

POLICIES = {"default": {}, "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}}
CPUS = os.cpu_count() or 1


def run(rows: int = 300_000, reps: int = 2) -> dict[str, Any]:
    """Time the plain script under each policy ``reps`` times, interleaved."""
    from bench_pipeline import last_json_line

    csv = make_data.ensure(make_data.Options(rows=rows))
    log_dir = RESULTS_DIR / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    scratch = temp_dir("mmp-bench-omp-")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in POLICIES}
    try:
        for rep in range(reps):
            for name, extra in POLICIES.items() if rep % 2 == 0 else reversed(POLICIES.items()):
                say(f"omp: rep {rep + 1}/{reps}: {name}")
                log_path = log_dir / f"omp_{name}_{rep}.log"
                cmd = [PYTHON, str(BENCH_DIR / "plain_xgboost.py"), str(csv), str(scratch / "out")]
                with log_path.open("w") as log:
                    measured = check(run_measured(cmd, scratch, clean_env(**extra), log), name, log_path)
                fit = last_json_line(log_path)["phases"]["fit"]
                runs[name].append(
                    {
                        "seconds": measured.seconds,
                        "fit_seconds": fit,
                        "cpu_seconds": measured.cpu_seconds,
                        "background_share": measured.background_cpu_seconds / measured.seconds / CPUS,
                    }
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    fits = {name: median([r["fit_seconds"] for r in values]) for name, values in runs.items()}
    return {
        "benchmark": "omp",
        "rows": rows,
        "reps": reps,
        "runs": runs,
        "fit_seconds": fits,
        "background_share": median([r["background_share"] for values in runs.values() for r in values]),
        "ratio": fits["default"] / fits["PASSIVE"],
    }


def table(result: dict[str, Any]) -> list[list[str]]:
    """Rows for the summary table."""
    fits = result["fit_seconds"]
    return [
        [
            f"XGBoost fit, {result['rows']:,} rows, default OpenMP wait policy (informational)",
            f"{fits['default']:.1f} s",
            f"OMP_WAIT_POLICY=PASSIVE {fits['PASSIVE']:.1f} s",
            f"{result['ratio']:.2f}x",
            f"none ({result['background_share']:.0%} background load)",
            "INFO",
        ]
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args(argv)
    result = run(args.rows, args.reps)
    path = save_result("omp", result)
    print(markdown_table(table(result)))
    say(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
