"""`mmp serve-api` under its real WSGI server (gunicorn) on a free loopback port, against a model trained here."""

from __future__ import annotations

import json
import math
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from conftest import BIN, Project, Server, free_port, make_project, start_server

pytestmark = pytest.mark.slow

ROW = {"pclass": "1st", "sex": "female", "age": 29.0, "sibsp": 0, "parch": 0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, str]:
    project = make_project(tmp_path_factory.mktemp("serve") / "project")
    project.dvc("repro")
    run_id = project.runs("train")[0].info.run_id
    return project, run_id


@pytest.fixture(scope="module")
def server(trained: tuple[Project, str]) -> Iterator[Server]:
    project, run_id = trained
    server = start_server(project, ["--run-id", run_id, "--workers", "2", "--max-rows", "500", "--max-body-mb", "0.05"])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pyfunc(trained: tuple[Project, str], server: Server) -> Any:
    import mlflow

    project, _ = trained
    mlflow.set_tracking_uri(project.tracking_uri)
    return mlflow.pyfunc.load_model(server.request("/metadata")[2]["model_uri"])


@pytest.fixture(scope="module")
def rows(trained: tuple[Project, str]) -> pd.DataFrame:
    project, _ = trained
    frame = pd.read_csv(project.root / "data" / "titanic.csv").drop(columns="survived").head(100)
    return frame


def test_health_routes(server: Server) -> None:
    for path in ("/ping", "/health"):
        assert server.request(path)[0] == 200
    status, _, body = server.request("/ready")
    assert status == 200 and body["status"] == "ready"
    status, _, body = server.request("/version")
    assert status == 200 and body["mmp"] and body["packages"]["xgboost"]


def test_metadata(server: Server, trained: tuple[Project, str]) -> None:
    status, _, body = server.request("/metadata")
    assert status == 200
    assert body["run_id"] == trained[1]
    assert body["model_class"] == "xgboost.XGBClassifier" and body["recipe"] == "xgb-baseline"
    assert body["metrics"]["test_roc_auc"] >= 0.8
    schema = {column["name"]: column for column in body["input_schema"]}
    assert schema["sex"]["categories"] == ["female", "male"] and schema["age"]["type"] == "number"
    assert body["top_features"][0]["feature"] in ("sex", "pclass")


@pytest.mark.parametrize("form", ["dataframe_split", "dataframe_records", "instances", "inputs_columns", "inputs_rows"])
def test_invocations_match_pyfunc(server: Server, pyfunc: Any, rows: pd.DataFrame, form: str) -> None:
    records = json.loads(rows.to_json(orient="records"))
    payload = {
        "dataframe_split": {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs_columns": {"inputs": {column: json.loads(rows[column].to_json(orient="values")) for column in rows}},
        "inputs_rows": {"inputs": records},
    }[form]
    status, _, body = server.request("/invocations", payload)
    assert status == 200, body
    assert body["predictions"] == list(pyfunc.predict(rows))


def test_invocations_predict_proba_and_csv(server: Server, pyfunc: Any, rows: pd.DataFrame) -> None:
    payload = {
        "dataframe_records": json.loads(rows.to_json(orient="records")),
        "params": {"predict_method": "predict_proba"},
    }
    status, _, body = server.request("/invocations", payload)
    expected = pyfunc.predict(rows, params={"predict_method": "predict_proba"})
    assert status == 200
    assert [p["survived"] for p in body["predictions"]] == pytest.approx(list(expected["survived"]), abs=1e-6)
    status, _, body = server.request("/invocations", rows.to_csv(index=False), "text/csv")
    assert status == 200 and body["predictions"] == list(pyfunc.predict(rows))


def test_predict_one_and_many(server: Server) -> None:
    status, head, body = server.request("/predict", ROW, headers={"X-Request-ID": "abc-123"})
    assert status == 200 and head["X-Request-ID"] == "abc-123"
    assert body["prediction"] == "survived"
    assert set(body["probabilities"]) == {"died", "survived"}
    assert sum(body["probabilities"].values()) == pytest.approx(1.0)
    man = {**ROW, "sex": "male", "pclass": "3rd", "age": 40}
    status, _, body = server.request("/predict", [ROW, man, ROW])
    assert status == 200
    assert [p["prediction"] for p in body["predictions"]] == ["survived", "died", "survived"]


def test_unseen_category_is_handled(server: Server) -> None:
    status, _, body = server.request("/predict", {**ROW, "pclass": "crew"})
    assert status == 200 and body["prediction"] in ("survived", "died")


def test_explain(server: Server) -> None:
    status, _, body = server.request("/explain?top_k=2", [ROW])
    assert status == 200
    item = body["explanations"][0]
    assert set(item["contributions"]) == set(ROW)
    assert [t["feature"] for t in item["top"]] == sorted(
        item["contributions"], key=lambda f: -abs(item["contributions"][f])
    )[:2]
    margin = item["base_value"] + sum(item["contributions"].values())
    assert 1 / (1 + math.exp(-margin)) == pytest.approx(item["probabilities"]["survived"], abs=1e-4)


BAD = {
    "missing column": ({k: v for k, v in ROW.items() if k != "age"}, 400, ["Missing column 'age'"]),
    "unknown column": ({**ROW, "cabin": "C85"}, 400, ["Unknown column(s) 'cabin'"]),
    "wrong type": ({**ROW, "age": "abc"}, 400, ["Column 'age' must be a number", "'abc'"]),
    "boolean for a number": ({**ROW, "sibsp": True}, 400, ["Column 'sibsp' must be a number"]),
    "beyond float32": ({**ROW, "age": 1e39}, 400, ["Column 'age' must be within the model's float32 range"]),
    "not a record": ("[1, 2]", 400, ["body item 0 must be an object"]),
    "not JSON": ("{not json", 400, ["not valid JSON"]),
    "empty list": ([], 400, ["No rows to score"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_get_4xx(server: Server, case: str) -> None:
    body, status, fragments = BAD[case]
    got, _, answer = server.request("/predict", body)
    assert got == status, answer
    assert answer["error_code"] == "BAD_REQUEST"
    for fragment in fragments:
        assert fragment in answer["message"]


def test_mlflow_errors(server: Server) -> None:
    status, _, body = server.request("/invocations", {"dataframe_records": [ROW], "instances": [ROW]})
    assert status == 400 and "exactly one of" in body["message"]
    status, _, body = server.request("/invocations", {"dataframe_records": [ROW], "params": {"predict_method": "x"}})
    assert status == 400 and "predict_method" in body["message"]
    status, _, body = server.request("/invocations", "pclass=1st", "application/x-www-form-urlencoded")
    assert status == 415 and body["error_code"] == "BAD_REQUEST"
    status, _, body = server.request("/predict", json.dumps(ROW), "text/plain")
    assert status == 415


def test_limits(server: Server) -> None:
    status, _, body = server.request("/predict", [ROW] * 501)
    assert status == 400 and "limit is 500" in body["message"]
    status, _, body = server.request("/predict", [ROW] * 2000)  # about 130 kB > 0.05 MB
    assert status == 413 and body["error_code"] == "REQUEST_TOO_LARGE"


def test_server_survives_and_logs(server: Server) -> None:
    for body in ("", "\x00\xff", "[" * 5000, '{"a":' * 100):
        status = server.request("/predict", body)[0]
        assert 400 <= status < 500
    assert server.request("/ping")[0] == 200
    assert server.process.poll() is None
    lines = [json.loads(line) for line in server.log_path.read_text().splitlines() if line.startswith('{"request_id"')]
    assert any(line["request_id"] == "abc-123" and line["path"] == "/predict" for line in lines)
    assert all(line["status"] < 500 for line in lines)


def test_bearer_token(trained: tuple[Project, str]) -> None:
    project, run_id = trained
    server = start_server(project, ["--run-id", run_id, "--workers", "1"], env={"MMP_API_TOKEN": "s3cret-token"})
    try:
        assert server.request("/predict", ROW)[0] == 401
        assert server.request("/predict", ROW, headers={"Authorization": "Bearer wrong"})[0] == 401
        assert server.request("/predict", ROW, headers={"Authorization": "Bearer s3cret-token"})[0] == 200
        assert server.request("/ping")[0] == 200  # liveness stays open
    finally:
        server.stop()
    assert "s3cret-token" not in server.log_path.read_text()


def test_unknown_run_fails_clearly(trained: tuple[Project, str]) -> None:
    project, _ = trained
    result = project.mmp("serve-api", "--run-id", "0" * 32, "--port", str(free_port()), check=False)
    assert result.returncode != 0
    assert "mmp: error: No run '00000000000000000000000000000000'" in result.stderr
    assert "Traceback" not in result.stderr


def test_mlflow_models_serve_interop(trained: tuple[Project, str], server: Server, rows: pd.DataFrame) -> None:
    """The same model also serves with MLflow's own server, with the same predictions."""
    project, _ = trained
    model_uri = server.request("/metadata")[2]["model_uri"]
    port = free_port()
    log_path = project.root / "mlflow-serve.log"
    process = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            model_uri,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=project.root,
        env={**project.env, "MLFLOW_TRACKING_URI": project.tracking_uri},
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )
    mlflow_server = Server(process, port, log_path)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, log_path.read_text()
            try:
                if mlflow_server.request("/ping")[0] == 200:
                    break
            except OSError:
                time.sleep(0.5)
        payload = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        theirs = mlflow_server.request("/invocations", payload)
        ours = server.request("/invocations", payload)
        assert theirs[0] == ours[0] == 200, theirs
        assert theirs[2]["predictions"] == ours[2]["predictions"]
    finally:
        mlflow_server.stop()
