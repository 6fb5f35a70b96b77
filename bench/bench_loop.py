"""The everyday loop on the bundled titanic data (issue 15): mmp's commands against a plain script, side by side.

    .venv/bin/python bench/bench_loop.py [--reps 3] [--only ITEM ...] [--recipes NAME ...] [--keep]

One throwaway git copy of the project (conf/, recipes/, stages/, src/mmp/ as stage deps, dvc.yaml,
params.yaml, data/titanic.csv), committed, then one full ``dvc repro`` (warm-up: the MLflow store, DVC's
cache; timed once for reference) and committed again. Every command runs there, in ``clean_env()``.

The baseline, ``plain``: ``bench/plain_xgboost.py`` (prepare + train by hand with Polars and XGBoost, the
xgb-baseline recipe's parameters; no config system, no tracking, no charts, no explanations). It needs a 0/1
target, so it reads a copy of titanic.csv whose ``survived`` column is 1 (survived) or 0 (died), written
once before any timing.

Items (``--only``; all by default). Each repetition runs every selected item once, in this order:
  mmp_train   ``mmp train`` (prepare + train + explain in one process, tracked, charts included; its outputs
              go to runs/ in the copy). Target <= 2.0x plain.
  dvc_repro   ``dvc repro -f`` (all three stages, each a process with its recorder). Target <= 3.0x plain.
  dvc_exp     ``dvc exp run -S recipe=lgbm-tuned`` (all three stages run: the recipe changes every
              stage's params). Before each, untimed: git's files are reset to the commit (an exp run leaves
              params.yaml, dvc.lock and the metrics changed; so before dvc_repro and recorder too) and DVC's
              run cache (.dvc/cache/runs) is emptied, so that no stage is restored from an earlier
              repetition: every run is a first try of the recipe. Target <= 3.5x plain.
  recorder    ``dvc repro -f`` as is (a recorder helper process per stage) against ``MMP_RECORDER=0 dvc repro
              -f`` (stages record MLflow in-process); ratio recorder / in-process. No target: it informs
              issue 13 item 7 (keep the recorder or not).
  explain     ``python stages/explain.py recipe=R`` for every shipped recipe R (recipes/*.yaml tracked by git,
              or ``--recipes``), outputs under runs/bench-explain/R/ (out of DVC's way). Its prepare and
              train stages run once, untimed, before the first repetition. Target <= 2 s each (wall time of
              the stage process, start-up and MLflow included).
  sweep_job   ``mmp sweep recipe=xgb-baseline seed=1,2,3`` in one process (Hydra's basic launcher), multirun/
              emptied first. Each job writes its wall time (job.json: compose, prepare - each seed is a new
              split -, train, explain, MLflow) and its train run logs ``fit_seconds``; a job's overhead is
              the first minus the second. Per repetition, the mean over the jobs after the first (the first
              also pays the sweep's one-off imports, a per-sweep cost reported apart with the parent run,
              summary and process start-up). Target <= 0.5 s per job.
  million     opt-in (``--only million``; about 1.5 min a pair on a quiet machine): ``mmp train`` on
              bench/make_data.py's 1,000,000-row synthetic set, explain included (its default 2,000-row
              sample), against ``bench_loop.py --plain-explain``: plain_xgboost.py's prepare + train, then
              XGBoost's ``pred_contribs`` on 2,000 seeded test rows. Wall and peak RSS of the whole process
              tree (the recorder included), pair by pair. Targets <= 1.25x wall, <= 1.5x peak RSS.
  million_lgbm  opt-in: the same with ``recipe=lgbm-tuned`` against plain_lightgbm.py and LightGBM's
              ``pred_contrib`` (target <= 1.25x wall). Not here: the stages-only 1M target (bench_pipeline.py).

Pairing: mmp_train, dvc_repro and dvc_exp each run right next to a plain run of their own (plain first in
even repetitions, second in odd ones); the recorder's two sides likewise. A ratio is computed pair by pair
and the figure is the median of the pairs' ratios, so a drift of the machine's speed cancels out; the
medians of the wall times are shown too. Before each pair, a short wait for a quiet machine (common.py).
Logs: bench/results/logs/loop_*.log (timed commands), and <scratch>/project.log (set-up). Results:
bench/results/loop.json. Exit code 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import make_data
from bench_dvc import DVC, GIT_ENV, make_project
from bench_pipeline import overrides as synthetic_overrides
from common import (
    BENCH_DIR,
    PYTHON,
    RESULTS_DIR,
    ROOT,
    VENV_BIN,
    check,
    clean_env,
    markdown_table,
    median,
    run_logged,
    run_measured,
    save_result,
    say,
    scratch_dir,
    wait_for_quiet,
)

MMP = str(VENV_BIN / "mmp")
LOG_DIR = RESULTS_DIR / "logs"
TARGET = "survived"

# Items paired with a plain run: (what the table calls it, command, ratio target).
PAIRED: dict[str, tuple[str, list[str], float]] = {
    "mmp_train": ("`mmp train` (prepare+train+explain, tracked, charts)", [MMP, "train"], 2.0),
    "dvc_repro": ("`dvc repro -f` (3 stages)", [DVC, "repro", "-f"], 3.0),
    "dvc_exp": ("`dvc exp run -S recipe=lgbm-tuned` (3 stages)", [DVC, "exp", "run", "-S", "recipe=lgbm-tuned"], 3.5),
}
ITEMS = (*PAIRED, "recorder", "explain", "sweep_job")
OPT_IN = ("million", "million_lgbm")  # run only when named in --only
# The 1M-row items: the recipe mmp trains, and the plain script of its library (bench/plain_<library>.py).
MILLION = {"million": ("xgb-baseline", "xgboost"), "million_lgbm": ("lgbm-tuned", "lightgbm")}
MILLION_ROWS = 1_000_000
MILLION_TARGETS = {"wall": 1.25, "rss": 1.5}
SHAP_ROWS = 2_000  # conf/explain's default sample_size
TARGET_EXPLAIN_S = 2.0
SWEEP = ["recipe=xgb-baseline", "recipe.model.params.max_depth=4,5,6"]  # one prepare, shared by the jobs
TARGET_SWEEP_JOB_S = 0.5
EXPLAIN_DIR = "runs/bench-explain"


def shipped_recipes() -> list[str]:
    """The recipes git tracks at the top of recipes/ (not the search spaces, not a tuned ``*-best.yaml``)."""
    listed = subprocess.run(
        ["git", "ls-files", "recipes"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return sorted(Path(p).stem for p in listed if Path(p).parent == Path("recipes") and p.endswith(".yaml"))


def plain_csv(source: Path, dest: Path) -> Path:
    """titanic.csv with a 0/1 target (plain_xgboost.py needs one; XGBoost takes no string labels)."""
    with source.open(newline="") as src, dest.open("w", newline="") as out:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(out, fieldnames=reader.fieldnames or [])
        writer.writeheader()
        for row in reader:
            if row[TARGET]:
                row[TARGET] = "1" if row[TARGET] == "survived" else "0"
            writer.writerow(row)
    return dest


def measure(cmd: Sequence[str], cwd: Path, env: dict[str, str], name: str) -> float:
    """Wall seconds of a command that must succeed; its output appended to bench/results/logs/loop_<name>.log."""
    log_path = LOG_DIR / f"loop_{name}.log"
    with log_path.open("a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        return check(run_measured(cmd, cwd, env, log, memory=False), name, log_path).seconds


def reset_workspace(project: Path, env: dict[str, str], run_cache: bool = True) -> None:
    """Git's files as committed (an earlier `dvc exp run` changed params.yaml, dvc.lock and the metrics files);
    without ``run_cache``, DVC's run cache emptied too."""
    run_logged(["git", "checkout", "-q", "HEAD", "--", "."], project, env, "reset")
    if not run_cache:
        shutil.rmtree(project / ".dvc" / "cache" / "runs", ignore_errors=True)


def explain_paths(recipe: str) -> list[str]:
    """Overrides putting one recipe's stage outputs under runs/bench-explain/<recipe>/ (git- and DVC-ignored)."""
    folder = f"{EXPLAIN_DIR}/{recipe}"
    return [
        f"recipe={recipe}",
        f"paths.prepared_dir={folder}/prepared",
        f"paths.model_dir={folder}/models",
        f"paths.metrics_file={folder}/metrics.json",
        f"paths.plots_dir={folder}/plots",
        f"paths.explain_dir={folder}/explain",
    ]


def fit_seconds(store: Path, run_id: str) -> float:
    """The ``fit_seconds`` metric of one train run in the copy's MLflow SQLite store."""
    with sqlite3.connect(store) as db:
        row = db.execute(
            "SELECT value FROM metrics WHERE run_uuid = ? AND key = 'fit_seconds' ORDER BY timestamp DESC",
            (run_id,),
        ).fetchone()
    if row is None:
        raise RuntimeError(f"train run {run_id} has no fit_seconds metric")
    return float(row[0])


def run_sweep(project: Path, env: dict[str, str], rep: int) -> dict[str, Any]:
    """One in-process sweep: its wall time, and each job's seconds, fit seconds and overhead."""
    shutil.rmtree(project / "multirun", ignore_errors=True)
    wall = measure([MMP, "sweep", *SWEEP], project, env, "sweep_job")
    (folder,) = (project / "multirun").glob("sweep-*")
    jobs = []
    for path in sorted(folder.glob("*/job.json"), key=lambda p: int(p.parent.name)):
        job = json.loads(path.read_text())
        if job["status"] != "FINISHED":
            raise RuntimeError(f"sweep job {job['job']} (rep {rep}): {job['status']}: {job.get('error')}")
        fit = fit_seconds(project / "mlflow.db", job["run_id"])
        jobs.append(
            {"job": job["job"], "seconds": job["seconds"], "fit_seconds": fit, "overhead_s": job["seconds"] - fit}
        )
    later = jobs[1:] or jobs
    return {
        "wall_s": wall,
        "jobs": jobs,
        "per_job_overhead_s": sum(j["overhead_s"] for j in later) / len(later),
        "first_job_overhead_s": jobs[0]["overhead_s"],
        "fit_s": median([j["fit_seconds"] for j in jobs]),
        # Process start-up, imports before the first job, the parent run, the summary and its chart.
        "per_sweep_s": wall - sum(j["seconds"] for j in jobs),
    }


def plain_explain(data: Path, out: Path, library: str = "xgboost") -> dict[str, Any]:
    """The plain script of ``library`` (prepare + train), then the library's own exact SHAP (XGBoost's
    ``pred_contribs``, LightGBM's ``pred_contrib``) on a seeded 2,000-row sample of its test split."""
    import importlib

    import numpy as np
    import plain_xgboost
    import polars as pl

    encoding: dict[str, Any] = {}
    encode = plain_xgboost.encoder

    def keep_encoding(train: pl.DataFrame, features: list[str]) -> tuple[list[pl.Expr], list[str]]:
        encoding["exprs"], encoding["types"] = encode(train, features)
        return encoding["exprs"], encoding["types"]

    plain_xgboost.encoder = keep_encoding  # the same codes for the sample, without fitting them again
    result = importlib.import_module(f"plain_{library}").run(data, out, "target", ["id"])
    test = pl.read_parquet(out / "test.parquet")
    sample = test.sample(n=min(SHAP_ROWS, test.height), seed=plain_xgboost.SEED, shuffle=True)
    x = sample.select(encoding["exprs"]).to_numpy().astype(np.float32, copy=False)
    best = result["best_iteration"]
    if library == "lightgbm":
        import lightgbm

        booster = lightgbm.Booster(model_file=str(out / "model.txt"))
        contributions = booster.predict(x, pred_contrib=True, num_iteration=best)
    else:
        import xgboost

        booster = xgboost.Booster(model_file=out / "model.ubj")
        matrix = xgboost.DMatrix(x, feature_types=encoding["types"], enable_categorical=True)
        contributions = booster.predict(matrix, pred_contribs=True, iteration_range=(0, best + 1))
    return {**result, "shap_rows": len(x), "shap_shape": list(contributions.shape)}


def measure_tree(cmd: Sequence[str], cwd: Path, env: dict[str, str], name: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB, the whole process tree) of a command that must succeed."""
    log_path = LOG_DIR / f"loop_{name}.log"
    with log_path.open("a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        measured = check(run_measured(cmd, cwd, env, log, memory=True), name, log_path)
    return measured.seconds, measured.peak_rss_mb


def run_million(project: Path, scratch: Path, env: dict[str, str], reps: int, item: str) -> dict[str, Any]:
    """``mmp train`` on 1M synthetic rows, explain included, against the plain script with the library's SHAP."""
    recipe, library = MILLION[item]
    csv_path = make_data.ensure(make_data.Options(rows=MILLION_ROWS))
    mmp_cmd = [MMP, "train", f"recipe={recipe}", *synthetic_overrides(csv_path), f"explain.sample_size={SHAP_ROWS}"]
    plain_cmd = [PYTHON, str(Path(__file__).resolve()), "--plain-explain", str(csv_path), str(scratch / "plain1m")]
    plain_cmd += ["--library", library]
    sides: dict[str, list[tuple[float, float]]] = {"mmp": [], "plain": []}
    for rep in range(reps):
        say(f"loop: rep {rep + 1}/{reps}: {item} (mmp train recipe={recipe} with explain vs plain + its SHAP)")
        mmp, plain = run_pair(
            partial(measure_tree, mmp_cmd, project, env, f"{item}_mmp"),
            partial(measure_tree, plain_cmd, project, env, f"{item}_plain"),
            rep % 2 == 1,
        )
        sides["mmp"].append(mmp)
        sides["plain"].append(plain)
        say(f"loop:   {mmp[0]:.1f} s / {mmp[1]:.0f} MB vs plain {plain[0]:.1f} s / {plain[1]:.0f} MB")
    wall = summarise_pairs([m[0] for m in sides["mmp"]], [p[0] for p in sides["plain"]])
    rss = summarise_pairs([m[1] for m in sides["mmp"]], [p[1] for p in sides["plain"]])
    return {
        "rows": MILLION_ROWS,
        "recipe": recipe,
        "command": f"mmp train {' '.join(mmp_cmd[2:])}",
        "baseline": f"bench_loop.py --plain-explain CSV OUT --library {library} (plain_{library}.py + its SHAP on "
        f"{SHAP_ROWS:,} test rows)",
        "wall": {**wall, "target_ratio": MILLION_TARGETS["wall"], "pass": wall["ratio"] <= MILLION_TARGETS["wall"]},
        "rss": {**rss, "target_ratio": MILLION_TARGETS["rss"], "pass": rss["ratio"] <= MILLION_TARGETS["rss"]},
    }


BUSY: list[float] = []  # the others' share of the CPUs seen just before each measurement


def quiet() -> None:
    """Wait for a quiet machine (common.py, at most 10 s) and note how busy the others still were."""
    BUSY.append(wait_for_quiet())


def run_pair(first: Callable[[], float], second: Callable[[], float], swap: bool) -> tuple[float, float]:
    """Both sides back to back (``second`` first when ``swap``); their seconds as (first, second)."""
    quiet()
    if swap:
        b = second()
        return first(), b
    a = first()
    return a, second()


def summarise_pairs(a: list[float], b: list[float]) -> dict[str, Any]:
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return {"median_s": median(a), "baseline_median_s": median(b), "ratios": ratios, "ratio": median(ratios)}


def run(
    reps: int = 3,
    only: Sequence[str] = ITEMS,
    recipes: Sequence[str] | None = None,
    keep: bool = False,
) -> dict[str, Any]:
    """Set up the project copy, then run the selected items ``reps`` times, interleaved."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    for old in LOG_DIR.glob("loop_*.log"):
        old.unlink()
    recipes = list(recipes or shipped_recipes())
    env = clean_env(**GIT_ENV)
    paired: dict[str, dict[str, list[float]]] = {item: {"mmp": [], "plain": []} for item in PAIRED if item in only}
    recorder: dict[str, list[float]] = {"recorder": [], "inprocess": []}
    explain: dict[str, list[float]] = {recipe: [] for recipe in recipes} if "explain" in only else {}
    sweeps: list[dict[str, Any]] = []
    with scratch_dir("mmp-bench-loop-", keep) as scratch:
        project = scratch / "project"
        say("loop: project copy, committed, and a first full `dvc repro`")
        first_repro_s = make_project(project, env)
        data = plain_csv(project / "data" / "titanic.csv", scratch / "titanic01.csv")
        plain_cmd = [PYTHON, str(BENCH_DIR / "plain_xgboost.py"), str(data), str(scratch / "plain"), "--target", TARGET]
        for recipe in explain:
            say(f"loop: prepare and train {recipe} for its explain stage")
            for stage in ("prepare", "train"):
                run_logged([PYTHON, f"stages/{stage}.py", *explain_paths(recipe)], project, env, f"{stage} {recipe}")

        def plain() -> float:
            return measure(plain_cmd, project, env, "plain")

        for rep in range(reps):
            swap = rep % 2 == 1  # alternate which side goes first
            for item, samples in paired.items():
                _, cmd, _ = PAIRED[item]
                if item != "mmp_train":
                    reset_workspace(project, env, run_cache=item != "dvc_exp")
                say(f"loop: rep {rep + 1}/{reps}: {item} and plain")
                mmp_s, plain_s = run_pair(partial(measure, cmd, project, env, item), plain, swap)
                samples["mmp"].append(mmp_s)
                samples["plain"].append(plain_s)
                say(f"loop:   {mmp_s:.1f} s vs plain {plain_s:.1f} s ({mmp_s / plain_s:.2f}x)")
            if "recorder" in only:
                say(f"loop: rep {rep + 1}/{reps}: dvc repro -f with and without recorder processes")
                repro = PAIRED["dvc_repro"][1]
                reset_workspace(project, env)
                with_recorder, in_process = run_pair(
                    partial(measure, repro, project, env, "recorder"),
                    partial(measure, repro, project, clean_env(**GIT_ENV, MMP_RECORDER="0"), "inprocess"),
                    swap,
                )
                recorder["recorder"].append(with_recorder)
                recorder["inprocess"].append(in_process)
                say(f"loop:   recorder {with_recorder:.1f} s, in-process {in_process:.1f} s")
            for recipe, samples_s in explain.items():
                say(f"loop: rep {rep + 1}/{reps}: explain {recipe}")
                quiet()
                cmd = [PYTHON, "stages/explain.py", *explain_paths(recipe)]
                samples_s.append(measure(cmd, project, env, f"explain_{recipe}"))
                say(f"loop:   {samples_s[-1]:.1f} s")
            if "sweep_job" in only:
                say(f"loop: rep {rep + 1}/{reps}: mmp sweep {' '.join(SWEEP)}")
                quiet()
                sweeps.append(run_sweep(project, env, rep))
                say(f"loop:   {sweeps[-1]['per_job_overhead_s']:.2f} s per job besides the fit")
        millions = {item: run_million(project, scratch, env, reps, item) for item in MILLION if item in only}
        reset_workspace(project, env)
    result: dict[str, Any] = {
        "benchmark": "loop",
        "data": "titanic",
        "reps": reps,
        "first_repro_s": first_repro_s,
        "plain_command": "bench/plain_xgboost.py titanic01.csv OUT --target survived",
        "paired": {},
        # Others' share of the CPUs before each measurement: ratios hold up under load, wall times do not.
        "others_cpu_share": {"median": median(BUSY), "max": max(BUSY), "samples": len(BUSY)} if BUSY else None,
    }
    for item, samples in paired.items():
        title, cmd, target = PAIRED[item]
        summary = summarise_pairs(samples["mmp"], samples["plain"])
        result["paired"][item] = {
            "title": title,
            "command": " ".join(Path(cmd[0]).name if i == 0 else part for i, part in enumerate(cmd)),
            "mmp_s": samples["mmp"],
            "plain_s": samples["plain"],
            **summary,
            "target_ratio": target,
            "pass": summary["ratio"] <= target,
        }
    if recorder["recorder"]:
        result["recorder"] = {
            "recorder_s": recorder["recorder"],
            "inprocess_s": recorder["inprocess"],
            **summarise_pairs(recorder["recorder"], recorder["inprocess"]),
        }
    if explain:
        result["explain"] = {
            recipe: {"seconds": s, "median_s": median(s), "pass": median(s) <= TARGET_EXPLAIN_S}
            for recipe, s in explain.items()
        }
        result["target_explain_s"] = TARGET_EXPLAIN_S
    result.update(millions)
    if sweeps:
        per_job = median([s["per_job_overhead_s"] for s in sweeps])
        result["sweep_job"] = {
            "command": f"mmp sweep {' '.join(SWEEP)}",
            "runs": sweeps,
            "per_job_overhead_s": per_job,
            "first_job_overhead_s": median([s["first_job_overhead_s"] for s in sweeps]),
            "fit_s": median([s["fit_s"] for s in sweeps]),
            "per_sweep_s": median([s["per_sweep_s"] for s in sweeps]),
            "wall_s": median([s["wall_s"] for s in sweeps]),
            "target_s": TARGET_SWEEP_JOB_S,
            "pass": per_job <= TARGET_SWEEP_JOB_S,
        }
    return result


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def table(result: dict[str, Any]) -> list[list[str]]:
    """Rows for the summary table (common.TABLE_HEADER)."""
    rows = []
    for item in result["paired"].values():
        pairs = len(item["ratios"])
        rows.append(
            [
                f"{item['title']}, titanic",
                f"{item['median_s']:.1f} s",
                f"plain script {item['baseline_median_s']:.1f} s",
                f"{item['ratio']:.2f}x (median of {pairs} pair{'s' * (pairs != 1)})",
                f"<= {item['target_ratio']}x",
                _verdict(item["pass"]),
            ]
        )
    if rec := result.get("recorder"):
        rows.append(
            [
                "`dvc repro -f`, recorder processes vs `MMP_RECORDER=0` (issue 13 item 7)",
                f"{rec['median_s']:.1f} s",
                f"in-process {rec['baseline_median_s']:.1f} s",
                f"{rec['ratio']:.2f}x (recorder / in-process)",
                "- (informs a decision)",
                "INFO",
            ]
        )
    for recipe, figures in result.get("explain", {}).items():
        rows.append(
            [
                f"explain stage, {recipe} (median of {len(figures['seconds'])})",
                f"{figures['median_s']:.2f} s",
                "-",
                "-",
                f"<= {result['target_explain_s']:g} s",
                _verdict(figures["pass"]),
            ]
        )
    for million in (result[item] for item in MILLION if item in result):
        for key, unit, what in (("wall", "s", "wall"), ("rss", "MB", "peak RSS of the process tree")):
            figures = million[key]
            recipe = million.get("recipe", "xgb-baseline")
            rows.append(
                [
                    f"`mmp train recipe={recipe}` with explain, {million['rows']:,} synthetic rows, {what}",
                    f"{figures['median_s']:.1f} {unit}",
                    f"plain + its SHAP {figures['baseline_median_s']:.1f} {unit}",
                    f"{figures['ratio']:.2f}x (median of {len(figures['ratios'])} pairs)",
                    f"<= {figures['target_ratio']}x",
                    _verdict(figures["pass"]),
                ]
            )
    if sweep := result.get("sweep_job"):
        rows.append(
            [
                f"in-process sweep, per-job overhead besides the fit (`{sweep['command']}`)",
                f"{sweep['per_job_overhead_s']:.2f} s",
                f"fit {sweep['fit_s']:.2f} s per job",
                "-",
                f"<= {sweep['target_s']:g} s",
                _verdict(sweep["pass"]),
            ]
        )
    return rows


def details(result: dict[str, Any]) -> str:
    """Markdown lines: every pair's ratio, ranges, the sweep's per-sweep costs."""
    lines = [f"- first full `dvc repro` of the fresh copy (set-up, not a figure): {result['first_repro_s']:.1f} s"]
    if busy := result.get("others_cpu_share"):
        lines.append(
            f"- other processes' share of the CPUs before a measurement: median {busy['median']:.0%}, "
            f"max {busy['max']:.0%} ({busy['samples']} samples)"
        )

    def spread(values: list[float]) -> str:
        return f"{min(values):.1f}-{max(values):.1f} s"

    for name, item in result["paired"].items():
        ratios = ", ".join(f"{r:.2f}" for r in item["ratios"])
        lines.append(
            f"- {name}: ratios by pair {ratios}; wall {spread(item['mmp_s'])}, plain {spread(item['plain_s'])}"
        )
    if rec := result.get("recorder"):
        ratios = ", ".join(f"{r:.2f}" for r in rec["ratios"])
        lines.append(
            f"- recorder: ratios by pair {ratios}; recorder {spread(rec['recorder_s'])}, "
            f"in-process {spread(rec['inprocess_s'])}"
        )
    if sweep := result.get("sweep_job"):
        lines.append(
            f"- sweep ({len(sweep['runs'][0]['jobs'])} jobs, medians): wall {sweep['wall_s']:.1f} s; the first job's "
            f"overhead {sweep['first_job_overhead_s']:.2f} s (one-off imports); per sweep (start-up, parent run, "
            f"summary) {sweep['per_sweep_s']:.1f} s"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every item (default 3)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=(*ITEMS, *OPT_IN),
        default=list(ITEMS),
        help="items to run (default all but million and million_lgbm)",
    )
    parser.add_argument("--recipes", nargs="+", help="recipes of the explain item (default: every shipped one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch project")
    parser.add_argument("--plain-explain", nargs=2, type=Path, metavar=("CSV", "OUT"), help="(the million baseline)")
    parser.add_argument("--library", choices=("xgboost", "lightgbm"), default="xgboost", help="(with --plain-explain)")
    args = parser.parse_args(argv)
    if args.plain_explain:
        print(json.dumps(plain_explain(*args.plain_explain, args.library)))
        return 0
    result = run(args.reps, args.only, args.recipes, args.keep)
    path = save_result("loop", result)
    rows = table(result)
    print(markdown_table(rows))
    print()
    print(details(result))
    say(f"wrote {path}")
    return 0 if all(row[-1] in ("PASS", "INFO") for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
