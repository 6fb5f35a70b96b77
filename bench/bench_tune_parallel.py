"""Parallel search: `mmp tune --workers 2` (20 trials taken on demand, 1 thread each) vs 20 trials one after another
(1 thread), same seed and search space, on a throwaway git copy of the project.

    .venv/bin/python bench/bench_tune_parallel.py [--data diamonds] [--reps 1]

Interleaved, ``reps`` times each (every search starts from the same store and prepares its data once):
  parallel    mmp tune data=D recipe=lgbm-tuned --n-trials 20 --seed 0 --threads 1 --workers 2
  sequential  mmp tune data=D recipe=lgbm-tuned --n-trials 20 --seed 0 --threads 1
Targets (issue 18): parallel <= 0.65x the sequential wall time (the median of the pairs' ratios), and the
same best value within the trial
noise: |best(parallel) - best(sequential)| <= the standard deviation of the sequential search's 5 best
trials (the scores that separate the top trials are noise at this budget).
"""

from __future__ import annotations

import argparse
import csv
import re
import shutil
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench_dvc import GIT_ENV
from bench_sweep import make_project
from common import PYTHON, clean_env, markdown_table, median, run_logged, save_result, say, scratch_dir

from mmp.experiments.sweep import lower_is_better

TRIALS = 20
WORKERS = 2
TARGET_RATIO = 0.65
TOP = 5


def search(project: Path, env: dict[str, str], data: str, workers: int) -> tuple[float, dict[str, Any]]:
    """Run one search; its wall time, best value and the scores of its trials."""
    mmp = str(Path(PYTHON).with_name("mmp"))
    command = [mmp, "tune", f"data={data}", "recipe=lgbm-tuned", "--n-trials", str(TRIALS), "--seed", "0"]
    command += ["--threads", "1"] + (["--workers", str(workers)] if workers > 1 else [])
    shutil.rmtree(project / "multirun", ignore_errors=True)  # each search prepares its data once
    measured = run_logged(command, project, env, f"tune --workers {workers}")
    [folder] = sorted((project / "multirun").glob("tune-*"), key=lambda path: path.stat().st_mtime)[-1:]
    with (folder / "sweep_summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    metric = next(name for name in rows[0] if re.fullmatch(r"valid_\w+", name))
    scores = [float(row[metric]) for row in rows if row["status"] == "FINISHED" and row[metric]]
    lower = lower_is_better(metric)
    best = min(scores) if lower else max(scores)
    cpu = {"cpu_s": measured.cpu_seconds, "background_cpu_s": measured.background_cpu_seconds}
    return measured.seconds, {
        **cpu,
        "metric": metric,
        "best": best,
        "scores": scores,
        "trials": len(rows),
        "lower": lower,
    }


def run(reps: int = 1, data: str = "diamonds", keep: bool = False) -> dict[str, Any]:
    env = clean_env(**GIT_ENV)
    samples: dict[str, list[float]] = {"parallel": [], "sequential": []}
    found: dict[str, list[dict[str, Any]]] = {"parallel": [], "sequential": []}
    with scratch_dir("mmp-bench-tune-", keep) as scratch:
        project = scratch / "project"
        make_project(project, env, data)
        for rep in range(reps):
            for name, workers in (("parallel", WORKERS), ("sequential", 1)):
                say(f"tune: {name} ({rep + 1}/{reps})")
                seconds, result = search(project, env, data, workers)
                samples[name].append(seconds)
                found[name].append(result)
    medians = {name: median(values) for name, values in samples.items()}
    # Pair by pair (each parallel search against the sequential one right after it): a drift of the machine's
    # speed between pairs cancels out.
    pairs = [p / s for p, s in zip(samples["parallel"], samples["sequential"], strict=True)]
    sequential, parallel = found["sequential"][0], found["parallel"][0]
    top = sorted(sequential["scores"], reverse=not sequential["lower"])[:TOP]
    noise = statistics.stdev(top) if len(top) > 1 else 0.0
    return {
        "benchmark": "tune_parallel",
        "data": data,
        "reps": reps,
        "trials": TRIALS,
        "workers": WORKERS,
        "samples_s": samples,
        "median_s": medians,
        "pair_ratios": pairs,
        "ratio": median(pairs),
        "metric": sequential["metric"],
        "best": {"parallel": parallel["best"], "sequential": sequential["best"]},
        "trials_run": {"parallel": parallel["trials"], "sequential": sequential["trials"]},
        "noise": noise,
        # CPU-s of each search's process tree, and what other processes used meanwhile (the machine is shared)
        "cpu_s": {name: [r["cpu_s"] for r in found[name]] for name in found},
        "background_cpu_s": {name: [r["background_cpu_s"] for r in found[name]] for name in found},
        "best_gap": abs(parallel["best"] - sequential["best"]),
    }


def table(result: dict[str, Any]) -> list[list[str]]:
    medians, best, metric = result["median_s"], result["best"], result["metric"]
    cpu, others = result["cpu_s"], result["background_cpu_s"]
    return [
        [
            f"mmp tune, {result['workers']} workers, {result['trials']} trials on demand, 1 thread ({result['data']})",
            f"{medians['parallel']:.1f} s",
            f"{medians['sequential']:.1f} s ({result['trials']} trials in a row, 1 thread); CPU-s "
            f"{cpu['parallel'][0]:.0f} vs {cpu['sequential'][0]:.0f}, others' CPU-s meanwhile "
            f"{others['parallel'][0]:.0f} vs {others['sequential'][0]:.0f}",
            f"{result['ratio']:.3f}x (median of pairs: {', '.join(f'{r:.3f}' for r in result['pair_ratios'])})",
            f"<= {TARGET_RATIO}x",
            "PASS" if result["ratio"] <= TARGET_RATIO else "FAIL",
        ],
        [
            f"mmp tune, best {metric}: parallel vs sequential",
            f"{best['parallel']:.5g}",
            f"{best['sequential']:.5g}",
            f"gap {result['best_gap']:.3g}",
            f"<= noise {result['noise']:.3g} (sd of the {TOP} best)",
            "PASS" if result["best_gap"] <= result["noise"] else "FAIL",
        ],
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--data", choices=("titanic", "diamonds"), default="diamonds")
    parser.add_argument("--keep", action="store_true", help="keep the scratch project")
    args = parser.parse_args(argv)
    result = run(args.reps, args.data, args.keep)
    save_result(f"tune-parallel-{args.data}", result)
    print(markdown_table(table(result)))
    return 0 if all(row[-1] == "PASS" for row in table(result)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
