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
    """Exit without interpreter teardown (0.7-1.9 s of freeing a large heap), once output is flushed.

    For the stage scripts only: their work is done and written when they get here.
    """
    if "joblib.externals.loky" in sys.modules:
        sys.exit(code)  # a parallel sweep: joblib's exit handlers remove its shared-memory folders
    logging.shutdown()
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
