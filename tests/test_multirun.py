"""The in-process side of a sweep that its end-to-end tests (test_sweeps.py, test_launchers.py) cannot see."""

from __future__ import annotations

import time

import psutil

from mmp.experiments.multirun import _stop_joblib_workers


def processes() -> set[int]:
    return {child.pid for child in psutil.Process().children(recursive=True)}


def test_the_end_of_a_sweep_stops_joblibs_workers_and_starts_none() -> None:
    import joblib  # noqa: F401 (XGBoost and scikit-learn import it: loaded in every sweep)
    from joblib.externals.loky import get_reusable_executor

    before = processes()
    _stop_joblib_workers()  # a basic-launcher sweep: asking loky for its executor used to start one
    assert processes() <= before, "stopping joblib's workers started a process"
    before = processes()

    executor = get_reusable_executor(max_workers=1)  # what hydra/launcher=joblib leaves behind
    assert executor.submit(sum, [1, 2]).result() == 3
    workers = {
        child.pid for child in psutil.Process().children() if "resource_tracker" not in " ".join(child.cmdline())
    } - before
    assert workers, "loky started no worker"
    _stop_joblib_workers()
    deadline = time.monotonic() + 10
    while workers & processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not workers & processes(), "joblib's worker outlived the sweep"
