"""`mmp batch-inference` end to end: a model trained in a project copy, predictions on CSV and Parquet files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pytest

from conftest import Project, make_project, printed_run_id

pytestmark = pytest.mark.slow

ROWS = 1309
COLUMNS = ["passenger_id", "prediction", "proba_died", "proba_survived"]


@dataclass(frozen=True)
class Trained:
    project: Project
    run_id: str  # titanic with the id column passenger_id
    plain_run_id: str  # titanic as bundled: no id column
    regression_run_id: str  # a sample of diamonds


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A project with three trained models, and the new rows to predict."""
    project = make_project(tmp_path_factory.mktemp("batch") / "project")
    data = project.root / "data"
    pl.read_csv(data / "diamonds.csv").sample(2000, seed=0).write_csv(data / "diamonds_small.csv")
    titanic = pl.read_csv(data / "titanic.csv").with_row_index("passenger_id", offset=1)
    titanic.write_csv(data / "titanic_ids.csv")
    run_ids = [
        printed_run_id(project.mmp("train", *args).stdout)
        for args in (
            [],
            ["data=diamonds", "-d", "data/diamonds_small.csv"],
            ["-d", "data/titanic_ids.csv", "data.target=survived", "data.id_columns=[passenger_id]"],
        )
    ]
    new = titanic.drop("survived")
    new.write_csv(data / "new.csv")
    new.write_parquet(data / "new.parquet")
    new.drop("sex").write_csv(data / "no_sex.csv")
    # More rows than the CSV reader samples for types, then an unparsable age: fails after chunks are written.
    pl.concat([new] * 8).write_csv(data / "bad_tail.csv")
    with (data / "bad_tail.csv").open("a") as handle:
        handle.write("9999,3rd,male,old,0,0\n")
    return Trained(project, run_id=run_ids[2], plain_run_id=run_ids[0], regression_run_id=run_ids[1])


def _batch(project: Project, *args: str, check: bool = True) -> Any:
    return project.mmp("batch-inference", *args, check=check)


def _batch_run_id(stdout: str) -> str:
    return stdout.split("batch inference run: ")[1].split()[0]


def _model_uri(project: Project, run_id: str) -> str:
    import mlflow

    mlflow.set_tracking_uri(project.tracking_uri)
    run = project.client().get_run(run_id)
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'", output_format="list"
    )
    return models[0].model_uri


def test_predicts_csv_and_parquet(trained: Trained) -> None:
    import mlflow

    project, run_id = trained.project, trained.run_id
    _batch(project, "--run-id", run_id, "-d", "data/new.csv", "-o", "out/from_csv.parquet")
    _batch(project, "--run-id", run_id, "-d", "data/new.parquet", "-o", "out/from_parquet.csv")
    from_csv = pl.read_parquet(project.root / "out" / "from_csv.parquet")
    from_parquet = pl.read_csv(project.root / "out" / "from_parquet.csv")

    for out in (from_csv, from_parquet):
        assert out.columns == COLUMNS
        assert out.height == ROWS
        assert out["passenger_id"].to_list() == list(range(1, ROWS + 1))  # input order
        assert set(out["prediction"]) <= {"died", "survived"}
        sums = (out["proba_died"] + out["proba_survived"]).to_numpy()
        np.testing.assert_allclose(sums, 1.0, atol=1e-6)
    assert from_csv["prediction"].to_list() == from_parquet["prediction"].to_list()
    np.testing.assert_allclose(from_csv["proba_survived"].to_numpy(), from_parquet["proba_survived"].to_numpy())

    model = mlflow.pyfunc.load_model(_model_uri(project, run_id))
    rows = pl.read_csv(project.root / "data" / "new.csv").to_pandas()
    assert from_csv["prediction"].to_list() == list(model.predict(rows))
    proba = model.predict(rows, params={"predict_method": "predict_proba"})
    np.testing.assert_allclose(from_csv["proba_survived"].to_numpy(), proba["survived"].to_numpy(), rtol=1e-6)
    assert not list((project.root / "out").glob(".*"))  # no scratch files left


def test_chunks_give_the_same_output(trained: Trained) -> None:
    project, run_id = trained.project, trained.run_id
    for suffix in ("parquet", "csv"):
        single = _batch(project, "--run-id", run_id, "-d", "data/new.csv", "-o", f"out/single.{suffix}")
        chunked = _batch(
            project, "--run-id", run_id, "-d", "data/new.csv", "-o", f"out/chunked.{suffix}", "--chunk-rows", "300"
        )
        assert "predict" not in single.stderr  # one chunk: no progress bar
        assert "predict" in chunked.stderr and "1.31k" in chunked.stderr  # five chunks: a progress bar
        if suffix == "csv":
            assert (project.root / "out/single.csv").read_bytes() == (project.root / "out/chunked.csv").read_bytes()
        else:
            single_frame = pl.read_parquet(project.root / "out/single.parquet")
            assert single_frame.equals(pl.read_parquet(project.root / "out/chunked.parquet"))
    run = project.client().get_run(_batch_run_id(chunked.stdout))
    assert run.data.metrics["rows_in"] == run.data.metrics["rows_out"] == ROWS
    assert run.data.params["chunk_rows"] == "300"


def test_batch_is_an_mlflow_run_linked_to_the_model(trained: Trained) -> None:
    from mmp.data import file_digest

    project, run_id = trained.project, trained.run_id
    model_uri = _model_uri(project, run_id)
    result = _batch(project, "--model-uri", model_uri, "-d", "data/new.parquet", "-o", "out/by_uri.parquet")
    assert pl.read_parquet(project.root / "out/by_uri.parquet").height == ROWS
    run = project.client().get_run(_batch_run_id(result.stdout))
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["mmp.stage"] == "batch_inference"
    assert tags["mmp.model_run_id"] == run_id
    assert tags["mmp.model_uri"] == model_uri
    assert tags["mmp.recipe"] == "xgb-baseline"
    metrics = run.data.metrics
    assert metrics["rows_in"] == metrics["rows_out"] == ROWS
    assert metrics["seconds"] > 0
    assert run.data.params["input"].endswith("data/new.parquet")
    assert run.data.params["output"].endswith("out/by_uri.parquet")
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "new"
    assert dataset_input.dataset.digest == file_digest(project.root / "data" / "new.parquet")
    assert "new.parquet" in dataset_input.dataset.source
    assert {tag.key: tag.value for tag in dataset_input.tags}["mlflow.data.context"] == "inference"

    by_run_id = _batch(project, "--run-id", run_id, "-d", "data/new.csv", "-o", "out/by_run.csv")
    tags = project.client().get_run(_batch_run_id(by_run_id.stdout)).data.tags
    assert tags["mmp.model_uri"] == model_uri and tags["mmp.model_run_id"] == run_id


BAD_INPUTS = {
    "missing input file": (["-d", "data/missing.csv"], ["missing.csv does not exist"]),
    "missing column": (["-d", "data/no_sex.csv"], ["missing column(s) sex", "trained with"]),
    "bad output suffix": (["-d", "data/new.csv", "-o", "out/bad.json"], ["unknown format '.json'", ".parquet"]),
    "unknown run id": (["-d", "data/new.csv", "--run-id", "0123456789abcdef"], ["No run '0123456789abcdef'"]),
    "unknown model uri": (["-d", "data/new.csv", "--model-uri", "models:/m-0000"], ["Cannot load models:/m-0000"]),
    "zero chunk rows": (["-d", "data/new.csv", "--chunk-rows", "0"], ["--chunk-rows is 0"]),
    "unparsable row after some chunks": (
        ["-d", "data/bad_tail.csv", "--chunk-rows", "300"],
        ["bad_tail.csv cannot be parsed"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_fails_cleanly(trained: Trained, case: str) -> None:
    project, run_id = trained.project, trained.run_id
    args, expected = BAD_INPUTS[case]
    if "--run-id" not in args and "--model-uri" not in args:
        args = [*args, "--run-id", run_id]
    if "-o" not in args:
        args = [*args, "-o", "out/bad.parquet"]
    output = project.root / args[args.index("-o") + 1]
    output.parent.mkdir(exist_ok=True)
    output.write_text("previous output\n")  # a failed batch must leave an earlier file as it was
    before = {run.info.run_id for run in project.runs("batch_inference")}

    result = _batch(project, *args, check=False)

    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("mmp: error:")]
    assert len(errors) == 1, result.stderr
    for fragment in expected:
        assert fragment in errors[0]
    assert "Traceback" not in result.stderr
    assert output.read_text() == "previous output\n"
    assert not list(output.parent.glob(f".{output.name}*"))  # no scratch file left
    output.unlink()
    assert all(run.info.status != "RUNNING" for run in project.runs())
    new_runs = [run for run in project.runs("batch_inference") if run.info.run_id not in before]
    if case == "unparsable row after some chunks":  # failed inside its run: recorded as FAILED
        assert [run.info.status for run in new_runs] == ["FAILED"]
    else:  # checked before a run starts
        assert new_runs == []


def test_model_without_id_columns(trained: Trained) -> None:
    project = trained.project
    # The bundled file as it is: its target column is there too, and ignored.
    _batch(project, "--run-id", trained.plain_run_id, "-d", "data/titanic.csv", "-o", "out/plain.parquet")
    out = pl.read_parquet(project.root / "out/plain.parquet")
    assert out.columns == ["prediction", "proba_died", "proba_survived"]
    assert out.height == ROWS and set(out["prediction"]) <= {"died", "survived"}
    truth = pl.read_csv(project.root / "data/titanic.csv")["survived"]
    assert (out["prediction"] == truth).mean() > 0.75


def test_regression_model(trained: Trained) -> None:
    project = trained.project
    _batch(project, "--run-id", trained.regression_run_id, "-d", "data/diamonds_small.csv", "-o", "out/price.csv")
    out = pl.read_csv(project.root / "out/price.csv")
    assert out.columns == ["prediction"]
    assert out.height == 2000 and out["prediction"].dtype == pl.Float64
    price = pl.read_csv(project.root / "data/diamonds_small.csv")["price"].to_numpy()
    assert np.corrcoef(out["prediction"].to_numpy(), price)[0, 1] > 0.9
