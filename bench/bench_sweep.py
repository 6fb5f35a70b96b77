"""Sweeps: a 4-job multirun in parallel (joblib, 2 workers) vs the same jobs one after another, and
the tracking overhead of one sweep job's train run.

    .venv/bin/python bench/bench_sweep.py [--reps 2]

A throwaway git copy of the project; ``--data`` titanic (1,309 rows) or diamonds (53,940 rows).
Interleaved, ``reps`` times each:
  parallel    python stages/train.py -m data=D recipe=lgbm-tuned recipe.model.params.num_leaves=7,15,31,63
              hydra/launcher=joblib hydra.launcher.n_jobs=2
  sequential  the same sweep with Hydra's basic launcher: the jobs one after another, in one process
  separate    the four jobs as four `mmp train data=D recipe=lgbm-tuned ...num_leaves=N` commands in a row
All start from the same initialised MLflow store without prepared-data cache (each sweep prepares once).
Target (issue 5): parallel <= 0.65x the jobs run one after another.

Then bench/sweep_overhead.py runs a 4-job sweep in one process with timers around the pipeline's
steps, and reports per train run: the fit itself, and everything else (evaluation, outputs, plots,
MLflow). Target: everything but the training <= 1.5 s per run.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench_dvc import GIT_ENV
from common import (
    BENCH_DIR,
    PYTHON,
    clean_env,
    copy_project,
    markdown_table,
    median,
    run_logged,
    save_result,
    say,
    scratch_dir,
)

LEAVES = (7, 15, 31, 63)
SWEEP = ["recipe=lgbm-tuned", f"recipe.model.params.num_leaves={','.join(map(str, LEAVES))}"]
PARALLEL = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
TARGET_RATIO = 0.65
TARGET_OVERHEAD_S = 1.5


def make_project(dest: Path, env: dict[str, str], data: str) -> None:
    copy_project(dest, extra=(".gitignore", f"data/{data}.csv", "data/.gitignore"))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        run_logged(cmd, dest, env, " ".join(cmd))
    # Initialise the store once (every side then starts from the same store).
    run_logged([PYTHON, "stages/prepare.py", f"data={data}", "recipe=lgbm-tuned"], dest, env, "prepare")


def run(reps: int = 2, data: str = "titanic", keep: bool = False) -> dict[str, Any]:
    env = clean_env(**GIT_ENV)
    sweep = [f"data={data}", *SWEEP]
    with scratch_dir("mmp-bench-sweep-", keep) as scratch:
        project = scratch / "project"
        make_project(project, env, data)
        mmp = str(Path(PYTHON).with_name("mmp"))
        commands: dict[str, list[list[str]]] = {
            "parallel": [[PYTHON, "stages/train.py", "-m", *sweep, *PARALLEL]],
            "sequential": [[PYTHON, "stages/train.py", "-m", *sweep]],
            "separate": [
                [mmp, "train", f"data={data}", "recipe=lgbm-tuned", f"recipe.model.params.num_leaves={n}"]
                for n in LEAVES
            ],
        }
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for rep in range(reps):
            for name, cmds in commands.items():
                shutil.rmtree(project / "multirun", ignore_errors=True)
                say(f"sweep: {name} ({rep + 1}/{reps})")
                samples[name].append(sum(run_logged(cmd, project, env, name).seconds for cmd in cmds))
        shutil.rmtree(project / "multirun", ignore_errors=True)
        say("sweep: tracking overhead of 4 jobs, in one process")
        run_logged([PYTHON, str(BENCH_DIR / "sweep_overhead.py"), *sweep], project, env, "overhead")
        overhead = json.loads((project / "sweep_overhead.json").read_text())
    medians = {name: median(values) for name, values in samples.items()}
    return {
        "benchmark": "sweep",
        "data": data,
        "reps": reps,
        "jobs": 4,
        "samples_s": samples,
        "median_s": medians,
        "ratio": medians["parallel"] / medians["sequential"],
        "ratio_separate": medians["parallel"] / medians["separate"],
        "overhead": overhead,
    }


def table(result: dict[str, Any]) -> list[list[str]]:
    medians, overhead, data = result["median_s"], result["overhead"], result["data"]
    per_run = overhead["per_run_s"]
    return [
        [
            f"4-job sweep ({data}), joblib 2 workers",
            f"{medians['parallel']:.1f} s",
            f"{medians[side]:.1f} s {label}",
            f"{result[key]:.2f}x",
            f"<= {TARGET_RATIO}x",
            "PASS" if result[key] <= TARGET_RATIO else "FAIL",
        ]
        for side, key, label in (
            ("sequential", "ratio", "basic launcher, one process"),
            ("separate", "ratio_separate", "4 x mmp train in a row"),
        )
    ] + [
        [
            "Tracking overhead per train run",
            f"{per_run['not_training']:.2f} s",
            f"fit {per_run['fit']:.2f} s" if "fit" in per_run else "fit not timed (TODO in sweep_overhead.py)",
            "-",
            f"<= {TARGET_OVERHEAD_S} s",
            "n/a" if "fit" not in per_run else "PASS" if per_run["not_training"] <= TARGET_OVERHEAD_S else "FAIL",
        ],
    ]


def details(result: dict[str, Any]) -> str:
    overhead = result["overhead"]
    rows = [[name, f"{seconds:.3f}"] for name, seconds in overhead["per_run_s"].items()]
    rows += [[f"per sweep: {name}", f"{seconds:.3f}"] for name, seconds in overhead["per_sweep_s"].items()]
    return markdown_table(rows, header=["Step (mean per train run)", "Seconds"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--data", choices=("titanic", "diamonds"), default="titanic")
    parser.add_argument("--keep", action="store_true", help="keep the scratch project")
    args = parser.parse_args(argv)
    result = run(args.reps, args.data, args.keep)
    save_result(f"sweep-{args.data}", result)
    print(markdown_table(table(result)))
    print()
    print(details(result))
    return 0 if all(row[-1] == "PASS" for row in table(result)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
