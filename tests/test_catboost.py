"""CatBoost, the fourth library, end to end: one adapter module and one recipe, nothing else.

The same checks as the other libraries: metric floors on the three bundled data sets, a logged model that
predicts raw rows, batch inference and a served model. SHAP additivity is in tests/test_explain.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from conftest import Project, Server, make_project, start_server

pytestmark = pytest.mark.slow

FLOORS = {"titanic": ("roc_auc", 0.80), "penguins": ("accuracy", 0.95), "diamonds": ("r2", 0.95)}


def titanic_run(project: Project) -> Any:
    """The newest CatBoost train run on titanic (a later experiment may be restored from DVC's run cache)."""
    return next(
        run
        for run in project.runs("train")
        if run.data.tags["mmp.data"] == "titanic" and run.data.tags["mmp.recipe"] == "catboost-baseline"
    )


@pytest.fixture(scope="module")
def catboost_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    project = make_project(tmp_path_factory.mktemp("catboost") / "project")
    project.dvc("exp", "run", "-S", "recipe=catboost-baseline")
    return project


def test_dvc_trains_and_explains_catboost(catboost_project: Project) -> None:
    project = catboost_project
    assert project.metrics()["test"]["roc_auc"] >= 0.80
    info = json.loads((project.root / "models" / "model_info.json").read_text())
    assert info["class"] == "catboost.CatBoostClassifier" and info["file"] == "model.cbm"
    importance = json.loads((project.root / "explain" / "shap_importance.json").read_text())
    assert importance["explainer"] == "catboost.ShapValues"
    assert "sex" in list(importance["mean_abs_shap"])[:3]
    train = project.runs("train")[0]
    assert train.info.status == "FINISHED"
    assert train.data.tags["mmp.model_class"] == "catboost.CatBoostClassifier"
    assert not (project.root / "catboost_info").exists()  # CatBoost writes no files of its own


@pytest.mark.parametrize("dataset", ["penguins", "diamonds"])
def test_catboost_floors_on_every_task(catboost_project: Project, dataset: str) -> None:
    project = catboost_project
    project.dvc("exp", "run", "-S", "recipe=catboost-baseline", "-S", f"data={dataset}")
    metric, floor = FLOORS[dataset]
    assert project.metrics()["test"][metric] >= floor


def test_logged_catboost_model_predicts_raw_rows(catboost_project: Project) -> None:
    import mlflow

    project = catboost_project
    run = titanic_run(project)
    mlflow.set_tracking_uri(project.tracking_uri)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    rows = pd.read_csv(project.root / "data" / "titanic.csv").drop(columns=["survived"]).head(20)
    rows.loc[0, "age"] = None  # a missing value, as the model was trained with
    labels = model.predict(rows)
    assert set(labels) <= {"survived", "died"} and len(labels) == 20
    proba = model.predict(rows, params={"predict_method": "predict_proba"})
    assert list(proba.columns) == ["died", "survived"]
    assert proba.sum(axis=1).round(6).eq(1.0).all()


@pytest.fixture(scope="module")
def catboost_server(catboost_project: Project) -> Iterator[tuple[Server, str]]:
    project = catboost_project
    run_id = titanic_run(project).info.run_id
    server = start_server(project, ["--run-id", run_id, "--workers", "1"])
    try:
        yield server, run_id
    finally:
        server.stop()


def test_catboost_serves_and_batch_predicts(catboost_project: Project, catboost_server: tuple[Server, str]) -> None:
    server, run_id = catboost_server
    record = {"pclass": "1st", "sex": "female", "age": 29, "sibsp": 0, "parch": 0}
    status, _, body = server.request("/predict", record)
    assert status == 200, body
    assert body["prediction"] in ("survived", "died")
    status, _, body = server.request("/explain", record)
    assert status == 200, body
    item = body["explanations"][0]
    assert set(item["contributions"]) >= {"sex", "pclass", "age"}

    project = catboost_project
    out = project.root / "catboost-predictions.csv"
    project.mmp("batch-inference", "--run-id", run_id, "-d", "data/titanic.csv", "-o", str(out))
    predictions = pd.read_csv(out)
    assert len(predictions) == len(pd.read_csv(project.root / "data" / "titanic.csv"))
    truth = pd.read_csv(project.root / "data" / "titanic.csv")["survived"]
    assert (predictions["prediction"] == truth).mean() >= 0.75
