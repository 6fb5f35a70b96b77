"""Hydra multirun: ``python stages/train.py -m recipe=a,b`` (or ``mmp sweep recipe=a,b``).

Hydra expands the sweep and launches the jobs (in this process, or in parallel with
``hydra/launcher=joblib``); every job is :func:`mmp.sweep.run_job`. Around the launch, mmp creates
the sweep's parent run, and summarises the jobs into it when they are done.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmp.config import CONFIG_DIR, CONFIG_NAME, hydra_overrides, load_config, project_root
from mmp.errors import ConfigError, MmpError
from mmp.experiments import sweep as sweeps

log = logging.getLogger(__name__)
_worker_ready = False


def run_multirun(overrides: Sequence[str], command: str) -> sweeps.Summary:
    """Run every job of the sweep the overrides describe; return the summary (raises if a job failed)."""
    root = project_root()
    parsed = _parse(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override() and not o.is_hydra_override()]
    config = load_config(fixed, root=root)
    if not any(o.is_hydra_override() and o.get_key_element() == "hydra/sweeper" for o in parsed):
        # Compose every job first: a typo in the fifth job fails now, before any run starts.
        for job in _basic_jobs(parsed):
            load_config(job, root=root)
    folder = sweeps.new_folder(root, "sweep")
    sweep = sweeps.start(config, "sweep", folder, command)
    with sweeps.parent_guard(sweep):
        _launch(root, overrides, folder, command.split(" ")[0])
        summary = sweeps.finish(sweep, config, sweeps.collect(folder))
    report(summary, folder)
    if summary.failed or summary.best is None:
        raise MmpError(
            f"{len(summary.failed)} of {len(summary.jobs)} sweep jobs failed (see {folder / sweeps.SUMMARY_FILE}); "
            "fix them and run the sweep again"
        )
    return summary


def report(summary: sweeps.Summary, folder: Path) -> None:
    print(f"{len(summary.jobs)} jobs, {len(summary.failed)} failed; summary in {folder / sweeps.SUMMARY_FILE}")
    if best := summary.best:
        print(f"best by {summary.metric}: job {best.job} ({' '.join(best.overrides)}) = {best.score(summary.metric)}")
        print(f"MLflow run id: {best.run_id}")
        print(f"  mmp runs --sweep {folder.name} --sort {summary.metric}")


def _parse(overrides: Sequence[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return list(OverridesParser.create().parse_overrides(list(overrides)))
    except HydraException as exc:
        message = " ".join(str(exc).split())
        raise ConfigError(f"Bad sweep override: {message}; see `mmp sweep --help` for the syntax") from None


def _basic_jobs(parsed: list[Any]) -> list[list[str]]:
    """The job override lists Hydra's basic sweeper will launch (cartesian product of the sweeps)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.errors import HydraException

    plain = [o for o in parsed if not o.is_hydra_override()]
    try:
        return BasicSweeper.split_arguments(plain, max_batch_size=None)[0]
    except HydraException as exc:
        raise ConfigError(f"{exc}; use comma lists, range() or choice() in a sweep") from None


def _launch(root: Path, overrides: Sequence[str], folder: Path, prog: str) -> None:
    import hydra

    argv = [
        prog,
        "--multirun",
        *hydra_overrides(overrides),  # new hyperparameters are added, as every other route does
        f"hydra.sweep.dir='{folder}'",
        "hydra.sweep.subdir=${hydra.job.num}",
        "hydra.job.chdir=false",
    ]
    os.environ["MMP_PROJECT_ROOT"] = str(root)
    saved, sys.argv = sys.argv, argv
    try:
        hydra.main(config_path=str(root / CONFIG_DIR), config_name=CONFIG_NAME, version_base="1.3")(hydra_job)()
    except SystemExit as exc:
        if exc.code:
            raise MmpError(
                "Hydra stopped the sweep (its message is above): fix what it names, an override or a job's "
                f"process that died, then run the sweep again; finished jobs are in {folder}"
            ) from None
    finally:
        sys.argv = saved
        _stop_joblib_workers()


def _stop_joblib_workers() -> None:
    """Stop joblib's worker processes now: idle, they live on for 5 minutes holding our stdout open.

    Only if a joblib launcher started them: asking loky for its executor when there is none starts one,
    and its resource-tracker process, at the end of every in-process sweep.
    """
    loky = sys.modules.get("joblib.externals.loky.reusable_executor")
    if getattr(loky, "_executor", None) is not None:
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)


def hydra_job(cfg: Any) -> float | None:
    """One Hydra job (in this process or a joblib worker): returns its ranking metric for sweepers."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from mmp.runtime import quiet_warnings

    global _worker_ready
    if not _worker_ready:  # once per process: a joblib worker starts with nothing imported
        quiet_warnings()
        _worker_ready = True
    hydra_config = HydraConfig.get()
    sweep = sweeps.Sweep.from_env()
    overrides = list(hydra_config.overrides.task)
    result = sweeps.run_job(
        lambda: OmegaConf.to_container(cfg, resolve=True),  # type: ignore[arg-type, return-value]
        root=Path(os.environ["MMP_PROJECT_ROOT"]),
        sweep=sweep,
        job=int(hydra_config.job.num),
        overrides=overrides,
    )
    return result.score(sweep.metric) if sweep.metric else None
