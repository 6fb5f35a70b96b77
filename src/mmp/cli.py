"""The ``mmp`` command line. Imports stay lazy so that ``mmp --help`` answers at once."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mmp.runtime import exit_now as exit_now  # re-exported: stages/*.py call it after stage_main
from mmp.runtime import quiet_openmp, setup_logging

log = logging.getLogger("mmp")


def _guarded(action: Callable[[], Any], verbose: bool) -> int:
    """Run an action; turn failures into one line on stderr and an exit code."""
    from mmp.errors import MmpError
    from mmp.redaction import redact

    try:
        action()
    except MmpError as exc:
        if verbose:
            log.exception("failed")
        print(redact(f"mmp: error: {exc}"), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("mmp: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if verbose:
            log.exception("failed")
        message = " ".join(str(exc).split())[:500]
        print(
            redact(f"mmp: error: {type(exc).__name__}: {message} (run again with --verbose for the traceback)"),
            file=sys.stderr,
        )
        return 1
    return 0


# --------------------------------------------------------------------------- commands


def _config_from(args: argparse.Namespace, *, from_params: bool = False) -> Any:
    from mmp.config import load_config

    return load_config(
        args.overrides,
        config_file=args.config,
        recipe_file=args.recipe,
        data_path=args.data,
        from_params=from_params and not (args.overrides or args.config or args.recipe or args.data),
    )


def cmd_prepare(args: argparse.Namespace) -> None:
    from mmp.pipeline.prepare import run_prepare

    result = run_prepare(_config_from(args))
    print(f"prepare run: {result.run_id}")


def cmd_ingest(args: argparse.Namespace) -> None:
    from mmp.pipeline.ingest import run_ingest

    result = run_ingest(_config_from(args))
    state = "changed" if result.changed else "unchanged"
    print(f"snapshot: {_shown(result.snapshot)} ({result.rows} rows, digest {result.digest}, {state})")


def cmd_train(args: argparse.Namespace) -> None:
    """The predecessor's ``mmp train``: prepare, train and explain in one go, outside DVC.

    Its outputs go to a folder of its own (``runs/<UTC time>-<recipe>-<data>/``), as a sweep job's do, never
    to dvc.yaml's outputs: ``mmp train`` leaves ``git status`` and ``dvc status`` as they were.
    """
    from mmp.pipeline import RECORDER_MODULE
    from mmp.tracking import recorder

    # One recorder process keeps the three stages' runs in turn: MLflow loads once, on the other core, while
    # this process composes the config, imports the model library and prepares the data. A recorder per
    # stage loaded it three times (1.6-1.8x the wall time on titanic), a thread here competed for the GIL.
    # A process that has MLflow already (a notebook, the tests) records in-process.
    if "mlflow" not in sys.modules:
        recorder.launch_early(RECORDER_MODULE, shared=True)
    try:
        _train_in_own_folder(args)
    finally:
        recorder.discard_unused()  # it holds no run between stages


def _train_in_own_folder(args: argparse.Namespace) -> None:
    from mmp import preload, tracking
    from mmp.explanation.shap import ExplainError
    from mmp.model.registry import check_model_name, check_params
    from mmp.pipeline.explain import run_explain
    from mmp.pipeline.prepare import run_prepare
    from mmp.pipeline.train import run_train
    from mmp.tracking import recorder

    config = _config_from(args)
    check_params(check_model_name(config.recipe.model.name), config.recipe.model.params, config.seed)
    # Composed from conf/ and the overrides alone (no -c/-r/-d files): the overrides tag needs no comparison.
    config, folder = _own_run_folder(config, known_overrides=not (args.config or args.recipe or args.data))
    preload.start(preload.CHARTS)  # for train and explain: loads while prepare reads and waits for its run
    try:
        with tracking.execution("mmp-train"):  # one pipeline run, the three stage runs its children
            run_prepare(config)
            result = run_train(config)
            try:
                run_explain(config)
            except ExplainError as exc:
                log.warning("explain skipped: %s", exc)
            recorder.settle()  # every run logged before this command says it is done
    except BaseException:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if nothing was written: a stage's outputs are whole or absent
        if folder.is_dir():
            log.warning("outputs written before the failure are in %s", _shown(folder))
        raise
    print(f"Outputs: {_shown(folder)}/ (prepared data, model, metrics.json, plots, explain)")
    _print_next_steps(config, result)


RUNS_DIR = "runs"  # `mmp train`'s run folders, git- and DVC-ignored


def _own_run_folder(config: Any, known_overrides: bool = False) -> tuple[Any, Path]:
    """A new folder ``runs/<UTC time>-<recipe>-<data>[-n]`` and the config with every output path in it.

    ``known_overrides``: the config is conf/ with ``config.overrides``; the new paths are added to them, so
    that the runs' overrides tag is read from the config, not found by composing conf/ again (0.8 s).
    """
    import dataclasses
    import time

    from mmp.errors import MmpError
    from mmp.experiments.sweep import job_paths
    from mmp.files import safe_name

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = f"{stamp}-{safe_name(config.recipe.name)}-{safe_name(config.data.name)}"
    for n in range(1000):
        relative = Path(RUNS_DIR) / (name if n == 0 else f"{name}-{n}")
        folder = config.resolve(relative)
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            continue
        moved = job_paths(config, relative)  # models, metrics.json, plots, explain
        paths = dataclasses.replace(moved.paths, prepared_dir=(relative / "prepared").as_posix())
        overrides = config.overrides
        if known_overrides:
            before, after = dataclasses.asdict(config.paths), dataclasses.asdict(paths)
            overrides += tuple(f"paths.{key}={value}" for key, value in after.items() if before[key] != value)
        return dataclasses.replace(moved, paths=paths, overrides=overrides), folder
    raise MmpError(f"Cannot create a run folder under {config.resolve(RUNS_DIR)}; clean it up")


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def _print_next_steps(config: Any, result: Any) -> None:
    from urllib.parse import urlsplit

    from mmp.tracking.store import ui_path

    run_id = result.run_id
    server = "http://127.0.0.1:5000"
    if (parts := urlsplit(config.mlflow.tracking_uri)).scheme in ("http", "https"):  # no credentials in a link
        server = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path.rstrip('/')}"
    link = server + ui_path(result.experiment_id)  # training runs with the metric columns
    print(f"MLflow run id: {run_id}")
    print("Next:")
    print("  mlflow ui --port 5000                 # then open the runs with their metrics:")
    print(f"    {link}")
    print("  dvc exp run -S recipe=lgbm-tuned      # try another recipe as a DVC experiment")
    print(f"  mmp serve-api --run-id {run_id}")


def cmd_get_config(args: argparse.Namespace) -> None:
    from mmp.config import compose, dump_yaml, project_root
    from mmp.errors import ConfigError

    root = project_root()
    target = Path(args.output_dir) / f"{args.env_name}.yaml"
    if not target.is_absolute():
        target = Path.cwd() / target
    template = "remote" if args.remote else "local"
    mlflow_section = compose(root, [f"mlflow={template}"])["mlflow"]
    if args.tracking_uri:
        mlflow_section["tracking_uri"] = args.tracking_uri
    if args.experiment_name:
        mlflow_section["experiment_name"] = args.experiment_name
    shown = target.relative_to(Path.cwd()) if target.is_relative_to(Path.cwd()) else target
    header = (
        f"# mmp environment '{args.env_name}'. Pass it with -c {shown}.\n"
        "# Any key of the composed config (see params.yaml) may be set here; it is merged on top.\n"
        "# Credentials never go here: put MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD in .env.\n"
    )
    text = header + dump_yaml({"mlflow": mlflow_section})
    if target.exists() and not args.force:
        if target.read_text(encoding="utf-8") == text:
            print(f"{target} is up to date")
            return
        raise ConfigError(f"{target} exists with other settings; pass --force to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}")


# --------------------------------------------------------------------------- parser


def cmd_compose(args: argparse.Namespace) -> None:
    """Print (or write) the composed config: what `dvc exp run` would put in params.yaml."""
    from mmp.config import compose, dump_yaml, project_root

    text = dump_yaml(compose(project_root(), args.overrides))
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        print(text, end="")


def cmd_serve_api(args: argparse.Namespace) -> None:
    from mmp.inference.http.server import ServerOptions, serve
    from mmp.inference.http.settings import ServeSettings

    serve(
        _config_from(args),
        run_id=args.run_id,
        model_uri=args.model_uri,
        options=ServerOptions(
            host=args.host, port=args.port, workers=args.workers, worker_class=args.worker_class, timeout=args.timeout
        ),
        settings=ServeSettings(
            max_rows=args.max_rows,
            max_body_mb=args.max_body_mb,
            unknown_columns=args.unknown_columns,
            categorical_numbers=args.categorical_numbers,
            metrics_auth=not args.open_metrics,
        ),
    )


def cmd_runs(args: argparse.Namespace) -> None:
    from mmp.tracking.listing import (
        RunQuery,
        best_job_recipes,
        data_filter,
        default_metrics,
        describe,
        find_runs,
        format_table,
    )

    config = _config_from(args)
    # A sweep's or DVC experiment's runs are one comparable set already; otherwise ranking keeps to one data set.
    ranking = bool(args.sort or args.best) and not (args.sweep or args.dvc_exp)
    query = RunQuery(
        stage="train" if args.best else (None if args.stage == "all" else args.stage),
        recipe=args.recipe_name,
        data=data_filter(config, args.data_name, ranking),
        sweep=args.sweep,
        dvc_exp=args.dvc_exp,
        sort=args.sort,
        limit=1 if args.best else args.limit,
        pruned=args.all,
    )
    if ranking and not args.data_name:
        log.info("ranking runs of data set '%s' (--data NAME for another, --data all for every one)", query.data)
    listing = find_runs(config, query, best=args.best)
    if listing.missing:
        log.warning("%d listed run(s) have no %s; they come last", listing.missing, listing.sort)
    if args.quiet:
        print("\n".join(run.info.run_id for run in listing.runs))
        return
    if not listing.runs:
        where, experiment = describe(query), config.mlflow.experiment_name
        if where and where != f"stage {query.stage}":  # a filter matched nothing: say which, not "train first"
            every = "mmp runs --stage all --data all --all"
            print(f"No runs in experiment '{experiment}' match {where}; `{every}` lists them all")
        else:
            print(f"No runs yet in experiment '{experiment}'; run `dvc repro` or `mmp train` first")
        return
    metrics = args.metrics.split(",") if args.metrics else default_metrics(listing.runs, listing.sort)
    print(format_table(listing.runs, metrics, best_job_recipes(listing.runs)))


def cmd_sweep(args: argparse.Namespace) -> None:
    """Hydra multirun over the pipeline: ``mmp sweep recipe=a,b`` is ``python stages/train.py -m recipe=a,b``."""
    from mmp.experiments.multirun import run_multirun

    run_multirun(args.overrides, command=" ".join(["mmp sweep", *args.overrides]))


def cmd_tune(args: argparse.Namespace) -> None:
    """Seeded Optuna search over recipes/search/<recipe>.yaml; the best trial becomes a recipe file."""
    from mmp.errors import ConfigError
    from mmp.experiments.multirun import report
    from mmp.experiments.tune import join_tune, run_tune

    if args.join:
        if args.overrides or args.space or args.output or args.workers != 1:
            raise ConfigError(
                "--join takes the study's overrides and space: give only --storage, --n-trials, "
                "--seed, --timeout and --threads"
            )
        done = join_tune(
            args.join, args.storage, n_trials=args.n_trials, seed=args.seed, timeout=args.timeout, threads=args.threads
        )
        print(f"{done} trials of study {args.join} run by this worker")
        return
    result = run_tune(
        args.overrides,
        command=" ".join(["mmp tune", *sys.argv[2:]]),
        space_file=Path(args.space) if args.space else None,
        n_trials=args.n_trials,
        seed=args.seed,
        output=Path(args.output) if args.output else None,
        timeout=args.timeout,
        workers=args.workers,
        storage=args.storage,
        threads=args.threads,
    )
    report(result.summary, result.summary_folder)
    if result.recipe_file:
        print(f"best configuration: {result.recipe_file}")
        print(f"  {result.use_commands[0]}")
        print(f"  {result.use_commands[1]}")


def cmd_batch_inference(args: argparse.Namespace) -> None:
    """Predict a CSV or Parquet file with a logged model; the batch is recorded as an MLflow run."""
    from mmp.inference.batch import run_batch_inference

    result = run_batch_inference(
        _config_from(args),
        run_id=args.run_id,
        model_uri=args.model_uri,
        input_path=Path(args.input),
        output_path=Path(args.output),
        chunk_rows=args.chunk_rows,
        drift_threshold=args.drift_threshold,
    )
    print(f"wrote {result.rows} predictions to {result.output}")
    if result.drift_report is not None:
        drifted = f"drifted: {', '.join(result.drifted)}" if result.drifted else "no column drifted"
        print(f"drift report: {result.drift_report} ({drifted})")
    print(f"batch inference run: {result.run_id}")


def cmd_mirror(args: argparse.Namespace) -> None:
    """Log finished stages whose MLflow mirror was interrupted, from their DVC outputs, into their runs."""
    from mmp.config import project_root
    from mmp.pipeline.replay import remirror_pending
    from mmp.tracking import pending

    root = project_root()
    if not pending.load_all(root):
        print("Nothing to mirror: every finished stage is in MLflow")
        return
    handled = remirror_pending(root)
    print(f"{len(handled)} stage run(s) handled; `mmp runs --stage all` lists them")


def cmd_system_check(args: argparse.Namespace) -> None:
    from mmp.errors import MmpError
    from mmp.tracking.system_check import FAIL, run_checks

    results = run_checks(_config_from(args))
    for result in results:
        print(result.line())
    failed = [result.name for result in results if result.status == FAIL]
    if failed:
        raise MmpError(f"{len(failed)} check(s) failed ({', '.join(failed)}); apply the fixes above and run it again")


def cmd_promote(args: argparse.Namespace) -> None:
    """Register a train run's model in MLflow's model registry and point an alias at the new version."""
    from mmp.tracking.registry import promote

    done = promote(_config_from(args), args.run_id, args.name, args.alias)
    print(f"registered {done.name} version {done.version} (run {done.run_id}); alias '{done.alias}' points at it")
    print(f"  mmp serve-api --model-uri {done.model_uri}")


def cmd_migrate_store(args: argparse.Namespace) -> None:
    """Move MMP 1.x's file store (mlruns/) into mlflow.db, losslessly (``mlflow migrate-filestore``)."""
    from mmp.tracking.migrate import migrate_store

    done = migrate_store(_config_from(args))
    print(f"moved {done.runs} run(s) of {done.experiments} experiment(s) from {done.source} into {done.database}")
    print("artifacts stay in mlruns/; `mmp runs --stage all` and `mlflow ui --port 5000` show them")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", metavar="FILE", help="environment config merged on top (e.g. configs/dev.yaml)"
    )
    parser.add_argument("-r", "--recipe", metavar="FILE", help="recipe file (replaces the recipe group choice)")
    parser.add_argument("-d", "--data", metavar="PATH", help="data file, CSV or Parquet (sets data.path)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Hydra overrides, e.g. recipe=lgbm-tuned")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmp", description="Declarative ML pipelines for tabular data (Hydra recipes, DVC stages, MLflow)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    get_config = commands.add_parser("get-config", help="write an environment config (configs/<env>.yaml)")
    get_config.add_argument("--env-name", default="dev", help="environment name (default: dev)")
    get_config.add_argument("--output-dir", default="configs", help="folder to write to (default: configs)")
    get_config.add_argument("--remote", action="store_true", help="start from the remote-server template")
    get_config.add_argument("--tracking-uri", help="MLflow tracking URI to put in it")
    get_config.add_argument("--experiment-name", help="MLflow experiment name to put in it")
    get_config.add_argument("--force", action="store_true", help="overwrite an existing file")
    get_config.set_defaults(func=cmd_get_config)

    compose = commands.add_parser("compose", help="print the config composed from conf/ with overrides")
    compose.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Hydra overrides")
    compose.add_argument("-o", "--output", metavar="FILE", help="write to FILE (e.g. params.yaml) instead")
    compose.set_defaults(func=cmd_compose)

    prepare = commands.add_parser("prepare", help="run the prepare stage (load, validate, split, fit preprocessing)")
    _add_config_options(prepare)
    prepare.set_defaults(func=cmd_prepare)

    ingest = commands.add_parser("ingest", help="snapshot a SQL or remote data source to data.snapshot (Parquet)")
    _add_config_options(ingest)
    ingest.set_defaults(func=cmd_ingest)

    train = commands.add_parser("train", help="prepare, train and explain: the whole pipeline outside DVC")
    _add_config_options(train)
    train.set_defaults(func=cmd_train)

    serve_api = commands.add_parser("serve-api", help="serve a trained model over HTTP (gunicorn + Flask)")
    serve_api.add_argument("-c", "--config", metavar="FILE", help="environment config (e.g. configs/dev.yaml)")
    serve_api.add_argument("--run-id", help="the train run whose model to serve")
    serve_api.add_argument("--model-uri", help="or a model URI: models:/NAME@ALIAS, models:/m-<id>, runs:/<id>/model")
    serve_api.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve_api.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve_api.add_argument("--workers", type=int, default=0, help="worker processes (default: one per core)")
    serve_api.add_argument(
        "--worker-class", default="gthread", help="gunicorn worker class (default: gthread, mmp's threaded worker)"
    )
    serve_api.add_argument("--timeout", type=int, default=60, help="worker timeout in seconds")
    serve_api.add_argument("--max-rows", type=int, default=100_000, help="rows allowed in one request")
    serve_api.add_argument("--max-body-mb", type=float, default=50.0, help="largest request body (413 above)")
    serve_api.add_argument(
        "--unknown-columns", choices=("reject", "ignore"), default="reject", help="what to do with unknown columns"
    )
    serve_api.add_argument(
        "--categorical-numbers",
        choices=("warn", "reject"),
        default="warn",
        help="a number sent for a categorical column: score it with a warning in the response, or answer 400",
    )
    serve_api.add_argument(
        "--open-metrics", action="store_true", help="/metrics answers without the bearer token (MMP_API_TOKEN)"
    )
    serve_api.set_defaults(func=cmd_serve_api, recipe=None, data=None, overrides=[])

    runs = commands.add_parser("runs", help="a table of the experiment's runs, newest first")
    runs.add_argument(
        "--stage",
        default="train",
        help="prepare | train | explain | sweep (sweeps and searches) | all (default: train)",
    )
    runs.add_argument("--recipe-name", help="only runs of this recipe")
    runs.add_argument(
        "--data",
        dest="data_name",
        metavar="NAME",
        help="only runs of this data set ('all': every one; default: every one, or the config's when ranking)",
    )
    runs.add_argument(
        "--best",
        action="store_true",
        help="the best train run by the recipe's primary metric on valid, within the data set and recipe filters",
    )
    runs.add_argument("--all", action="store_true", help="also pruned search trials (hidden by default)")
    runs.add_argument("--sweep", metavar="SWEEP_ID", help="only the jobs of this sweep or search (multirun/<id>)")
    runs.add_argument("--dvc-exp", metavar="NAME", help="only runs of this DVC experiment")
    runs.add_argument("--sort", metavar="METRIC", help="sort by a metric, best first (e.g. test_roc_auc)")
    runs.add_argument("--metrics", help="comma-separated metric columns")
    runs.add_argument("--limit", type=int, default=20)
    runs.add_argument("-q", "--quiet", action="store_true", help="print run ids only")
    runs.add_argument("-c", "--config", metavar="FILE", help="environment config (e.g. configs/prod.yaml)")
    runs.set_defaults(func=cmd_runs, recipe=None, data=None, overrides=[])

    sweep = commands.add_parser(
        "sweep",
        help="a Hydra multirun: one job per combination, each a child MLflow run of one parent run",
        description="Run prepare (reused when unchanged), train and explain for every combination of the "
        "swept overrides. Same as `python stages/train.py -m OVERRIDES`.",
        epilog="examples:\n  mmp sweep recipe=xgb-baseline,lgbm-tuned,rf-experiment\n"
        "  mmp sweep recipe=lgbm-tuned 'recipe.model.params.num_leaves=15,31,63' hydra/launcher=joblib",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sweep.add_argument("overrides", nargs="+", metavar="KEY=VALUES", help="Hydra overrides; a,b,c or range() sweeps")
    sweep.set_defaults(func=cmd_sweep)

    tune = commands.add_parser(
        "tune",
        help="Bayesian hyperparameter search (Optuna): one child run per trial, the best written as a recipe",
        description="Search the space in recipes/search/<recipe>.yaml with a seeded TPE sampler; boosted "
        "models are pruned on their per-round validation loss.",
        epilog="examples:\n  mmp tune recipe=lgbm-tuned --n-trials 20 --seed 0\n"
        "  mmp tune recipe=lgbm-tuned --n-trials 20 --workers 2\n"
        "  mmp tune --join STUDY --storage postgresql+psycopg://mmp@db:5432/optuna   # from another machine",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tune.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Hydra overrides, e.g. recipe=lgbm-tuned")
    tune.add_argument("--n-trials", type=int, help="trials to run (default: the search file's n_trials)")
    tune.add_argument("--seed", type=int, help="sampler seed (default: the search file's seed)")
    tune.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="wall-clock budget: no trial starts after it (with --n-trials: whichever comes first)",
    )
    tune.add_argument("--workers", type=int, default=1, help="processes running trials of one study (default 1)")
    tune.add_argument(
        "--storage",
        metavar="URL",
        help="the study's storage shared by workers: a database URL or a journal file "
        "(default: $MMP_TUNE_STORAGE, else multirun/<id>/study.journal)",
    )
    tune.add_argument("--join", metavar="STUDY", help="run trials of a search started elsewhere (needs --storage)")
    tune.add_argument("--threads", type=int, help="threads per trial (default with workers: cores // workers)")
    tune.add_argument("--space", metavar="FILE", help="search space file (default: recipes/search/<recipe>.yaml)")
    tune.add_argument("--output", metavar="FILE", help="best recipe file (default: recipes/<recipe>-best.yaml)")
    tune.set_defaults(func=cmd_tune)

    batch = commands.add_parser("batch-inference", help="predict a CSV or Parquet file with a logged model")
    batch.add_argument("-c", "--config", metavar="FILE", help="environment config (e.g. configs/dev.yaml)")
    model = batch.add_mutually_exclusive_group()
    model.add_argument("--run-id", help="the train run whose model to use")
    model.add_argument("--model-uri", help="models:/<model_id>, models:/<name>@<alias> or runs:/<run_id>/model")
    batch.add_argument("-d", "--data", dest="input", metavar="PATH", required=True, help="input rows, CSV or Parquet")
    batch.add_argument("-o", "--output", metavar="FILE", required=True, help="predictions file: .parquet or .csv")
    batch.add_argument("--chunk-rows", type=int, default=100_000, help="rows predicted at a time (default: 100000)")
    batch.add_argument(
        "--drift-threshold",
        type=float,
        metavar="PSI",
        help="warn about columns whose PSI against the training data is above this (default: 0.2, from config)",
    )
    batch.set_defaults(func=cmd_batch_inference, recipe=None, data=None, overrides=[])

    mirror = commands.add_parser("mirror", help="log finished stages whose MLflow mirror was interrupted")
    mirror.set_defaults(func=cmd_mirror)

    check = commands.add_parser(
        "system-check", help="check the MLflow store: connection, login, write access, artifacts, packages"
    )
    check.add_argument("-c", "--config", metavar="FILE", help="environment config (e.g. configs/prod.yaml)")
    check.set_defaults(func=cmd_system_check, recipe=None, data=None, overrides=[])

    promote = commands.add_parser(
        "promote", help="register a train run's model in MLflow's model registry and set an alias (e.g. champion)"
    )
    promote.add_argument("run_id", help="the train run whose model to register (`mmp runs --best -q`)")
    promote.add_argument("--name", required=True, help="registered model name")
    promote.add_argument("--alias", default="champion", help="alias to point at the new version (default: champion)")
    promote.add_argument("-c", "--config", metavar="FILE", help="environment config (e.g. configs/prod.yaml)")
    promote.set_defaults(func=cmd_promote, recipe=None, data=None, overrides=[])

    migrate = commands.add_parser(
        "migrate-store", help="move an MMP 1.x file store (mlruns/) into the SQLite store mlflow.db"
    )
    migrate.add_argument("-c", "--config", metavar="FILE", help="environment config (e.g. configs/old.yaml)")
    migrate.set_defaults(func=cmd_migrate_store, recipe=None, data=None, overrides=[])

    from mmp.project.commands import add_commands  # init, get-recipe, list, validate, plots (argparse only)

    add_commands(commands, _add_config_options, _config_from)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_openmp()
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    setup_logging(args.verbose)
    # A command sets variables for its own run (MMP_RECORDER, MLflow's tracking URI, .env's secrets); called
    # in-process (a notebook, the tests), it leaves the caller's environment as it found it.
    saved = dict(os.environ)
    try:
        return _guarded(lambda: args.func(args), args.verbose)
    finally:
        if os.environ != saved:
            for name in set(os.environ) - set(saved):
                del os.environ[name]
            os.environ.update(saved)


def console() -> None:
    """The ``mmp`` command: :func:`main`, then the exit without interpreter teardown that the stage scripts make."""
    exit_now(main())


def stage_main(stage: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of ``stages/<stage>.py``.

    With no arguments it reads params.yaml (what ``dvc repro`` and ``dvc exp run`` run); with Hydra
    overrides (``recipe=lgbm-tuned``) it composes conf/ with them instead.
    """
    parser = argparse.ArgumentParser(prog=f"stages/{stage}.py", description=f"The {stage} stage.")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument(
        "-m", "--multirun", action="store_true", help="sweep (train only): prepare, train and explain per job"
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    quiet_openmp()
    verbose = args.verbose or os.environ.get("MMP_VERBOSE") == "1"
    setup_logging(verbose)

    def action() -> None:
        from mmp.pipeline import RECORDER_MODULE
        from mmp.tracking import recorder

        if not args.multirun and stage != "ingest":  # ingest logs no MLflow run
            recorder.launch_early(RECORDER_MODULE)  # loads MLflow while the stage imports and composes the config
        from mmp.config import load_config
        from mmp.errors import ConfigError
        from mmp.pipeline.explain import run_explain
        from mmp.pipeline.ingest import run_ingest
        from mmp.pipeline.prepare import run_prepare
        from mmp.pipeline.train import run_train

        if args.multirun:
            if stage != "train":
                raise ConfigError(f"-m sweeps run the whole pipeline per job: use stages/train.py -m, not {stage}")
            from mmp.experiments.multirun import run_multirun

            run_multirun(args.overrides, command=" ".join([f"stages/{stage}.py -m", *args.overrides]))
            return
        config = load_config(args.overrides, from_params=not args.overrides)
        stages = {"ingest": run_ingest, "prepare": run_prepare, "train": run_train, "explain": run_explain}
        stages[stage](config)

    code = _guarded(action, verbose)
    if "mmp.tracking.recorder" in sys.modules:
        sys.modules["mmp.tracking.recorder"].discard_unused()  # a stage that failed before it needed its run
    return code


if __name__ == "__main__":
    console()
