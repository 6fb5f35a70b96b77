"""The process around mmp's work: logging, library chatter, OpenMP's wait policy and a fast exit.

Used by the CLI, the stage scripts, sweep jobs and the recorder process alike.
"""

from __future__ import annotations

import logging
import os
import sys

_QUIET_LOGGERS = ("alembic", "mlflow", "urllib3", "git", "numexpr", "matplotlib", "shap")


def quiet_openmp() -> None:
    """Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine, spinning threads made
    XGBoost fits 3-13x slower whenever another process was busy, and were no faster when it was idle."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def exit_now(code: int) -> None:
    """Exit without interpreter teardown (0.5-1.9 s of freeing a large heap), once the exit handlers ran.

    For the stage scripts and the ``mmp`` command only: their work is done and written when they get here.
    The ``atexit`` handlers still run (logging's flush, joblib's removal of its shared-memory folders,
    MLflow's), as at a normal exit; only the teardown of the modules is skipped.
    """
    import atexit

    sys.stdout.flush()
    atexit._run_exitfuncs()  # what a normal exit runs first; the rest of it is freeing memory
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if verbose else "[mmp] %(message)s",
        datefmt="%H:%M:%S",
    )
    if not verbose:
        quiet_warnings()


def quiet_warnings() -> None:
    """Library chatter off: warnings and INFO logs of MLflow and friends (also in sweep job processes)."""
    import warnings

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow resets its logger's level on import
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # urllib3 warns at every retry of an unreachable server; mmp reports the outcome in one line.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="mlflow.*")
