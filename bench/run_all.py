"""Run the benchmarks, print one markdown table and write bench/results/*.json.

    .venv/bin/python bench/run_all.py                 # cli, dvc, pipeline, loop (about 25 min on 2 cores)
    .venv/bin/python bench/run_all.py --quick         # smoke run: 100,000 rows, fewer repetitions
    .venv/bin/python bench/run_all.py --only cli dvc  # a subset; `--only omp fit_eval` runs the two probes
    .venv/bin/python bench/run_all.py --only serving  # HTTP serving under wrk (about 5 min; needs wrk)
    .venv/bin/python bench/run_all.py --only sweep    # a 4-job sweep in parallel vs in a row; per-run overhead
    .venv/bin/python bench/run_all.py --only loop     # mmp train, dvc repro -f, dvc exp run vs a plain script (titanic)
    .venv/bin/python bench/run_all.py --only quality  # mmp default, mmp tune and FLAML, 60 s each, on 5 data sets
    .venv/bin/python bench/run_all.py --only tune     # mmp tune: 2 workers x 10 trials vs 20 trials in a row
    .venv/bin/python bench/run_all.py --only scale    # streaming prepare vs eager read_csv, 1M/5M/10M rows

Benchmarks: cli (`mmp --help` vs `python -c pass`), dvc (no-op `dvc repro` vs a one-stage project),
pipeline (prepare + train on 1,000,000 rows vs bench/plain_xgboost.py), loop (the everyday commands on
titanic, `mmp train`, `dvc repro -f`, `dvc exp run`, the explain stage of every recipe and a sweep's per-job
overhead, vs plain_xgboost.py; see bench_loop.py), and, on request, omp (XGBoost's
fit under OpenMP's default wait policy vs PASSIVE), fit_eval (the cost of evaluating the train split every
boosting round), and serving (`mmp serve-api` vs `mlflow models serve` and a bare Flask app under wrk, and
a 10,000-row request vs in-process), and sweep (a 4-job joblib sweep vs the same jobs one after another, and
the tracking overhead of one train run), and quality (test metrics of mmp's default recipe, `mmp tune` and
FLAML's AutoML under the same time budget, on five real data sets; see bench_quality.py). Each measures its
baseline in the same run and reports the ratio.
Exit code 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import bench_cli
import bench_dvc
import bench_fit_eval
import bench_loop
import bench_omp
import bench_pipeline
import bench_quality
import bench_scale
import bench_serving
import bench_sweep
import bench_tune_parallel
from common import RESULTS_DIR, machine, markdown_table, save_result, say

DETAILS = (  # the benchmarks with a details section after the summary table, in print order
    ("pipeline", "Pipeline details", bench_pipeline),
    ("loop", "Loop details", bench_loop),
    ("sweep", "Sweep: where a train run's time goes", bench_sweep),
    ("quality", "Quality details", bench_quality),
    ("scale", "Scale: peak RSS and wall time against rows", bench_scale),
    ("serving", "Serving details", bench_serving),
)

DEFAULT = ("cli", "dvc", "pipeline", "loop")
ALL = (*DEFAULT, "omp", "fit_eval", "serving", "sweep", "quality", "tune", "scale")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=ALL, default=list(DEFAULT))
    parser.add_argument("--quick", action="store_true", help="100,000 rows and fewer repetitions")
    parser.add_argument("--rows", type=int, help="rows of the pipeline benchmark (default 1,000,000)")
    parser.add_argument(
        "--reps", type=int, help="repetitions of each side of the pipeline and loop benchmarks (default 3)"
    )
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the profiled mmp runs")
    parser.add_argument(
        "--omp-wait-policy",
        choices=("passive", "default"),
        default="passive",
        help="OpenMP wait policy of the pipeline benchmark, both sides (default: passive, see bench_pipeline.py)",
    )
    args = parser.parse_args(argv)
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    reps = args.reps or (2 if args.quick else 3)

    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    table: list[list[str]] = []
    if "cli" in args.only:
        say("cli")
        results["cli"] = bench_cli.run(5 if args.quick else 10)
        table += bench_cli.table(results["cli"])
    if "dvc" in args.only:
        say("dvc")
        results["dvc"] = bench_dvc.run(5 if args.quick else 10)
        table += bench_dvc.table(results["dvc"])
    if "pipeline" in args.only:
        say(f"pipeline: {rows:,} rows, {reps} repetitions per side")
        results["pipeline"] = bench_pipeline.run(rows, reps, args.profile, args.omp_wait_policy)
        table += bench_pipeline.table(results["pipeline"])
    if "loop" in args.only:
        say(f"loop: {reps} repetitions")
        results["loop"] = bench_loop.run(reps)
        table += bench_loop.table(results["loop"])
    if "omp" in args.only:
        say("omp")
        results["omp"] = bench_omp.run(100_000 if args.quick else 300_000, 1 if args.quick else 2)
        table += bench_omp.table(results["omp"])
    if "fit_eval" in args.only:
        say("fit_eval")
        results["fit_eval"] = bench_fit_eval.run(300_000 if args.quick else 1_000_000, 1 if args.quick else 2)
        table += bench_fit_eval.table(results["fit_eval"])
    if "serving" in args.only:
        say("serving")
        if args.quick:
            results["serving"] = bench_serving.run(5.0, 1.0, pyfunc=False, retries=0)
        else:
            results["serving"] = bench_serving.run()
        table += bench_serving.table(results["serving"])
    if "sweep" in args.only:
        say("sweep")
        results["sweep"] = bench_sweep.run(1 if args.quick else 2)
        table += bench_sweep.table(results["sweep"])
    if "quality" in args.only:
        say("quality")
        results["quality"] = bench_quality.run(10.0 if args.quick else bench_quality.BUDGET_S)
        table += bench_quality.table(results["quality"])
    if "tune" in args.only:
        say("tune")
        results["tune"] = bench_tune_parallel.run(1, "titanic" if args.quick else "diamonds")
        table += bench_tune_parallel.table(results["tune"])
    if "scale" in args.only:
        say("scale")
        results["scale"] = bench_scale.run((100_000, 500_000) if args.quick else bench_scale.SIZES)
        table += bench_scale.table(results["scale"])
    for name, result in results.items():
        save_result(name, result)

    info = machine()
    dirty = " (src/ modified)" if info["git"]["dirty"] else ""
    print(
        f"Measured {info['when']} on {info['cpus']} CPUs, Python {info['python']}, mmp at {info['git']['commit']}"
        f"{dirty}, src/mmp sha256 {info['git']['src_sha256']}; {time.perf_counter() - started:.0f} s in all.\n"
    )
    print(markdown_table(table))
    for name, title, module in DETAILS:
        if name in results:
            details = module.details(results[name])
            print(f"\n{title}:\n")
            print(details if isinstance(details, str) else "\n".join(details))
    say(f"results in {RESULTS_DIR}")
    return 0 if all(row[-1] in ("PASS", "INFO") for row in table) else 1


if __name__ == "__main__":
    raise SystemExit(main())
