"""Load what a stage needs only at its end (MLflow, matplotlib) on a thread, while the stage computes.

Imports are Python work that holds the GIL: a thread importing MLflow while the main thread imports
XGBoost made both slower (the train stage's ``import xgboost`` took 2.5 s instead of 1.2 s). So the
stages start this where their main thread leaves the GIL free: Polars reading the data, the model fit.
A stage whose run a recorder process keeps (:mod:`mmp.tracking.recorder`) loads only the charts' modules here.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

MLFLOW = ("mlflow", "mlflow.store.tracking.sqlalchemy_store")  # the store: SQLAlchemy and alembic
CHARTS = ("matplotlib.figure", "matplotlib.backends.backend_agg")
# The train stage's end: the pyfunc model and the evaluation charts.
TRAIN = (*MLFLOW, "mlflow.pyfunc", *CHARTS)


def start(modules: Sequence[str], *, then: Sequence[Callable[[], None]] = ()) -> None:
    """Import ``modules`` on a daemon thread, then run the ``then`` warm-ups; a no-op once all are loaded.

    A failure is left for the stage to meet and report when it imports the module itself.
    """
    missing = [module for module in modules if module not in sys.modules]
    if not missing:
        return

    def load() -> None:
        for module in missing:
            try:
                importlib.import_module(module)
            except Exception:
                log.debug("background import of %s failed", module, exc_info=True)
                return
        for warm_up in then:
            try:
                warm_up()
            except Exception:
                log.debug("background warm-up %s failed", warm_up.__name__, exc_info=True)

    threading.Thread(target=load, name="preload", daemon=True).start()


def mlflow_requirements_map() -> None:
    """MLflow's map of installed packages, which ``log_model`` builds to check requirements (0.6 s)."""
    from mlflow.utils import requirements_utils

    requirements_utils._init_packages_to_modules_map()
