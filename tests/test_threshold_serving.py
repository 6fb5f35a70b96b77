"""A calibrated model with a chosen threshold (issue 17), end to end: `mmp train`, then the logged pyfunc, the
server's /predict, /invocations and model page, and `mmp batch-inference` all give the same probabilities and
apply the same threshold, proved with a row whose probability lies between the threshold and 0.5."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import polars as pl
import pytest

from conftest import Project, make_project, printed_run_id, start_server

pytestmark = pytest.mark.slow


def _grid() -> pl.DataFrame:
    """Many plausible passengers: the calibrated probabilities spread finely around any threshold."""
    rows = itertools.product(["1st", "2nd", "3rd"], ["female", "male"], np.arange(0.5, 80, 1.5), [0, 1, 2], [0, 1, 2])
    return pl.DataFrame(
        [dict(zip(["pclass", "sex", "age", "sibsp", "parch"], row, strict=True)) for row in rows]
    ).with_columns(pl.col("age").cast(pl.Float64), pl.col("sibsp").cast(pl.Int64), pl.col("parch").cast(pl.Int64))


def test_threshold_and_calibration_on_every_route(tmp_path: Any) -> None:
    import mlflow

    project: Project = make_project(tmp_path / "project")
    trained = project.mmp("train", "recipe.calibration=sigmoid", "recipe.threshold=auto")
    run_id = printed_run_id(trained.stdout)
    run = project.client().get_run(run_id)
    threshold = run.data.metrics["decision_threshold"]
    assert run.data.params["calibration_decision"].startswith("kept: valid Brier")  # sigmoid helps here (seed 42)
    assert run.data.metrics["valid_brier_calibrated"] < run.data.metrics["valid_brier_uncalibrated"]
    assert 0.05 < threshold < 0.95 and threshold != 0.5
    artifacts = {a.path for a in project.client().list_artifacts(run_id, "plots")}
    assert {"plots/reliability.csv", "plots/reliability.png"} <= artifacts

    mlflow.set_tracking_uri(project.tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    grid = _grid()
    proba = pyfunc.predict(grid.to_pandas(), params={"predict_method": "predict_proba"})["survived"].to_numpy()
    # The decisive rows: the threshold and argmax disagree on them.
    low, high = sorted([threshold, 0.5])
    between = np.flatnonzero((proba > low) & (proba <= high) & (np.abs(proba - 0.5) > 1e-9))
    assert between.size, f"no grid row between the threshold {threshold} and 0.5"
    near = between[np.argsort(np.abs(proba[between] - threshold))[:3]]
    chosen = grid[near.tolist()]
    expected = ["survived" if p > threshold else "died" for p in proba[near]]
    assert expected != ["survived" if p > 0.5 else "died" for p in proba[near]]
    assert list(pyfunc.predict(chosen.to_pandas())) == expected

    server = start_server(project, ["--run-id", run_id, "--workers", "1"])
    try:
        status, _, body = server.request("/predict", chosen.to_dicts())
        assert status == 200, body
        assert [item["prediction"] for item in body["predictions"]] == expected
        served = [item["probabilities"]["survived"] for item in body["predictions"]]
        np.testing.assert_allclose(served, proba[near], rtol=1e-6)  # the calibrated pyfunc's probabilities
        status, _, body = server.request("/invocations", {"dataframe_records": chosen.to_dicts()})
        assert status == 200 and body["predictions"] == expected
        status, _, body = server.request(
            "/invocations", {"dataframe_records": grid.to_dicts(), "params": {"predict_method": "predict_proba"}}
        )
        np.testing.assert_allclose([row["survived"] for row in body["predictions"]], proba, rtol=1e-6)
        status, _, page = server.request("/")
        assert status == 200 and "Decision threshold" in page and str(threshold) in page
        assert "sigmoid" in page
    finally:
        server.stop()

    chosen.write_csv(project.root / "near.csv")
    project.mmp("batch-inference", "--run-id", run_id, "-d", "near.csv", "-o", "out/near.csv")
    batch = pl.read_csv(project.root / "out" / "near.csv")
    assert batch["prediction"].to_list() == expected
    np.testing.assert_allclose(batch["proba_survived"].to_numpy(), proba[near], rtol=1e-6)
