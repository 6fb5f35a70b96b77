"""The recorder process that keeps a train or explain stage's MLflow run (src/mmp/tracking/recorder.py).

Real recorder processes and a real SQLite store in a project copy; the stage side is driven through the
same objects the stages use.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, Project
from mmp.config import load_config
from mmp.errors import DataError
from mmp.tracking.recorder import RecordedRun, Recorder, for_stage

# Every test here starts recorder processes and stage scripts (about 70 s in all): not make test-fast's
# in-process unit tests. make test runs them.
pytestmark = pytest.mark.slow

STAGE_THAT_DIES = """
import sys, time
from pathlib import Path
from mmp.config import load_config
from mmp.tracking.recorder import RecordedRun, for_stage

config = load_config(from_params=True, root=Path.cwd())
run = RecordedRun(for_stage(config, "train", "mmp.pipeline.recorder_process"), {"mmp.task": "binary"})
print(run.info.run_id, flush=True)
time.sleep(600)  # killed here, as a stage killed in the middle of its work
"""


def _wait_for_status(project: Project, run_id: str, timeout: float = 60) -> object:
    client = project.client()
    deadline = time.monotonic() + timeout
    while True:
        run = client.get_run(run_id)
        if run.info.status != "RUNNING" or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def test_a_killed_stage_leaves_its_run_killed_not_running(project: Project) -> None:
    stage = subprocess.Popen(
        [str(BIN / "python"), "-c", STAGE_THAT_DIES],
        cwd=project.root,
        env=project.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert stage.stdout is not None
        run_id = stage.stdout.readline().strip()
        assert len(run_id) == 32, f"the stage printed no run id: {run_id!r}"
        assert project.client().get_run(run_id).info.status == "RUNNING"
    finally:
        os.kill(stage.pid, signal.SIGKILL)
        stage.wait()
    run = _wait_for_status(project, run_id)
    assert run.info.status == "KILLED"
    assert "ended before its run was finished" in run.data.tags["mmp.error"]
    assert run.data.tags["mmp.task"] == "binary"
    assert run.data.tags["mmp.stage"] == "train"
    assert run.data.params["recipe.name"] == "xgb-baseline"


def _recorder(project: Project, stage: str) -> Recorder:
    """A recorder for ``stage`` in the project copy, as the stage scripts get one."""
    recorder = for_stage(load_config(from_params=True, root=project.root), stage, "mmp.pipeline.recorder_process")
    assert recorder is not None
    return recorder


def test_a_stage_that_fails_first_gets_a_failed_run_with_its_error(project: Project) -> None:
    recorder = _recorder(project, "explain")
    run = RecordedRun(recorder, {"mmp.explainer": "tree"})
    run.end(DataError("No trained model in models; run the train stage first (dvc repro)"))
    assert run.started
    recorded = project.client().get_run(run.info.run_id)
    assert recorded.info.status == "FAILED"
    assert recorded.info.start_time == recorder.launched_ms
    assert recorded.data.tags["mmp.error"] == "No trained model in models; run the train stage first (dvc repro)"
    assert recorded.data.tags["mmp.explainer"] == "tree"


def test_a_run_asked_for_during_the_fit_then_failed_is_failed(project: Project) -> None:
    """The train stage asks for its run as the fit starts and reads the answer later (``begin``): a stage
    that fails in between still gets its run, FAILED with the error, and knows its id."""
    run = RecordedRun(_recorder(project, "train"), {"mmp.task": "binary"})
    run.begin()
    run.end(DataError("The fit failed"))
    recorded = project.client().get_run(run.info.run_id)
    assert recorded.info.status == "FAILED"
    assert recorded.data.tags["mmp.error"] == "The fit failed"
    assert [r.info.run_id for r in project.runs("train")] == [run.info.run_id]


def test_a_stage_that_stops_before_its_run_block_leaves_no_run(project: Project) -> None:
    recorder = _recorder(project, "train")
    process = recorder._process
    recorder.close()  # as a stage that met bad data before it used its run
    assert process.wait(timeout=60) == 0
    assert project.runs() == []


def _run_stage_script(project: Project, stage: str, trace: Path) -> set[str]:
    """Run ``stages/<stage>.py``'s entry point; the modules its own process loaded."""
    probe = (
        f"import sys; from mmp.cli import stage_main; code = stage_main({stage!r}, []); "
        f"open({str(trace)!r}, 'w').write(chr(10).join(sys.modules)); sys.exit(code)"
    )
    project.run(str(BIN / "python"), "-c", probe)
    return set(trace.read_text().split())


def test_stage_scripts_hand_their_runs_to_recorders(project: Project, tmp_path: Path) -> None:
    """The stages' own processes never open the store; their runs are complete all the same."""
    prepare_modules = _run_stage_script(project, "prepare", tmp_path / "prepare.txt")
    train_modules = _run_stage_script(project, "train", tmp_path / "train.txt")
    assert "polars" in prepare_modules and "xgboost" in train_modules  # the probes did the stages' work
    assert "mlflow.store.tracking.sqlalchemy_store" not in prepare_modules | train_modules
    prepare, train = project.runs("prepare")[0], project.runs("train")[0]
    assert prepare.info.status == train.info.status == "FINISHED"
    assert prepare.data.metrics["rows_train"] > 500
    assert train.data.metrics["test_roc_auc"] >= 0.80
    assert train.data.tags["mmp.prepare_run_id"] == prepare.info.run_id
    client = project.client()
    models = client.search_logged_models(
        experiment_ids=[train.info.experiment_id], filter_string=f"source_run_id = '{train.info.run_id}'"
    )
    assert len(models) == 1
    assert {a.path for a in client.list_artifacts(train.info.run_id)} >= {"config.yaml", "metrics.json", "plots"}


def test_mmp_train_keeps_its_three_runs_in_one_shared_recorder(project: Project, tmp_path: Path) -> None:
    """`mmp train` starts one recorder for its three stages: MLflow loads once, in that process, and the
    command's own process never opens the store. Each stage's mirror is logged while the next stage works."""
    trace = tmp_path / "train.txt"
    probe = (
        "import sys; from mmp.cli import main; code = main(['train']); "
        f"open({str(trace)!r}, 'w').write(chr(10).join(sys.modules)); sys.exit(code)"
    )
    result = project.run(str(BIN / "python"), "-c", probe)
    modules = set(trace.read_text().split())
    assert "xgboost" in modules and "mlflow.store.tracking.sqlalchemy_store" not in modules
    runs = {stage: project.runs(stage) for stage in ("pipeline", "prepare", "train", "explain")}
    assert {stage: len(found) for stage, found in runs.items()} == dict.fromkeys(runs, 1)
    (parent,), (prepare,), (train,), (explain,) = runs.values()
    assert {run.info.status for run in (parent, prepare, train, explain)} == {"FINISHED"}
    assert {run.data.tags["mlflow.parentRunId"] for run in (prepare, train, explain)} == {parent.info.run_id}
    assert len({run.data.tags["mmp.owner.pid"] for run in (prepare, train, explain)}) == 1  # one recorder
    assert train.data.tags["mmp.prepare_run_id"] == prepare.info.run_id
    assert explain.data.tags["mmp.train_run_id"] == train.info.run_id
    assert train.data.metrics["test_roc_auc"] >= 0.80
    assert f"MLflow run id: {train.info.run_id}" in result.stdout
    assert f"#/experiments/{train.info.experiment_id}/runs" in result.stdout
    # The run folder's paths are the runs' overrides tag, read from the config (not by composing conf/ again).
    assert train.data.tags["mmp.overrides"].startswith("paths.prepared_dir=runs/")


def test_recorder_can_be_turned_off(project: Project, tmp_path: Path) -> None:
    """MMP_RECORDER=0 (docs/mlflow.md): the stage records its run in its own process."""
    project.env["MMP_RECORDER"] = "0"
    modules = _run_stage_script(project, "prepare", tmp_path / "prepare.txt")
    assert "mlflow.store.tracking.sqlalchemy_store" in modules
    assert project.runs("prepare")[0].info.status == "FINISHED"


def test_a_stage_with_a_bad_config_leaves_no_recorder_behind(project: Project, tmp_path: Path) -> None:
    """The recorder started with the stage script is stopped with it (output to a file, not a pipe that
    an orphan would hold open, so the check runs as soon as the stage has exited)."""
    import psutil

    log = tmp_path / "stage.log"
    with log.open("w") as out:
        code = subprocess.call(
            [str(BIN / "python"), "stages/train.py", "recipe=no-such-recipe"],
            cwd=project.root,
            env=project.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    left = [
        process.pid
        for process in psutil.process_iter(["cmdline", "cwd"])
        if "mmp.pipeline.recorder_process" in (process.info["cmdline"] or [])
        and process.info["cwd"] == str(project.root)
    ]
    assert code == 2
    assert "no-such-recipe" in log.read_text()
    assert left == []


def test_charts_that_fail_while_the_recorder_mirrors_leave_a_failed_run(project: Project) -> None:
    """The train stage draws its charts while its recorder logs the model (tracking.mirror's ``meanwhile``).
    If drawing fails, the recorder, waiting for the charts, ends the run FAILED with the stage's error."""
    project.run(str(BIN / "python"), "stages/prepare.py")
    (project.root / "plots").write_text("a file where the charts' folder goes\n")
    result = project.run(str(BIN / "python"), "stages/train.py", check=False)
    assert result.returncode != 0
    error = result.stderr.strip().splitlines()[-1]
    assert "plots" in error and "Traceback" not in result.stderr
    train = project.runs("train")[0]
    assert train.info.status == "FAILED"
    assert "plots" in train.data.tags["mmp.error"]
    assert "metrics.json" in {a.path for a in project.client().list_artifacts(train.info.run_id)}
