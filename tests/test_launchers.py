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
