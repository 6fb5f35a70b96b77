"""Faults in the pipeline (issue 14): killed processes, a full or broken store, escaping names, bad data."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import BIN, REPO, Project
from mmp.errors import DataError
from mmp.tracking import orphans

STAGE_IN_ITS_GROUP = """
import time
from collections.abc import Iterator
from pathlib import Path
from mmp.config import load_config
from mmp.tracking.recorder import RecordedRun, for_stage

config = load_config(from_params=True, root=Path.cwd())
run = RecordedRun(for_stage(config, "train", "mmp.pipeline.recorder_process"), {"mmp.task": "binary"})
print(run.info.run_id, flush=True)
time.sleep(600)  # killed here with its recorder, as by the OOM killer or kill -9 of the group
"""


# --------------------------------------------------------------------------- 7: runs left RUNNING


def test_owner_tags_name_this_process() -> None:
    tags = orphans.owner_tags()
    assert tags[orphans.OWNER_PID] == str(os.getpid())
    assert tags[orphans.OWNER_STARTED]
    assert orphans.is_alive(os.getpid(), tags[orphans.OWNER_STARTED])


def test_a_gone_or_reused_pid_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not orphans.is_alive(child.pid)
    # Our own pid, but a different start time: the pid was reused by a later process.
    assert not orphans.is_alive(os.getpid(), "00000000:1")


def test_reaping_ends_only_runs_of_gone_processes_of_this_host(tmp_path: Path) -> None:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("reap", artifact_location=(tmp_path / "mlruns").as_uri())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    mine = orphans.owner_tags()
    gone = client.create_run(experiment, tags={**mine, orphans.OWNER_PID: str(child.pid)}).info.run_id
    alive = client.create_run(experiment, tags=mine).info.run_id
    elsewhere = {**mine, orphans.OWNER_HOST: "another-host", orphans.OWNER_PID: str(child.pid)}
    other_host = client.create_run(experiment, tags=elsewhere).info.run_id
    untagged = client.create_run(experiment).info.run_id

    assert orphans.reap(experiment) == [gone]
    assert client.get_run(gone).info.status == "KILLED"
    assert {client.get_run(run).info.status for run in (alive, other_host, untagged)} == {"RUNNING"}


@pytest.mark.slow
def test_a_stage_killed_with_its_recorder_is_marked_killed_by_the_next_command(project: Project) -> None:
    stage = subprocess.Popen(
        [str(BIN / "python"), "-c", STAGE_IN_ITS_GROUP],
        cwd=project.root,
        env=project.env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert stage.stdout is not None
        run_id = stage.stdout.readline().strip()
        assert len(run_id) == 32, f"the stage printed no run id: {run_id!r}"
    finally:
        os.killpg(stage.pid, signal.SIGKILL)  # the stage and its recorder at once: nobody ends the run
        stage.wait()
    time.sleep(0.5)
    assert project.client().get_run(run_id).info.status == "RUNNING"

    listed = project.mmp("runs", "--limit", "1", "--quiet")
    assert listed.stdout.split() == [run_id]
    run = project.client().get_run(run_id)
    assert run.info.status == "KILLED"
    assert "is gone" in run.data.tags["mmp.orphaned"]
    assert "left RUNNING" in run.data.tags["mmp.error"]
    assert run.info.end_time is not None


# --------------------------------------------------------------------------- 11: hyperparameter ranges


@pytest.mark.parametrize(
    ("model", "params", "message"),
    [
        ("xgboost", {"n_estimators": -5}, "n_estimators must be >= 1, got -5"),
        ("xgboost", {"learning_rate": 0.0}, "learning_rate must be > 0"),
        ("xgboost", {"subsample": 1.5}, "subsample must be in (0, 1]"),
        ("xgboost", {"max_depth": -1}, "max_depth must be >= 0"),
        ("lightgbm", {"num_leaves": 1}, "num_leaves must be in [2, 131072]"),
        ("lightgbm", {"reg_lambda": -1.0}, "reg_lambda must be >= 0"),
        ("catboost", {"depth": 20}, "depth must be in [1, 16]"),
        ("catboost", {"iterations": 0}, "iterations must be >= 1"),
    ],
)
def test_hyperparameters_out_of_range_are_one_config_error(model: str, params: dict, message: str) -> None:
    from mmp.errors import ConfigError
    from mmp.model.registry import check_model_name, resolve_params

    with pytest.raises(ConfigError) as error:
        resolve_params(check_model_name(model), "binary", params, 0)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("xgboost", {"max_depth": 0, "n_estimators": 1, "subsample": 1.0, "gamma": 0}),
        ("lightgbm", {"max_depth": -1, "subsample_freq": 0, "num_leaves": 31}),
        ("catboost", {"depth": 6, "learning_rate": 0.03}),
    ],
)
def test_documented_edge_values_are_accepted(model: str, params: dict) -> None:
    from mmp.model.registry import check_model_name, resolve_params

    resolved = resolve_params(check_model_name(model), "binary", params, 0)
    assert all(resolved[name] == value for name, value in params.items())


# --------------------------------------------------------------------------- 11: bad data


def _titanic_rows() -> tuple[str, list[str]]:
    rows = (REPO / "data" / "titanic.csv").read_text().splitlines()
    return rows[0], rows[1:200]


def _load_and_check(path: Path, **data: object) -> None:
    from mmp.config.schema import DataConfig
    from mmp.data import clean_and_check, load

    config = DataConfig(name="t", path=str(path), target="survived", **data)  # type: ignore[arg-type]
    clean_and_check(load(config, path), config, "auto")


def test_an_infinite_number_in_a_feature_names_the_column(tmp_path: Path) -> None:
    header, body = _titanic_rows()
    body[7] = "1st,died,male,inf,0,0"
    (tmp_path / "inf.csv").write_text("\n".join([header, *body]) + "\n")
    with pytest.raises(DataError) as error:
        _load_and_check(tmp_path / "inf.csv")
    assert "Column 'age' holds 1 infinite value(s)" in str(error.value)


def test_a_column_of_numbers_and_text_warns_and_says_how_to_choose(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    header, body = _titanic_rows()
    body[3] = "1st,died,male,unknown,0,0"
    (tmp_path / "mixed.csv").write_text("\n".join([header, *body]) + "\n")
    with caplog.at_level(logging.WARNING):
        _load_and_check(tmp_path / "mixed.csv")
    warning = next(r.getMessage() for r in caplog.records if "mixes numbers and text" in r.getMessage())
    assert "Column 'age'" in warning and "'unknown'" in warning and "data.categorical_columns" in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _load_and_check(tmp_path / "mixed.csv", categorical_columns=["age"])  # a choice made: no warning
    assert not [r for r in caplog.records if "mixes numbers and text" in r.getMessage()]


def test_a_duplicate_header_warns_naming_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    header, body = _titanic_rows()
    (tmp_path / "dup.csv").write_text("\n".join([header + ",age", *[row + ",1.0" for row in body]]) + "\n")
    with caplog.at_level(logging.WARNING):
        _load_and_check(tmp_path / "dup.csv")
    warning = next(r.getMessage() for r in caplog.records if "two columns named" in r.getMessage())
    assert "'age'" in warning and "'age_duplicated_0'" in warning and "data.drop_columns" in warning


def test_a_nested_parquet_column_is_named_as_unsupported(tmp_path: Path) -> None:
    import polars as pl

    frame = pl.read_csv(REPO / "data" / "titanic.csv").head(100)
    frame.with_columns(pl.concat_list("sibsp", "parch").alias("family")).write_parquet(tmp_path / "nested.parquet")
    with pytest.raises(DataError) as error:
        _load_and_check(tmp_path / "nested.parquet")
    assert "Column 'family'" in str(error.value) and "does not support" in str(error.value)
    _load_and_check(tmp_path / "nested.parquet", drop_columns=["family"])  # dropped: fine


# --------------------------------------------------------------------------- 10: experiment names


@pytest.mark.parametrize("name", ["..", ".", "  "])
def test_an_experiment_name_that_escapes_the_store_is_refused(tmp_path: Path, name: str) -> None:
    from mmp.config import load_config
    from mmp.errors import ConfigError
    from mmp.tracking import preflight, setup

    shutil.copytree(REPO / "conf", tmp_path / "conf")
    config = load_config(root=tmp_path, overrides=[f"mlflow.experiment_name='{name}'"])
    for check in (preflight, setup):
        with pytest.raises(ConfigError) as error:
            check(config)
        assert "outside the store" in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "mlflow.db").exists()


def test_a_dotted_experiment_name_stays_inside_the_store(tmp_path: Path) -> None:
    from mmp.config import load_config
    from mmp.tracking.store import experiment_folder

    shutil.copytree(REPO / "conf", tmp_path / "conf")
    config = load_config(root=tmp_path, overrides=["mlflow.experiment_name=../models/x"])
    assert experiment_folder(config, tmp_path) == (tmp_path / "mlruns" / ".._models_x").resolve()


# --------------------------------------------------------------------------- 8, 9: local store failures


def test_a_path_error_is_the_stores_when_the_path_is_in_the_store(tmp_path: Path) -> None:
    from mmp.tracking import is_store_failure

    store = [tmp_path / "mlruns"]
    in_store = NotADirectoryError(20, "Not a directory", str(tmp_path / "mlruns" / "mmp" / "models" / "m-1"))
    in_outputs = FileNotFoundError(2, "No such file or directory", str(tmp_path / "models" / "model.json"))
    assert is_store_failure(in_store, store)
    assert not is_store_failure(in_outputs, store)
    assert not is_store_failure(in_store)  # without the store's paths: mmp's problem, as before
    copy = shutil.Error([("/tmp/a", str(tmp_path / "mlruns" / "a"), "[Errno 28] No space left on device")])
    assert is_store_failure(copy, store)


def test_a_full_disk_is_named_as_such() -> None:
    from mmp.tracking.store import describe_failure, is_out_of_space

    full = OSError(28, "No space left on device", "/tmp/source.bin", None, "/store/mlruns/x.bin")
    assert is_out_of_space(full)
    message = describe_failure("sqlite:////store/mlflow.db", full)
    assert message.startswith("No space left on device at /store/mlruns/x.bin")
    assert "permission" not in message
    copy = shutil.Error([("/tmp/a", "/store/mlruns/a", "[Errno 28] No space left on device: '/tmp/a'")])
    assert is_out_of_space(copy)
    assert "No space left on device at /store/mlruns/a" in describe_failure("sqlite:////store/mlflow.db", copy)


def _ready_models(project: Project, run_id: str) -> list[str]:
    import mlflow

    mlflow.set_tracking_uri(project.tracking_uri)
    run = project.client().get_run(run_id)
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'", output_format="list"
    )
    return [str(model.status) for model in models]


@pytest.mark.slow
def test_a_local_store_error_is_deferred_to_mmp_mirror(project: Project) -> None:
    (project.root / "mlruns" / "mmp").mkdir(parents=True)
    (project.root / "mlruns" / "mmp" / "models").write_text("a file where the models folder belongs\n")
    result = project.mmp("train")
    assert "Not a directory" in result.stderr and "Run `mmp mirror`" in result.stderr
    records = list((project.root / ".mmp" / "pending").glob("train-*.json"))
    assert len(records) == 1
    outputs = json.loads(records[0].read_text())["outputs"]
    assert outputs and all((project.root / name).exists() for name in outputs)  # the stage's outputs stay
    # Output folders get the umask's permissions, not their scratch folder's 0700 (issue 14, 6f).
    mask = os.umask(0)
    os.umask(mask)
    folders = [project.root / name for name in outputs if (project.root / name).is_dir()]
    folders += [sub for folder in folders for sub in folder.rglob("*") if sub.is_dir()]
    assert folders and {stat.S_IMODE(folder.stat().st_mode) for folder in folders} == {0o777 & ~mask}
    run_id = records[0].stem.split("-", 1)[1]

    (project.root / "mlruns" / "mmp" / "models").unlink()
    project.mmp("mirror")
    assert project.client().get_run(run_id).info.status == "FINISHED"
    assert "READY" in _ready_models(project, run_id)


@pytest.fixture()
def full_store(project: Project) -> Iterator[Path]:
    """A 2 MB tmpfs on the project's artifact folder, nearly full (root only)."""
    store = project.root / "mlruns"
    store.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(store)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        (store / "filler").write_bytes(os.urandom(1_900_000))
        yield store
    finally:
        subprocess.run(["umount", "-l", str(store)], check=False)


@pytest.mark.slow
def test_a_full_artifact_store_fails_the_stage_and_leaves_no_truncated_model(
    project: Project, full_store: Path
) -> None:
    result = project.mmp("train", check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("mmp: error:")]
    assert len(errors) == 1, result.stderr
    assert "No space left on device at " + str(full_store) in errors[0]
    assert "mmp mirror" in errors[0]
    assert "Traceback" not in result.stderr
    # Nothing of the failed model is left in the store to be loaded.
    assert not [path for path in (full_store / "mmp" / "models").glob("*") if path.is_dir()]
    (record,) = (project.root / ".mmp" / "pending").glob("train-*.json")
    run_id = record.stem.split("-", 1)[1]
    assert project.client().get_run(run_id).info.status == "FAILED"
    assert "READY" not in _ready_models(project, run_id)

    (full_store / "filler").unlink()  # space freed: the record completes the run
    project.mmp("mirror")
    assert project.client().get_run(run_id).info.status == "FINISHED"
    assert "READY" in _ready_models(project, run_id)


# --------------------------------------------------------------------------- 6f, 6g: charts and folders


def test_shap_charts_of_a_one_hot_group_draw_without_numpys_all_nan_warning(tmp_path: Path) -> None:
    import warnings

    import numpy as np

    from mmp.explanation.charts import write_shap_plots
    from mmp.explanation.shap import Explanation

    rng = np.random.default_rng(0)
    explanation = Explanation(
        values=rng.normal(size=(60, 2)),
        base_values=np.array(0.1),
        feature_names=["sex", "age"],
        output_names=None,
        explainer="linear",
        output_space="log-odds",
    )
    data = np.column_stack([np.full(60, np.nan), rng.normal(size=60)])  # 'sex' is one-hot: no single value
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        written = write_shap_plots(tmp_path, explanation, data, top_k=2)
    assert {path.name for path in written} >= {"shap_summary.png", "shap_dependence_sex.png", "shap_bar.png"}


def test_a_reopened_orphan_forgets_its_orphan_tags(tmp_path: Path) -> None:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("reopen", artifact_location=(tmp_path / "mlruns").as_uri())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    run_id = client.create_run(experiment, tags={**orphans.owner_tags(), orphans.OWNER_PID: str(child.pid)}).info.run_id
    assert orphans.reap(experiment) == [run_id]
    orphans.forget_orphaned(run_id)  # as `mmp mirror` does when it reopens the run
    tags = client.get_run(run_id).data.tags
    assert orphans.ORPHANED not in tags and orphans.ERROR not in tags
