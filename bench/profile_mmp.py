"""Where mmp's time goes: the prepare and train stages with timing wrappers around their steps.

Run from a project copy (bench_pipeline.py does it)::

    python profile_mmp.py OUT.json prepare -- data.path=... data.target=target ...   # as stages/prepare.py
    python profile_mmp.py OUT.json train -- ...                                      # as stages/train.py
    python profile_mmp.py OUT.json all -- ...            # both in one process, as `mmp train` (minus explain)

The libraries the stage would import are imported first, one at a time, so that each import's cost is a
line of its own; then timing wrappers are put around the pipeline's steps and the stage runs the way
``mmp.cli.stage_main`` runs it. A wrapper costs about a microsecond per call. Steps nest
(``train.mirror_mlflow`` holds the model logging; ``mlflow.*`` lines sit inside the stages).

MLflow is imported here first, so the stages record in-process, as with ``MMP_RECORDER=0``: the
breakdown shows every step's cost in one process, not the overlap a recorder process gives.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

START = time.perf_counter()

# Imported in this order, each timed: what each stage imports (checked against sys.modules after a run).
IMPORTS = {
    "prepare": (
        "numpy",
        "polars",
        "yaml",
        "mmp.cli",
        "mmp.config",
        "hydra",
        "mmp.pipeline.prepare",
        "mmp.pipeline.train",
        "mmp.pipeline.explain",
        "pandas",
        "pyarrow",
        "mlflow",
        "mlflow.models",
    ),
    "train": (
        "numpy",
        "polars",
        "yaml",
        "mmp.cli",
        "mmp.config",
        "hydra",
        "mmp.pipeline.prepare",
        "mmp.pipeline.train",
        "mmp.pipeline.explain",
        "pandas",
        "pyarrow",
        "sklearn.metrics",
        "xgboost",
        "mlflow",
        "mlflow.pyfunc",
        "mlflow.models",
    ),
}
IMPORTS["all"] = IMPORTS["train"]

# (module, attribute path, label). Labels are dotted by where they sit in the run. The module is the one
# whose global the caller looks up: a name imported with `from x import f` is wrapped in the importer.
# A label may be wrapped in several modules (write_json: both stages); its times add up.
WRAPPED = (
    ("mmp.config.compose", "compose", "config.compose_hydra"),
    ("mmp.config", "load_config", "config.load"),
    ("mmp.model.registry", "check_params", "check_params"),
    ("mmp.pipeline.prepare", "run_prepare", "prepare"),
    ("mmp.data", "load", "prepare.read_csv"),
    ("mmp.data", "clean_and_check", "prepare.clean_and_check"),
    ("mmp.data", "split", "prepare.split"),
    ("mmp.data.preprocessing", "Preprocessor.fit", "prepare.fit_preprocessing"),
    ("mmp.data", "file_digest", "prepare.file_digest"),
    ("mmp.tracking.runs", "setup", "mlflow.setup_store"),
    ("mmp.tracking.tags", "git_tags", "mlflow.git_tags"),
    ("mmp.tracking.tags", "environment_tags", "mlflow.environment_tags"),
    ("mmp.tracking.tags", "effective_overrides", "mlflow.effective_overrides"),
    ("mlflow", "start_run", "mlflow.start_run"),
    ("mlflow", "log_params", "mlflow.log_params"),
    ("mlflow", "end_run", "mlflow.end_run"),
    ("polars", "DataFrame.write_parquet", "write_parquet"),
    ("mmp.data.preprocessing", "Preprocessor.save", "prepare.save_preprocessing"),
    ("mmp.pipeline.prepare", "_mirror_prepare", "prepare.mirror_mlflow"),
    ("mmp.tracking", "log_dataset", "mlflow.log_dataset"),
    ("mlflow", "log_artifact", "mlflow.log_artifact"),
    ("mlflow", "log_artifacts", "mlflow.log_artifacts"),
    ("mlflow", "log_text", "mlflow.log_text"),
    ("mmp.pipeline.train", "run_train", "train"),
    ("mmp.pipeline.train", "load_prepared", "train.read_parquet"),
    ("mmp.pipeline.train", "resolve_params", "train.resolve_params"),
    ("mmp.data.preprocessing", "Preprocessor.transform", "train.encode_features"),
    ("mmp.data.preprocessing", "Preprocessor.encode_target", "train.encode_target"),
    ("mmp.pipeline.train", "fit", "train.fit"),  # mmp.model.trained.fit, as imported by the train stage
    ("mmp.model.predictor", "Predictor.predict_encoded", "train.predict_splits"),
    ("mmp.pipeline.train", "evaluate", "train.evaluate"),
    ("mmp.model.trained", "TrainedModel.save", "train.save_model"),
    ("mmp.pipeline.prepare", "write_json_atomic", "write_json"),
    ("mmp.pipeline.train", "write_json_atomic", "write_json"),
    ("mmp.pipeline.train", "_write_evaluation_plots", "train.evaluation_plots"),
    ("mmp.pipeline.train", "_mirror_train", "train.mirror_mlflow"),
    ("mlflow", "log_metrics", "mlflow.log_metrics"),
    ("mmp.pipeline.train", "_log_curve", "train.mirror_mlflow.log_curves"),
    ("mmp.model.pyfunc", "log_model", "train.mirror_mlflow.log_model"),
    ("mlflow.models", "infer_signature", "train.mirror_mlflow.log_model.infer_signature"),
    ("mlflow.pyfunc", "save_model", "train.mirror_mlflow.log_model.save_model"),
    ("mlflow.models.utils", "_validate_serving_input", "train.mirror_mlflow.log_model.validate_serving_input"),
    ("mlflow", "MlflowClient.log_model_artifacts", "train.mirror_mlflow.log_model.copy_artifacts"),
)

totals: dict[str, float] = {}
calls: dict[str, int] = {}


def _timed(label: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            totals[label] = totals.get(label, 0.0) + time.perf_counter() - started
            calls[label] = calls.get(label, 0) + 1

    return wrapper


def install(module_name: str, attribute: str, label: str) -> bool:
    """Wrap ``module.attribute`` (``Class.method`` too) in a timer; False if it no longer exists."""
    try:
        owner: Any = importlib.import_module(module_name)
        *parents, name = attribute.split(".")
        for part in parents:
            owner = getattr(owner, part)
        raw = inspect.getattr_static(owner, name)
    except (ImportError, AttributeError):
        return False
    if isinstance(raw, classmethod):
        setattr(owner, name, classmethod(_timed(label, raw.__func__)))
    elif isinstance(raw, staticmethod):
        setattr(owner, name, staticmethod(_timed(label, raw.__func__)))
    else:
        setattr(owner, name, _timed(label, raw))
    return True


def run_pipeline(stage: str, overrides: list[str]) -> int:
    """Run one stage as ``stages/<stage>.py <overrides>`` does, or both as ``mmp train`` does (``all``)."""
    from mmp.config import load_config
    from mmp.model.registry import check_model_name, check_params
    from mmp.pipeline import prepare, train
    from mmp.runtime import setup_logging

    setup_logging(False)  # the CLI's log format and quiet loggers
    config = load_config(overrides, from_params=not overrides)
    if stage == "all":
        check_params(check_model_name(config.recipe.model.name), config.recipe.model.params, config.seed)
        prepare.run_prepare(config)
        train.run_train(config)
    else:
        {"prepare": prepare.run_prepare, "train": train.run_train}[stage](config)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[1] not in IMPORTS:
        raise SystemExit(f"usage: profile_mmp.py OUT.json {{{'|'.join(IMPORTS)}}} -- [overrides]")
    out, stage, rest = Path(args[0]), args[1], args[2:]
    overrides = rest[1:] if rest and rest[0] == "--" else rest
    imports: dict[str, float] = {}
    for module in IMPORTS[stage]:
        started = time.perf_counter()
        importlib.import_module(module)
        imports[module] = round(time.perf_counter() - started, 3)
    missing = [label for module, attribute, label in WRAPPED if not install(module, attribute, label)]

    started = time.perf_counter()
    code = run_pipeline(stage, overrides)
    run_seconds = time.perf_counter() - started
    report = {
        "stage": stage,
        "exit_code": code,
        "seconds_in_process": round(time.perf_counter() - START, 3),
        "imports": imports,
        "imports_total": round(sum(imports.values()), 3),
        "run": round(run_seconds, 3),
        "steps": {label: round(totals[label], 3) for label in sorted(totals)},
        "calls": calls,
        "not_wrapped": missing,
    }
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
