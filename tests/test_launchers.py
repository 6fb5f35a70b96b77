"""Hydra launchers: a sweep's parent and child runs come out the same whichever launcher runs the jobs.

`hydra/launcher=slurm_local` is conf/hydra/launcher/slurm.yaml's launcher on submitit's local executor: the
same job pickles a Slurm node would run, each in a separate process on this machine.
"""

from __future__ import annotations

from typing import Any

import pytest

from conftest import Project

pytestmark = pytest.mark.slow

SWEEP = ("recipe=lgbm-tuned", "recipe.model.params.num_leaves=7,15", "recipe.model.params.n_estimators=40")


def sweep_runs(project: Project, parent: Any) -> list[dict[str, Any]]:
    """The parent's train jobs and their explain runs, as comparable records (no ids, times or processes)."""
    runs = project.runs()
    jobs = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    records = []
    for job in sorted(jobs, key=lambda run: int(run.data.tags["mmp.sweep_job"])):
        explains = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == job.info.run_id]
        records.append(
            {
                "stage": job.data.tags["mmp.stage"],
                "status": job.info.status,
                "job": job.data.tags["mmp.sweep_job"],
                "overrides": job.data.tags["mmp.sweep_overrides"],
                "metrics": {k: v for k, v in job.data.metrics.items() if not k.endswith("_seconds")},
                "params": job.data.params,
                "children": sorted((run.data.tags["mmp.stage"], run.info.status) for run in explains),
                "worker": job.data.tags["mmp.sweep_worker"],
            }
        )
    return records


def test_submitit_jobs_make_the_same_runs_as_joblib(project: Project) -> None:
    project.mmp("sweep", *SWEEP, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    project.mmp("sweep", *SWEEP, "hydra/launcher=slurm_local")

    joblib_parent, submitit_parent = sorted(project.runs("sweep"), key=lambda run: run.info.start_time)
    by_joblib, by_submitit = sweep_runs(project, joblib_parent), sweep_runs(project, submitit_parent)
    assert len(by_submitit) == 2
    assert all(job["stage"] == "train" and job["children"] == [("explain", "FINISHED")] for job in by_submitit)
    # Each submitit job ran in a process of its own, not in the process that launched the sweep.
    assert len({job.pop("worker") for job in by_submitit}) == 2
    for job in by_joblib:
        job.pop("worker")
    assert by_submitit == by_joblib  # same jobs, overrides, params, metrics and explain children

    for parent in (joblib_parent, submitit_parent):
        assert parent.info.status == "FINISHED"
        assert parent.data.metrics["jobs_finished"] == 2
    assert submitit_parent.data.tags["mmp.best_overrides"] == joblib_parent.data.tags["mmp.best_overrides"]
    # The job pickles and logs stay in the sweep's folder.
    folder = project.root / "multirun" / submitit_parent.data.tags["mmp.sweep_id"]
    assert list(folder.glob(".submitit/*/*_result.pkl"))
    assert len(project.runs("prepare")) == 1  # prepared once, reused by every job of both sweeps


def test_a_joblib_worker_killed_mid_sweep_is_one_line_and_leaves_nothing_running(project: Project) -> None:
    """``kill -9`` of a joblib worker (or the OOM killer) stops the sweep: one line naming what to fix, exit 2,
    the parent run FAILED, and the runs of the jobs that died with the workers KILLED, not RUNNING."""
    import os
    import signal
    import time

    from conftest import BIN

    leaves = "recipe.model.params.num_leaves=" + ",".join(str(n) for n in range(8, 40, 4))  # 8 jobs
    sweep = project.start(
        str(BIN / "mmp"), "sweep", "recipe=lgbm-tuned", leaves, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"
    )
    killed = None
    try:
        deadline = time.monotonic() + 300
        while killed is None and sweep.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            if not list((project.root / "multirun").glob("sweep-*/0")):
                continue  # no job yet: the sweep may still be creating the store, which a second opener races
            for run in project.runs():
                owner = int(run.data.tags.get("mmp.owner.pid", sweep.pid))
                if run.info.status == "RUNNING" and owner != sweep.pid and "mmp.sweep_job" in run.data.tags:
                    os.kill(owner, signal.SIGKILL)  # the joblib worker running this job
                    killed = owner
                    break
        out, err = sweep.communicate(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert killed is not None, err[-3000:]
    assert sweep.returncode == 2, out[-2000:] + err[-3000:]
    *_, line = err.strip().splitlines()
    assert line.startswith("mmp: error: Hydra stopped the sweep") and "process that died" in line
    assert [run.info.status for run in project.runs("sweep")] == ["FAILED"]
    assert [run.info.run_id for run in project.runs() if run.info.status == "RUNNING"] == []
