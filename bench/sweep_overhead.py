"""Where a sweep job's train run spends its time. Run by bench_sweep.py inside a project copy:

    python bench/sweep_overhead.py recipe=lgbm-tuned recipe.model.params.num_leaves=7,15,31,63

Runs the sweep in this process (Hydra's basic launcher) with timers wrapped around the pipeline's
steps, and writes sweep_overhead.json: mean seconds per train run by step, and per-sweep costs.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

started = time.perf_counter()
import mlflow  # noqa: E402  (timed on purpose)

IMPORT_MLFLOW_S = time.perf_counter() - started

from mmp import tracking  # noqa: E402
from mmp.experiments import multirun, sweep  # noqa: E402
from mmp.model import pyfunc  # noqa: E402
from mmp.model.predictor import Predictor  # noqa: E402
from mmp.model.trained import TrainedModel  # noqa: E402
from mmp.pipeline import explain, prepare, train  # noqa: E402
from mmp.tracking import runs as tracking_runs  # noqa: E402

in_train = False
per_run: dict[str, float] = defaultdict(float)
per_sweep: dict[str, float] = defaultdict(float)
train_runs = 0


def timed(owner: Any, attr: str, name: str) -> None:
    original: Callable[..., Any] = getattr(owner, attr)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            (per_run if in_train else per_sweep)[name] += time.perf_counter() - began

    setattr(owner, attr, wrapper)


def timed_train() -> None:
    original = train.run_train

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        global in_train, train_runs
        in_train, began = True, time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            per_run["train stage, total"] += time.perf_counter() - began
            in_train, train_runs = False, train_runs + 1

    train.run_train = wrapper  # sweep.run_job imports it when a job starts: it gets the wrapper


# (owner, attribute, name): the owner is the module whose global the caller looks up (a name imported with
# `from x import f` is wrapped in the importer). A name wrapped in two owners adds up both.
STEPS = [
    (train, "load_prepared", "read prepared data"),
    (train, "fit", "fit"),  # mmp.model.trained.fit, as imported by the train stage
    (Predictor, "predict_encoded", "predict every split"),
    (train, "evaluate", "metrics"),
    (TrainedModel, "save", "write model files"),
    (train, "_write_evaluation_plots", "evaluation plots"),
    (tracking_runs, "setup", "mlflow: store and experiment"),  # stage runs
    (tracking, "setup", "mlflow: store and experiment"),  # the sweep's parent run
    (tracking_runs, "common_tags", "tags: git, versions, overrides"),
    (tracking, "common_tags", "tags: git, versions, overrides"),
    (mlflow, "start_run", "mlflow: start run"),
    (mlflow, "log_params", "mlflow: params"),
    (train, "_mirror_train", "mlflow: metrics, curves, dataset, artifacts, model"),
    (pyfunc, "log_model", "mlflow: pyfunc model (part of the line above)"),
    (mlflow, "end_run", "mlflow: end run"),
    (sweep, "start", "sweep: parent run"),
    (sweep, "finish", "sweep: summary, chart, parent metrics"),
    (explain, "run_explain", "explain stage (its own run)"),
    (prepare, "run_prepare", "prepare stage (once per sweep)"),
]


def main(argv: list[str]) -> None:
    for owner, attr, name in STEPS:
        timed(owner, attr, name)
    timed_train()
    multirun.run_multirun(argv, command="bench/sweep_overhead.py")
    means = {name: seconds / train_runs for name, seconds in per_run.items()}
    means["not_training"] = means["train stage, total"] - means.get("fit", 0.0)
    per_sweep["import mlflow"] = IMPORT_MLFLOW_S
    Path("sweep_overhead.json").write_text(
        json.dumps({"train_runs": train_runs, "per_run_s": means, "per_sweep_s": dict(per_sweep)}, indent=2)
    )


if __name__ == "__main__":
    main(sys.argv[1:])
