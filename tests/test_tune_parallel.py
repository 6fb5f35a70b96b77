"""Parallel search: `mmp tune --workers 2` runs the trials of one Optuna study in two processes, on a journal
file and on a real PostgreSQL server; every trial is a child run of the search's one parent run."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import BIN, Project

pytestmark = pytest.mark.slow

# Small trials: the test is about who runs them and where they are recorded, not about the model.
FAST = ("recipe=lgbm-tuned", "recipe.model.params.n_estimators=40")


def search_and_trials(project: Project) -> tuple[Any, list[Any]]:
    [parent] = project.runs("tune")
    trials = [run for run in project.runs("train") if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, sorted(trials, key=lambda run: int(run.data.tags["mmp.sweep_job"]))


def assert_one_search(project: Project, study: Any, n_trials: int) -> None:
    parent, trials = search_and_trials(project)
    assert parent.info.status == "FINISHED"
    assert len(project.runs("train")) == n_trials  # every train run is a trial of this search
    assert [run.data.tags["mmp.sweep_job"] for run in trials] == [str(n) for n in range(n_trials)]
    assert all(run.info.status in ("FINISHED", "KILLED") for run in trials)
    # Two processes ran trials, each training with cores // 2 threads.
    assert len({run.data.tags["mmp.sweep_worker"] for run in trials}) == 2
    threads = str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert {run.data.params["recipe.model.params.n_jobs"] for run in trials} == {threads}
    # The study holds the same trials: its count, and each trial's run is one of the parent's children.
    assert len(study.trials) == n_trials
    assert {t.user_attrs["mmp.job"]["run_id"] for t in study.trials} == {run.info.run_id for run in trials}
    assert study.user_attrs["mmp.settings"]["parent_run_id"] == parent.info.run_id
    assert parent.data.metrics["jobs_total"] == n_trials
    assert parent.data.tags["mmp.best_run_id"] in {run.info.run_id for run in trials}
    assert parent.data.metrics["valid_roc_auc"] == max(run.data.metrics.get("valid_roc_auc", 0) for run in trials)
    assert (project.root / "recipes" / "lgbm-tuned-best.yaml").is_file()
    assert [run.info.run_name for run in project.runs() if run.info.status == "RUNNING"] == []


def test_two_workers_on_a_journal_file(project: Project) -> None:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    out = project.mmp("tune", *FAST, "--n-trials", "4", "--workers", "2").stdout
    assert "4 jobs, 0 failed" in out
    [parent] = project.runs("tune")
    study_id = parent.data.tags["mmp.sweep_id"]
    journal = project.root / "multirun" / study_id / "study.journal"
    study = optuna.load_study(study_name=study_id, storage=JournalStorage(JournalFileBackend(str(journal))))
    assert_one_search(project, study, 4)


def test_two_workers_on_postgresql_keep_the_password_out(project: Project, postgres_server: Any) -> None:
    import optuna

    url = postgres_server.database("tune_parallel", scheme="postgresql+psycopg")
    result = project.mmp("tune", *FAST, "--n-trials", "4", "--workers", "2", "--storage", url)
    assert "4 jobs, 0 failed" in result.stdout
    [parent] = project.runs("tune")
    study = optuna.load_study(study_name=parent.data.tags["mmp.sweep_id"], storage=url)
    assert_one_search(project, study, 4)
    assert not (project.root / "multirun" / parent.data.tags["mmp.sweep_id"] / "study.journal").exists()
    # The URL's password is in no run's tags or params, nor in anything mmp printed.
    password = postgres_server.password
    assert "***" in parent.data.tags["mmp.sweep_command"]
    for run in project.runs():
        assert password not in repr(run.data.tags) + repr(run.data.params)
    assert password not in result.stdout + result.stderr


def test_an_unreachable_storage_is_one_line_and_no_run(project: Project) -> None:
    url = "postgresql+psycopg://mmp:not-a-real-pw@127.0.0.1:9/optuna"  # port 9: nothing listens
    result = project.mmp("tune", *FAST, "--workers", "2", "--storage", url, check=False)
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("mmp: error: Cannot open the study storage postgresql+psycopg://mmp:***@127.0.0.1:9/optuna")
    assert "not-a-real-pw" not in result.stderr + result.stdout
    assert project.runs() == []
    joined = project.mmp("tune", "--join", "tune-x", check=False)
    assert joined.stderr.strip() == (
        "mmp: error: --join needs the study's storage: --storage URL (or MMP_TUNE_STORAGE in .env)"
    )


def test_a_failed_set_up_stops_the_waiting_workers(project: Project) -> None:
    """The local workers start before the search prepares its data; when that fails, they stop with it."""
    result = project.mmp("tune", *FAST, "data.path=data/missing.csv", "--workers", "2", check=False)
    assert result.returncode != 0
    *_, line = result.stderr.strip().splitlines()  # the search's log lines, then the error
    assert line.startswith("mmp: error: Data file") and "missing.csv does not exist" in line
    assert "Traceback" not in result.stderr  # nor from a worker
    assert [run.info.status for run in project.runs("tune")] == ["FAILED"]
    workers = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            command = (proc / "cmdline").read_bytes().split(b"\0")
            if b"--join" in command and (proc / "cwd").resolve() == project.root.resolve():
                workers.append(proc.name)
    assert workers == []


def test_a_worker_killed_mid_trial_is_replaced_and_leaves_nothing_running(project: Project) -> None:
    """``kill -9`` of a worker (or the OOM killer) while it runs a trial: the search fails that trial, names the
    gone process, runs the budget in full without it, and no MLflow run is left RUNNING."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    search = project.start(str(BIN / "mmp"), "tune", *FAST, "--n-trials", "6", "--workers", "2")
    killed = None
    try:
        deadline = time.monotonic() + 300
        while killed is None and search.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            journals = list((project.root / "multirun").glob("tune-*/study.journal"))
            if not journals:
                continue
            storage = JournalStorage(JournalFileBackend(str(journals[0])))
            for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
                study = optuna.load_study(study_name=summary.study_name, storage=storage)
                for trial in study.get_trials(deepcopy=False):
                    pid = int(trial.user_attrs.get("mmp.worker", {}).get("mmp.owner.pid", search.pid))
                    if trial.state.name != "RUNNING" or pid == search.pid:
                        continue
                    os.kill(pid, signal.SIGSTOP)  # the joined worker: killed only if the trial is still running
                    if study.get_trials(deepcopy=False)[trial.number].state.name == "RUNNING":
                        os.kill(pid, signal.SIGKILL)
                        killed = trial.number
                        break
                    os.kill(pid, signal.SIGCONT)
        out, err = search.communicate(timeout=300)
    finally:
        if search.poll() is None:
            search.kill()
    assert killed is not None, err[-3000:]
    assert search.returncode == 0, err[-3000:]
    assert f"trial {killed} was lost: the process" in err
    assert "6 jobs, 0 failed" in out  # the budget, run in full by the search's own process
    [parent] = project.runs("tune")
    assert parent.info.status == "FINISHED"
    study = optuna.load_study(study_name=parent.data.tags["mmp.sweep_id"], storage=storage)
    states = {t.number: t.state.name for t in study.trials}
    assert states[killed] == "FAIL" and "is gone" in study.trials[killed].user_attrs["mmp.lost"]
    assert sum(state in ("COMPLETE", "PRUNED") for state in states.values()) == 6
    assert [run.info.run_id for run in project.runs() if run.info.status == "RUNNING"] == []
    assert (project.root / "recipes" / "lgbm-tuned-best.yaml").is_file()
