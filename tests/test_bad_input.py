"""Bad config or data: one clear line, a non-zero exit, no traceback, no RUNNING run, no partial output."""

from __future__ import annotations

import pytest

from conftest import Project, make_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bad_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    project = make_project(tmp_path_factory.mktemp("bad") / "project")
    rows = (project.root / "data" / "titanic.csv").read_text().splitlines()
    header, body = rows[0], rows[1:]
    write = lambda name, text: (project.root / "data" / name).write_text(text)
    write("one_class.csv", "\n".join([header, *[r for r in body if ",died," in r]]) + "\n")
    write(
        "null_target.csv",
        "\n".join([header, *body[:40], "1st,,female,30.0,0,0", "3rd,,male,22.0,0,0", *body[40:]]) + "\n",
    )
    write("empty_column.csv", "\n".join([header + ",cabin", *[r + "," for r in body]]) + "\n")
    write("corrupt.parquet", "this is not parquet\n")
    write("header_only.csv", header + "\n")
    write("inf.csv", "\n".join([header, *body[:30], "1st,died,male,inf,0,0", *body[30:]]) + "\n")
    import polars as pl

    frame = pl.read_csv(project.root / "data" / "titanic.csv")
    nested = frame.with_columns(pl.concat_list("sibsp", "parch").alias("family"))
    nested.write_parquet(project.root / "data" / "nested.parquet")
    (project.root / "recipes" / "typo.yaml").write_text(
        (project.root / "recipes" / "xgb-baseline.yaml").read_text().replace("max_depth:", "max_dept:")
    )
    return project


CASES = {
    "unknown recipe": (["recipe=no-such-recipe"], ["Unknown recipe 'no-such-recipe'", "xgb-baseline", "-r PATH"]),
    "unknown recipe file": (["-r", "recipes/missing.yaml"], ["recipes/missing.yaml does not exist"]),
    "unknown model class": (["recipe.model.name=xgbost"], ["Unknown model 'xgbost'", "did you mean 'xgboost'"]),
    "unknown hyperparameter": (
        ["-r", "recipes/typo.yaml"],
        ["Unknown hyperparameter 'max_dept'", "did you mean 'max_depth'"],
    ),
    "hyperparameter of the wrong type": (
        ["recipe.model.params.max_depth=deep"],
        ["max_depth must be an integer", "'deep'"],
    ),
    "sklearn hyperparameter of the wrong type": (
        ["recipe=rf-experiment", "recipe.model.params.n_estimators=-3"],
        ["'n_estimators' parameter", "-3"],
    ),
    "unknown config key": (["-c", "configs/bad.yaml"], ["Unknown config key 'data.targt'", "did you mean 'target'"]),
    "missing data file": (["-d", "data/missing.csv"], ["missing.csv does not exist", "data.path"]),
    "unreadable data file": (["-d", "data/corrupt.parquet"], ["corrupt.parquet cannot be read"]),
    "missing target column": (["data.target=survival"], ["Target column 'survival' is not in", "set data.target"]),
    "single-class target": (["-d", "data/one_class.csv", "data.target=survived"], ["single value", "'died'"]),
    "non-numeric regression target": (["recipe.task=regression"], ["recipe.task is regression", "numeric target"]),
    "empty after filtering": (["data.query='age > 1000'"], ["No rows left after data.query 'age > 1000'"]),
    "empty data file": (["-d", "data/header_only.csv", "data.target=survived"], ["No rows left"]),
    "all-null column": (
        ["-d", "data/empty_column.csv", "data.target=survived"],
        ["Column 'cabin' is entirely empty", "data.drop_columns"],
    ),
    "missing id column": (["data.id_columns=[passenger_id]"], ["data.id_columns names column(s) passenger_id"]),
    "bad split size": (["split.test_size=1.5"], ["split.test_size", "between 0 and 1"]),
    "hyperparameter out of range": (["recipe.model.params.n_estimators=-5"], ["n_estimators must be >= 1, got -5"]),
    "experiment name outside the store": (["mlflow.experiment_name=.."], ["'..'", "outside the store"]),
    "infinite number": (["-d", "data/inf.csv", "data.target=survived"], ["Column 'age' holds 1 infinite value"]),
    "nested parquet column": (
        ["-d", "data/nested.parquet", "data.target=survived"],
        ["Column 'family'", "does not support", "data.drop_columns"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_clearly(bad_project: Project, case: str) -> None:
    (bad_project.root / "configs").mkdir(exist_ok=True)
    (bad_project.root / "configs" / "bad.yaml").write_text("data:\n  targt: survived\n")
    args, expected = CASES[case]
    before = {run.info.run_id for run in bad_project.runs()}
    result = bad_project.mmp("train", *args, check=False)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("mmp: error:")]
    assert len(errors) == 1, result.stderr
    for fragment in expected:
        assert fragment in errors[0], errors[0]
    # Nothing half-written, nothing left RUNNING.
    assert not (bad_project.root / "data" / "prepared").exists()
    assert not (bad_project.root / "models").exists()
    assert not list(bad_project.root.glob("data/.prepared.*"))
    new_runs = [run for run in bad_project.runs() if run.info.run_id not in before]
    assert all(run.info.status != "RUNNING" for run in new_runs)


def test_verbose_shows_the_traceback(bad_project: Project) -> None:
    result = bad_project.mmp("--verbose", "train", "data.target=survival", check=False)
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_missing_target_values_are_dropped_and_counted(project: Project) -> None:
    rows = (project.root / "data" / "titanic.csv").read_text().splitlines()
    rows[5] = "1st,,female,30.0,0,0"
    rows[9] = "3rd,,male,22.0,0,0"
    (project.root / "data" / "titanic.csv").write_text("\n".join(rows) + "\n")
    result = project.mmp("prepare")
    assert "Dropping 2 row(s) whose target 'survived' is missing" in result.stderr
    run = project.runs("prepare")[0]
    assert run.data.metrics["rows_dropped_null_target"] == 2
    assert sum(run.data.metrics[f"rows_{s}"] for s in ("train", "valid", "test")) == 1309 - 2


def test_failure_inside_a_stage_marks_the_run_failed(project: Project) -> None:
    project.mmp("prepare")
    metrics_before = (project.root / "metrics.json").read_bytes()
    result = project.mmp("train", "+recipe.model.params.objective=no:such", check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    train = project.runs("train")[0]
    assert train.info.status == "FAILED"
    assert "mmp.error" in train.data.tags
    assert not (project.root / "models").exists()
    assert (project.root / "metrics.json").read_bytes() == metrics_before
