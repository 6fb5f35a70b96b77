"""The HTTP layer in process, through Flask's test client: every route and every error class, with the
status code and the JSON body. No server process, no MLflow: the model folders that
:func:`mmp.inference.source.load_local` reads are written by hand from small models fitted here.
"""

from __future__ import annotations

import io
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from mmp.config import DataConfig, PreprocessingConfig, SplitConfig
from mmp.data import clean_and_check, feature_columns, load, split
from mmp.data.preprocessing import Preprocessor
from mmp.evaluation.drift import save_reference, training_reference
from mmp.explanation.shap import raw_output
from mmp.inference.http.app import MODEL_DIR_ENV, TOKEN_ENV, create_app
from mmp.inference.http.settings import ServeSettings
from mmp.inference.source import SOURCE_FILE, load_local
from mmp.model.predictor import Predictor
from mmp.model.registry import MODELS, encoding_plan, resolve_params
from mmp.model.spec import FitData
from mmp.model.trained import MODEL_INFO_FILE, TrainedModel, fit

DATA = Path(__file__).resolve().parents[1] / "data"
TOKEN = "s3cret-token"
ROUTES = {
    ("/invocations", "post"),
    ("/predict", "post"),
    ("/explain", "post"),
    ("/health", "get"),
    ("/ping", "get"),
    ("/ready", "get"),
    ("/version", "get"),
    ("/metadata", "get"),
    ("/openapi.json", "get"),
    ("/metrics", "get"),
    ("/drift", "get"),
    ("/", "get"),
}

# name: (model family, data set, target, rows sampled, hyperparameters). One thread: fits in well under 1 s.
SETUPS: dict[str, tuple[str, str, str, int | None, dict[str, Any]]] = {
    "titanic": ("xgboost", "titanic", "survived", None, {"n_estimators": 40, "max_depth": 3, "n_jobs": 1}),
    "diamonds": ("lightgbm", "diamonds", "price", 2_000, {"n_estimators": 40, "num_leaves": 15, "n_jobs": 1}),
    "penguins": ("linear", "penguins", "species", None, {"max_iter": 500}),
    "forest": ("random_forest", "titanic", "survived", None, {"n_estimators": 10, "max_depth": 4, "n_jobs": 1}),
}
# One valid record per model, from the bundled data.
RECORDS: dict[str, dict[str, Any]] = {
    "titanic": {"pclass": "1st", "sex": "female", "age": 29.0, "sibsp": 0, "parch": 0},
    "diamonds": {
        "carat": 0.7,
        "cut": "Ideal",
        "color": "E",
        "clarity": "VS1",
        "depth": 61.5,
        "table": 56.0,
        "x": 5.7,
        "y": 5.72,
        "z": 3.5,
    },
    "penguins": {
        "island": "Biscoe",
        "bill_length_mm": 48.0,
        "bill_depth_mm": 15.0,
        "flipper_length_mm": 220.0,
        "body_mass_g": 5200.0,
        "sex": "male",
        "year": 2008,
    },
}
RECORDS["forest"] = RECORDS["titanic"]
ROW = RECORDS["titanic"]
MAN = {**ROW, "sex": "male", "pclass": "3rd", "age": 40}


# --------------------------------------------------------------------------- model folders


def write_model_folder(dest: Path, name: str) -> Path:
    """Fit a small model and lay it out as MLflow downloads it: MLmodel, artifacts/, mmp_source.json."""
    family, dataset, target, sample, params = SETUPS[name]
    data = DataConfig(name=dataset, path=str(DATA / f"{dataset}.csv"), target=target)
    frame = load(data, DATA / f"{dataset}.csv")
    if sample:
        frame = frame.sample(sample, seed=0)
    cleaned = clean_and_check(frame, data, "auto")
    parts = split(cleaned.frame, target, cleaned.task, SplitConfig(), 0)
    spec = MODELS[family]
    pre = Preprocessor.fit(
        parts["train"],
        target=target,
        task=cleaned.task,
        classes=cleaned.classes,
        id_columns=[],
        features=feature_columns(cleaned.frame, data),
        categorical_columns=[],
        plan=encoding_plan(spec, PreprocessingConfig()),
    )
    x = {k: pre.transform(v) for k, v in parts.items()}
    y = {k: pre.encode_target(v[target]) for k, v in parts.items()}
    fit_data = FitData(x["train"], y["train"], x["valid"], y["valid"], pre.categorical_indices, 10)
    result = fit(spec, cleaned.task, resolve_params(spec, cleaned.task, params, 0), fit_data)
    means = np.nan_to_num(np.nanmean(x["train"], axis=0)).tolist()  # as the train stage saves them
    model = TrainedModel(spec, cleaned.task, result.estimator, cleaned.classes or [], means)

    artifacts = dest / "artifacts"
    artifacts.mkdir(parents=True)
    pre.save(artifacts / "preprocessing.json")
    model.save(artifacts / "model")
    # The training distribution, as the train stage saves it (/drift).
    output = Predictor(pre, model).predict_encoded(x["train"]).output
    save_reference(artifacts / "model", training_reference(Predictor(pre, model), parts["train"], output))
    mlmodel = {
        "flavors": {
            "python_function": {
                "artifacts": {
                    "preprocessing": {"path": "artifacts/preprocessing.json"},
                    "model": {"path": "artifacts/model"},
                }
            }
        }
    }
    (dest / "MLmodel").write_text(yaml.safe_dump(mlmodel), encoding="utf-8")
    card = {
        "model_uri": f"models:/m-{name}",
        "run_id": f"run-{name}",
        "model_class": model.class_name,
        "recipe": f"{family}-http-test",
        "data": dataset,
        "task": cleaned.task,
        "metrics": {"test_score": 0.875, "train_score": 0.9},
        "top_features": [[pre.input_columns[0], 1.25], [pre.input_columns[1], 0.5]],
        "tags": {},
    }
    (dest / SOURCE_FILE).write_text(json.dumps(card), encoding="utf-8")
    return dest


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("http-models")
    return {name: write_model_folder(root / name, name) for name in SETUPS}


Factory = Callable[..., FlaskClient]


@pytest.fixture
def make_client(model_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Factory:
    """A test client of a fresh app: ``make_client("penguins", ServeSettings(...), token="...")``."""

    def make(
        name: str = "titanic",
        settings: ServeSettings | None = None,
        token: str | None = None,
        dirs: dict[str, Path] | None = None,
    ) -> FlaskClient:
        monkeypatch.delenv(MODEL_DIR_ENV, raising=False)
        if token:
            monkeypatch.setenv(TOKEN_ENV, token)
        else:
            monkeypatch.delenv(TOKEN_ENV, raising=False)
        app = create_app((dirs or model_dirs)[name], settings or ServeSettings())
        app.testing = False  # errors go through the app's handlers, as in production
        return app.test_client()

    return make


@pytest.fixture
def client(make_client: Factory) -> FlaskClient:
    return make_client("titanic")


def assert_error(response: TestResponse, status: int, *fragments: str, code: str = "BAD_REQUEST") -> dict[str, Any]:
    """A JSON error body with error_code and message, the message naming the problem, no stack trace."""
    text = response.get_data(as_text=True)
    assert response.status_code == status, text
    assert response.mimetype == "application/json"
    assert "Traceback" not in text
    body = response.get_json()
    assert set(body) == {"error_code", "message"}
    assert body["error_code"] == code
    assert body["message"]
    for fragment in fragments:
        assert fragment in body["message"], body["message"]
    return body


def ok(response: TestResponse) -> Any:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.get_json()


def titanic_rows(n: int) -> list[dict[str, Any]]:
    """The first n passengers as JSON records (age may be null)."""
    return pl.read_csv(DATA / "titanic.csv").drop("survived").head(n).to_dicts()


# --------------------------------------------------------------------------- GET routes


def test_health_ping_ready_version(client: FlaskClient) -> None:
    for path in ("/health", "/ping"):
        assert ok(client.get(path)) == {"status": "ok"}
    assert ok(client.get("/ready")) == {"status": "ready", "model_uri": "models:/m-titanic"}
    body = ok(client.get("/version"))
    assert body["model_uri"] == "models:/m-titanic"
    assert body["packages"]["xgboost"] and body["packages"]["polars"] and body["packages"]["scikit-learn"]
    assert body["mmp"] == body["packages"].get("mmp")


@pytest.mark.parametrize(
    ("name", "task", "classes", "model_class"),
    [
        ("titanic", "binary", ["died", "survived"], "xgboost.XGBClassifier"),
        ("diamonds", "regression", None, "lightgbm.LGBMRegressor"),
        ("penguins", "multiclass", ["Adelie", "Chinstrap", "Gentoo"], "sklearn.LogisticRegression"),
    ],
)
def test_metadata(make_client: Factory, name: str, task: str, classes: list[str] | None, model_class: str) -> None:
    body = ok(make_client(name).get("/metadata"))
    assert body["task"] == task and body["classes"] == classes
    assert body["run_id"] == f"run-{name}" and body["model_uri"] == f"models:/m-{name}"
    assert body["model_class"].split(".")[0] == model_class.split(".")[0]
    assert body["target"] == SETUPS[name][2]
    assert body["metrics"] == {"test_score": 0.875, "train_score": 0.9}
    assert body["top_features"][0]["mean_abs_shap"] == 1.25
    schema = {column["name"]: column for column in body["input_schema"]}
    assert set(schema) == set(RECORDS[name])
    for column, value in RECORDS[name].items():
        assert schema[column]["type"] == ("string" if isinstance(value, str) else "number")
        assert ("categories" in schema[column]) == isinstance(value, str)


def test_metadata_schema_of_titanic(client: FlaskClient) -> None:
    schema = {column["name"]: column for column in ok(client.get("/metadata"))["input_schema"]}
    # One null policy: a categorical column takes null (as an unseen category); XGBoost takes NaN anywhere
    assert schema["sex"] == {"name": "sex", "type": "string", "nullable": True, "categories": ["female", "male"]}
    assert schema["age"] == {"name": "age", "type": "number", "nullable": True}  # titanic has missing ages
    assert schema["sibsp"]["nullable"] is True


def test_openapi_document(client: FlaskClient) -> None:
    document = ok(client.get("/openapi.json"))
    assert document["openapi"].startswith("3.")
    assert {(path, method) for path, item in document["paths"].items() for method in item} == ROUTES
    record = document["components"]["schemas"]["Record"]
    assert set(record["properties"]) == set(ROW)
    try:
        from openapi_spec_validator import validate
    except ImportError:  # pragma: no cover - a dev dependency
        return
    validate(document)


def test_openapi_routes_are_served(client: FlaskClient) -> None:
    """Every documented route answers something other than 404/405 for its method."""
    for path, method in ROUTES:
        response = client.open(path, method=method.upper(), json=ROW if method == "post" else None)
        assert response.status_code not in (404, 405), (path, method)


def test_page_shows_the_model_card(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert page.lstrip().lower().startswith("<!doctype html")
    for text in ("run-titanic", "models:/m-titanic", "xgboost-http-test", "survived", 'id="predict-form"'):
        assert text in page
    assert 'id="api-token"' not in page  # no token field when none is required


# --------------------------------------------------------------------------- /predict


def test_predict_one_record(client: FlaskClient) -> None:
    response = client.post("/predict", json=ROW)
    body = ok(response)
    assert set(body) == {"prediction", "probabilities"}
    assert body["prediction"] == "survived"
    assert set(body["probabilities"]) == {"died", "survived"}
    assert sum(body["probabilities"].values()) == pytest.approx(1.0)
    assert body["probabilities"]["survived"] > 0.5


def test_predict_a_list(client: FlaskClient) -> None:
    body = ok(client.post("/predict", json=[ROW, MAN, ROW]))
    assert list(body) == ["predictions"]
    assert [p["prediction"] for p in body["predictions"]] == ["survived", "died", "survived"]
    assert body["predictions"][0] == ok(client.post("/predict", json=ROW))


def test_predict_takes_what_the_schema_allows(client: FlaskClient) -> None:
    """A null where training had nulls, an unseen category, ints for floats, a charset in the type."""
    for record in ({**ROW, "age": None}, {**ROW, "pclass": "crew"}, {**ROW, "age": 29}):
        assert ok(client.post("/predict", json=record))["prediction"] in ("died", "survived")
    response = client.post("/predict", data=json.dumps(ROW), content_type="application/json; charset=utf-8")
    assert ok(response)["prediction"] == "survived"


def test_predict_regression_and_multiclass(make_client: Factory) -> None:
    body = ok(make_client("diamonds").post("/predict", json=[RECORDS["diamonds"]] * 2))
    values = [p["prediction"] for p in body["predictions"]]
    assert set(body["predictions"][0]) == {"prediction"}
    assert values[0] == values[1] and 500 < values[0] < 20_000
    body = ok(make_client("penguins").post("/predict", json=RECORDS["penguins"]))
    assert body["prediction"] == "Gentoo"
    assert set(body["probabilities"]) == {"Adelie", "Chinstrap", "Gentoo"}
    assert sum(body["probabilities"].values()) == pytest.approx(1.0)


# --------------------------------------------------------------------------- /invocations


def invocation_payloads(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    columns = list(rows[0])
    return {
        "dataframe_split": {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in rows]}},
        "dataframe_records": {"dataframe_records": rows},
        "instances": {"instances": rows},
        "inputs_rows": {"inputs": rows},
        "inputs_columns": {"inputs": {c: [r[c] for r in rows] for c in columns}},
    }


@pytest.mark.parametrize("form", list(invocation_payloads([ROW])))
def test_invocations_every_mlflow_format(client: FlaskClient, form: str) -> None:
    rows = titanic_rows(20)
    expected = [p["prediction"] for p in ok(client.post("/predict", json=rows))["predictions"]]
    body = ok(client.post("/invocations", json=invocation_payloads(rows)[form]))
    assert body == {"predictions": expected}
    assert set(expected) == {"died", "survived"}


def test_invocations_predict_proba(client: FlaskClient) -> None:
    rows = titanic_rows(10)
    body = ok(
        client.post("/invocations", json={"dataframe_records": rows, "params": {"predict_method": "predict_proba"}})
    )
    by_predict = ok(client.post("/predict", json=rows))["predictions"]
    assert body["predictions"] == [p["probabilities"] for p in by_predict]
    body = ok(client.post("/invocations", json={"dataframe_records": rows, "params": {"predict_method": "predict"}}))
    assert body["predictions"] == [p["prediction"] for p in by_predict]


def test_invocations_csv(client: FlaskClient) -> None:
    rows = titanic_rows(15)
    csv = pl.DataFrame(rows).write_csv()
    body = ok(client.post("/invocations", data=csv, content_type="text/csv"))
    assert body == ok(client.post("/invocations", json={"dataframe_records": rows}))


def test_invocations_large_dataframe_split_matches_the_row_path(client: FlaskClient) -> None:
    """1,000 rows and more take the column-wise fast path; its answers are the row path's."""
    rows = titanic_rows(1_200)
    fast = ok(client.post("/invocations", json=invocation_payloads(rows)["dataframe_split"]))
    slow = ok(client.post("/invocations", json={"dataframe_records": rows}))
    assert len(fast["predictions"]) == 1_200 and fast == slow
    params = {"predict_method": "predict_proba"}
    split_body = {**invocation_payloads(rows)["dataframe_split"], "params": params}
    fast = ok(client.post("/invocations", json=split_body))
    slow = ok(client.post("/invocations", json={"dataframe_records": rows, "params": params}))
    for a, b in zip(fast["predictions"], slow["predictions"], strict=True):
        assert a == pytest.approx(b, abs=1e-6)


def test_invocations_large_dataframe_split_errors_name_the_problem(client: FlaskClient) -> None:
    rows = titanic_rows(1_100)
    rows[1_050] = {**rows[1_050], "sibsp": "abc"}
    response = client.post("/invocations", json=invocation_payloads(rows)["dataframe_split"])
    assert_error(response, 400, "Column 'sibsp' must be a number", "row 1050", "'abc'")


@pytest.mark.parametrize("name", ["diamonds", "penguins"])
def test_invocations_regression_and_multiclass(make_client: Factory, name: str) -> None:
    client = make_client(name)
    rows = [RECORDS[name]] * 3
    body = ok(client.post("/invocations", json={"dataframe_records": rows}))
    assert len(body["predictions"]) == 3
    proba = ok(client.post("/invocations", json={"instances": rows, "params": {"predict_method": "predict_proba"}}))
    if name == "diamonds":  # predict_proba of a regressor: the values
        assert proba == body and all(isinstance(v, float) for v in body["predictions"])
    else:
        assert body["predictions"] == ["Gentoo"] * 3
        assert set(proba["predictions"][0]) == {"Adelie", "Chinstrap", "Gentoo"}


# --------------------------------------------------------------------------- /explain


def test_explain_top_k(client: FlaskClient) -> None:
    body = ok(client.post("/explain?top_k=2", json=[ROW, MAN]))
    assert body["explainer"] and body["output_space"]
    assert len(body["explanations"]) == 2
    for item in body["explanations"]:
        assert set(item["contributions"]) == set(ROW)
        assert len(item["top"]) == 2
        ranked = sorted(item["contributions"], key=lambda f: -abs(item["contributions"][f]))
        assert [t["feature"] for t in item["top"]] == ranked[:2]
        margin = item["base_value"] + sum(item["contributions"].values())
        assert 1 / (1 + math.exp(-margin)) == pytest.approx(item["probabilities"]["survived"], abs=1e-4)
    assert [item["prediction"] for item in body["explanations"]] == ["survived", "died"]
    # a single record is explained too, with the server's default top_k (5, all titanic features)
    body = ok(client.post("/explain", json=ROW))
    assert len(body["explanations"]) == 1 and len(body["explanations"][0]["top"]) == 5


@pytest.mark.parametrize("name", ["diamonds", "penguins"])
def test_explain_regression_and_multiclass(make_client: Factory, model_dirs: dict[str, Path], name: str) -> None:
    record = RECORDS[name]
    body = ok(make_client(name).post("/explain?top_k=2", json=[record]))
    item = body["explanations"][0]
    assert set(item["contributions"]) == set(record)
    assert len(item["top"]) == 2
    predictor = load_local(model_dirs[name]).predictor
    raw = raw_output(predictor.model, predictor.preprocessor.encode_rows([record]))[0]
    if name == "penguins":
        assert item["explained_class"] == item["prediction"] == "Gentoo"
        raw = raw[predictor.classes.index("Gentoo")]
    else:
        assert "explained_class" not in item
        assert item["prediction"] == pytest.approx(float(raw), rel=1e-5)
    additive = item["base_value"] + sum(item["contributions"].values())
    assert additive == pytest.approx(float(raw), rel=1e-4, abs=1e-3)


# --------------------------------------------------------------------------- client errors

BAD_RECORDS: dict[str, tuple[Any, list[str]]] = {
    "missing column": ({k: v for k, v in ROW.items() if k != "age"}, ["Missing column 'age'"]),
    "unknown column": ({**ROW, "cabin": "C85"}, ["Unknown column(s) 'cabin'", "the model takes"]),
    "wrong type": ({**ROW, "age": "abc"}, ["Column 'age' must be a number", "'abc'"]),
    "boolean for a number": ({**ROW, "sibsp": True}, ["Column 'sibsp' must be a number"]),
    "object for a category": ({**ROW, "sex": {"a": 1}}, ["Column 'sex' must be a text value"]),
    "beyond float32": ({**ROW, "age": 1e39}, ["Column 'age' must be within the model's float32 range", "1e+39"]),
    "huge integer": ({**ROW, "sibsp": 10**40}, ["Column 'sibsp' must be within the model's float32 range"]),
    "empty list": ([], ["No rows to score"]),
    "not a record": ([1, 2], ["body item 0 must be an object"]),
    "not a record or list": ("just text", ["one record (a JSON object) or a list"]),
    "bad second row": ([ROW, {**MAN, "age": "x"}], ["Column 'age' must be a number (row 1)"]),
}


@pytest.mark.parametrize("route", ["/predict", "/explain"])
@pytest.mark.parametrize("case", list(BAD_RECORDS))
def test_bad_records_get_400(client: FlaskClient, route: str, case: str) -> None:
    payload, fragments = BAD_RECORDS[case]
    assert_error(client.post(route, json=payload), 400, *fragments)


@pytest.mark.parametrize("case", ["missing column", "unknown column", "wrong type", "beyond float32"])
def test_bad_records_get_400_from_invocations(client: FlaskClient, case: str) -> None:
    record, fragments = BAD_RECORDS[case]
    assert_error(client.post("/invocations", json={"dataframe_records": [record]}), 400, *fragments)


def test_infinite_numbers_are_rejected(client: FlaskClient) -> None:
    # JSON has no infinity: the parser rejects 1e999 (it overflows) and Infinity; a CSV body can carry inf
    for text in ('{"pclass": "1st", "sex": "female", "age": 1e999, "sibsp": 0, "parch": 0}', '{"age": Infinity}'):
        response = client.post("/predict", data=text, content_type="application/json")
        assert_error(response, 400, "not valid JSON")
    csv = "pclass,sex,age,sibsp,parch\n1st,female,inf,0,0\n"
    assert_error(client.post("/invocations", data=csv, content_type="text/csv"), 400, "Column 'age' must be finite")


def test_unknown_columns_can_be_ignored(make_client: Factory) -> None:
    client = make_client("titanic", ServeSettings(unknown_columns="ignore"))
    extra = {**ROW, "cabin": "C85", "name": "Allen"}
    assert ok(client.post("/predict", json=extra))["prediction"] == "survived"
    assert ok(client.post("/invocations", json={"dataframe_records": [extra]})) == {"predictions": ["survived"]}
    assert_error(client.post("/predict", json={"cabin": "C85"}), 400, "Missing column")  # still required


def test_body_not_json(client: FlaskClient) -> None:
    for route in ("/predict", "/explain", "/invocations"):
        response = client.post(route, data="{not json", content_type="application/json")
        assert_error(response, 400, "not valid JSON")


def test_garbage_bodies_get_4xx(client: FlaskClient) -> None:
    bodies = ["", "\x00\xff", "[" * 5000, '{"a":' * 100, "null", "123", '"text"', "{}", "[[]]", "[null]"]
    for route in ("/predict", "/explain", "/invocations"):
        for body in bodies:
            response = client.post(route, data=body, content_type="application/json")
            assert 400 <= response.status_code < 500, (route, body, response.get_data(as_text=True))
            assert_error(response, response.status_code)
    assert ok(client.get("/ping")) == {"status": "ok"}


def test_wrong_content_type_is_415(client: FlaskClient) -> None:
    for route in ("/predict", "/explain"):
        for content_type in ("text/plain", "text/csv", "application/x-www-form-urlencoded"):
            response = client.post(route, data=json.dumps(ROW), content_type=content_type)
            assert_error(response, 415, "not supported", "application/json")
    response = client.post("/invocations", data="pclass=1st", content_type="application/x-www-form-urlencoded")
    assert_error(response, 415, "not supported", "text/csv")
    assert_error(client.post("/invocations", data=json.dumps(ROW)), 415, "not supported")  # no content type


def test_bad_csv(client: FlaskClient) -> None:
    assert_error(client.post("/invocations", data="", content_type="text/csv"), 400)
    missing = "pclass,sex,age\n1st,female,29\n"
    assert_error(client.post("/invocations", data=missing, content_type="text/csv"), 400, "Missing column 'sibsp'")
    wrong = "pclass,sex,age,sibsp,parch\n1st,female,abc,0,0\n"
    assert_error(client.post("/invocations", data=wrong, content_type="text/csv"), 400, "Column 'age' must be a number")


def test_mlflow_body_errors(client: FlaskClient) -> None:
    cases = [
        ({"dataframe_records": [ROW], "instances": [ROW]}, "exactly one of"),
        ({"records": [ROW]}, "exactly one of"),
        ([ROW], "must be an object with one of"),
        ({"dataframe_split": {"columns": list(ROW)}}, 'dataframe_split must be {"columns"'),
        ({"dataframe_split": {"columns": list(ROW), "data": [[1, 2]]}}, "row 0 must be a list of 5 values"),
        ({"dataframe_split": {"columns": [1, 2], "data": []}}, "columns must be a list of column names"),
        ({"inputs": {"pclass": ["1st"], "age": [1, 2]}}, "map every column to a list of the same length"),
        ({"instances": {"a": 1}, "params": {}}, "instances must be a list of records"),
        ({"dataframe_records": [ROW], "params": [1]}, "params must be a JSON object"),
        ({"dataframe_records": []}, "No rows to score"),
    ]
    for payload, fragment in cases:
        assert_error(client.post("/invocations", json=payload), 400, fragment)


@pytest.mark.parametrize("method", ["x", "predict_log_proba", 1, None])
def test_bad_predict_method(client: FlaskClient, method: Any) -> None:
    payload = {"dataframe_records": [ROW], "params": {"predict_method": method}}
    assert_error(client.post("/invocations", json=payload), 400, "params.predict_method must be one of", repr(method))


def test_body_over_max_body_mb_is_413(make_client: Factory) -> None:
    client = make_client("titanic", ServeSettings(max_body_mb=0.001))  # 1,048 bytes
    assert ok(client.post("/predict", json=ROW))["prediction"] == "survived"
    rows = [ROW] * 100  # about 7 kB of JSON, 2 kB of CSV
    for route, kwargs in [
        ("/predict", {"json": rows}),
        ("/explain", {"json": rows}),
        ("/invocations", {"json": {"dataframe_records": rows}}),
        ("/invocations", {"data": pl.DataFrame(rows).write_csv(), "content_type": "text/csv"}),
    ]:
        response = client.post(route, **kwargs)
        assert_error(response, 413, "larger than the 0.001 MB limit", code="REQUEST_TOO_LARGE")


def test_more_rows_than_max_rows(make_client: Factory) -> None:
    client = make_client("titanic", ServeSettings(max_rows=2))
    assert len(ok(client.post("/predict", json=[ROW, MAN]))["predictions"]) == 2
    for route, payload in [
        ("/predict", [ROW] * 3),
        ("/explain", [ROW] * 3),
        ("/invocations", {"dataframe_records": [ROW] * 3}),
        ("/invocations", invocation_payloads([ROW] * 3)["dataframe_split"]),
    ]:
        assert_error(client.post(route, json=payload), 400, "3 rows in one request; the limit is 2")
    csv = pl.DataFrame([ROW] * 3).write_csv()
    assert_error(client.post("/invocations", data=csv, content_type="text/csv"), 400, "the limit is 2")


def test_large_split_over_max_rows(make_client: Factory) -> None:
    """Over max_rows, a dataframe_split body large enough for the fast path still gets the row limit's 400."""
    client = make_client("titanic", ServeSettings(max_rows=1_000))
    rows = titanic_rows(1_001)
    response = client.post("/invocations", json=invocation_payloads(rows)["dataframe_split"])
    assert_error(response, 400, "1001 rows in one request; the limit is 1000")


def test_large_split_with_a_list_for_a_column_name(client: FlaskClient) -> None:
    columns = [["pclass"], *list(ROW)[1:]]
    payload = {"dataframe_split": {"columns": columns, "data": [list(ROW.values())] * 1_000}}
    assert_error(client.post("/invocations", json=payload), 400, "columns must be a list of column names")


def test_small_split_with_a_list_for_a_column_name(client: FlaskClient) -> None:
    payload = {"dataframe_split": {"columns": [["pclass"], *list(ROW)[1:]], "data": [list(ROW.values())]}}
    assert_error(client.post("/invocations", json=payload), 400, "columns must be a list of column names")


def test_model_that_cannot_be_explained_is_422(
    make_client: Factory, model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """A linear model saved without its train means has no SHAP background: /explain says so, /predict works."""
    folder = tmp_path / "penguins"
    shutil.copytree(model_dirs["penguins"], folder)
    info_file = folder / "artifacts" / "model" / MODEL_INFO_FILE
    info = json.loads(info_file.read_text(encoding="utf-8"))
    info_file.write_text(json.dumps({**info, "feature_means": None}), encoding="utf-8")
    client = make_client("no-means", dirs={"no-means": folder})
    assert_error(client.post("/explain", json=RECORDS["penguins"]), 422, "background", code="NOT_EXPLAINABLE")
    assert ok(client.post("/predict", json=RECORDS["penguins"]))["prediction"] == "Gentoo"


def test_unknown_route_is_404(client: FlaskClient) -> None:
    for path in ("/nope", "/predict/extra", "/v1/models/x:predict"):
        assert_error(client.get(path), 404, code="NOT_FOUND")
    assert_error(client.post("/nope", json=ROW), 404, code="NOT_FOUND")


def test_wrong_method_is_405(client: FlaskClient) -> None:
    for method, path in [("GET", "/predict"), ("GET", "/invocations"), ("GET", "/explain"), ("PUT", "/predict")]:
        assert_error(client.open(path, method=method), 405, code="METHOD_NOT_ALLOWED")
    for path in ("/health", "/metadata", "/"):
        assert_error(client.post(path, json=ROW), 405, code="METHOD_NOT_ALLOWED")


def test_405_names_the_allowed_methods(client: FlaskClient) -> None:
    response = client.get("/predict")
    assert response.status_code == 405
    assert "POST" in response.headers.get("Allow", "")


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "", "1e3", "99999999999999999999", "\u0663"])
def test_explain_top_k_that_is_not_a_whole_number_is_400(client: FlaskClient, value: str) -> None:
    response = client.post("/explain", query_string={"top_k": value}, json=ROW)
    assert_error(response, 400, "top_k must be a whole number")


def test_explain_top_k_zero_and_large(client: FlaskClient) -> None:
    assert ok(client.post("/explain?top_k=0", json=ROW))["explanations"][0]["top"] == []
    assert len(ok(client.post("/explain?top_k=999", json=ROW))["explanations"][0]["top"]) == 5


# --------------------------------------------------------------------------- token and request ids


def test_bearer_token(make_client: Factory) -> None:
    client = make_client("titanic", token=TOKEN)
    good = {"Authorization": f"Bearer {TOKEN}"}
    for route, payload in [("/predict", ROW), ("/explain", ROW), ("/invocations", {"instances": [ROW]})]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}):
            response = client.post(route, json=payload, headers=headers)
            body = assert_error(response, 401, "bearer token is required", code="UNAUTHENTICATED")
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert TOKEN not in json.dumps(body)
        assert client.post(route, json=payload, headers=good).status_code == 200
    assert ok(client.post("/predict", json=ROW, headers={"Authorization": f"bearer {TOKEN} "}))["prediction"]
    # liveness, readiness and the documents stay open
    for path in ("/health", "/ping", "/ready", "/version", "/metadata", "/openapi.json"):
        assert ok(client.get(path))
    page = client.get("/")
    assert page.status_code == 200 and 'id="api-token"' in page.get_data(as_text=True)
    assert TOKEN not in page.get_data(as_text=True)


def test_no_token_when_the_env_is_empty(make_client: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client("titanic")
    monkeypatch.setenv(TOKEN_ENV, TOKEN)  # read once, when the app is built
    assert ok(client.post("/predict", json=ROW))["prediction"] == "survived"


def test_request_id_is_echoed(client: FlaskClient) -> None:
    response = client.post("/predict", json=ROW, headers={"X-Request-ID": "abc-123"})
    assert response.status_code == 200 and response.headers["X-Request-ID"] == "abc-123"
    response = client.post("/predict", json=[], headers={"X-Request-ID": "err-456"})
    assert response.status_code == 400 and response.headers["X-Request-ID"] == "err-456"
    assert client.get("/nope", headers={"X-Request-ID": "nf-789"}).headers["X-Request-ID"] == "nf-789"
    generated = {client.get("/ping").headers["X-Request-ID"] for _ in range(3)}
    assert len(generated) == 3 and all(len(value) == 32 for value in generated)


def test_access_log_has_one_line_per_request(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="mmp.access"):
        client.post("/predict", json=[ROW, MAN], headers={"X-Request-ID": "log-1"})
        client.post("/predict", json=[], headers={"X-Request-ID": "log-2"})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "mmp.access"]
    assert [(line["request_id"], line["status"], line["rows"]) for line in lines] == [
        ("log-1", 200, 2),
        ("log-2", 400, 0),
    ]
    assert all(line["path"] == "/predict" and line["method"] == "POST" for line in lines)


def test_csv_body_is_read_as_bytes(client: FlaskClient) -> None:
    """A CSV with a UTF-8 BOM and Windows line ends still scores."""
    csv = "\ufeffpclass,sex,age,sibsp,parch\r\n1st,female,29,0,0\r\n"
    response = client.post("/invocations", data=io.BytesIO(csv.encode()), content_type="text/csv")
    assert ok(response) == {"predictions": ["survived"]}


# --------------------------------------------------------------------------- issue 14: values at the edges


def strict_copy(model_dirs: dict[str, Path], tmp_path: Path, column: str = "sibsp") -> dict[str, Path]:
    """The random forest with no imputer for ``column``: a model that cannot take a missing value there."""
    folder = tmp_path / "strict"
    shutil.copytree(model_dirs["forest"], folder)
    state_file = folder / "artifacts" / "preprocessing.json"
    state = json.loads(state_file.read_text(encoding="utf-8"))
    for item in state["columns"]:
        if item["name"] == column:
            item.update(impute=None, nullable=False)
    state_file.write_text(json.dumps(state), encoding="utf-8")
    return {"strict": folder}


def forest_split(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return invocation_payloads(rows)["dataframe_split"]


@pytest.mark.parametrize("name", ["titanic", "forest"])
def test_numbers_beyond_float32_are_400_on_every_route(make_client: Factory, name: str) -> None:
    """1e39 is finite JSON but infinite in float32: a 400 naming the column, never a 500 (issue 14)."""
    client = make_client(name)
    bad = {**ROW, "age": 1e39}
    many = [*titanic_rows(1_100)]
    many[700] = {**many[700], "age": -1e39}
    cases = [
        ("/predict", {"json": bad}),
        ("/explain", {"json": [ROW, bad]}),
        ("/invocations", {"json": {"dataframe_records": [bad]}}),
        ("/invocations", {"json": forest_split(many)}),  # the column-wise fast path
        ("/invocations", {"data": "pclass,sex,age,sibsp,parch\n1st,female,1e39,0,0\n", "content_type": "text/csv"}),
    ]
    for route, kwargs in cases:
        assert_error(client.post(route, **kwargs), 400, "Column 'age'", "float32")
    edge = {**ROW, "age": 3.4e38}  # within range: scored
    assert ok(client.post("/predict", json=edge))["prediction"] in ("died", "survived")
    assert ok(client.post("/explain", json=edge))["explanations"]


def test_scaled_overflow_is_400(make_client: Factory) -> None:
    """A linear model scales its inputs: a value inside float32 that overflows once scaled is still a 400."""
    client = make_client("penguins")
    record = {**RECORDS["penguins"], "body_mass_g": -3.4e38}
    for route in ("/predict", "/explain"):
        response = client.post(route, json=record)
        assert response.status_code in (200, 400), response.get_data(as_text=True)
        if response.status_code == 400:
            assert_error(response, 400, "body_mass_g")


def test_one_null_policy_serving_takes_what_the_model_can(make_client: Factory) -> None:
    """Nulls where train had none: XGBoost handles NaN natively, the forest imputes, categories take it."""
    null_rows = [{**ROW, "sibsp": None}, {**ROW, "sex": None}, {**ROW, "pclass": None, "parch": None}]
    for name in ("titanic", "forest"):
        client = make_client(name)
        body = ok(client.post("/predict", json=null_rows))
        assert len(body["predictions"]) == 3
        assert ok(client.post("/invocations", json={"dataframe_records": null_rows}))["predictions"]
        assert ok(client.post("/explain", json=null_rows))["explanations"]
        rows = titanic_rows(1_100)
        rows[5] = {**rows[5], "sibsp": None}
        fast = ok(client.post("/invocations", json=forest_split(rows)))
        assert fast == ok(client.post("/invocations", json={"dataframe_records": rows}))


def test_one_null_policy_matches_batch_scoring(make_client: Factory, model_dirs: dict[str, Path]) -> None:
    """The server and predict_frame (the pyfunc model's and batch inference's path) agree on a null row."""
    for name in ("titanic", "forest"):
        rows = [{**ROW, "sibsp": None}, {**MAN, "sex": None}]
        served = ok(make_client(name).post("/predict", json=rows))["predictions"]
        predictor = load_local(model_dirs[name]).predictor
        frame = pl.DataFrame(
            rows,
            schema={"pclass": pl.String, "sex": pl.String, "age": pl.Float64, "sibsp": pl.Int64, "parch": pl.Int64},
        )
        batch = predictor.predict_frame(frame)
        assert [p["prediction"] for p in served] == list(batch.labels)
        for p, row in zip(served, batch.output, strict=True):
            assert p["probabilities"]["survived"] == pytest.approx(float(row[1]), abs=1e-6)


def test_a_model_that_cannot_take_a_null_says_so_everywhere(
    make_client: Factory, model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from mmp.errors import DataError

    dirs = strict_copy(model_dirs, tmp_path)
    client = make_client("strict", dirs=dirs)
    schema = {c["name"]: c for c in ok(client.get("/metadata"))["input_schema"]}
    assert schema["sibsp"]["nullable"] is False and schema["sex"]["nullable"] is True
    document = ok(client.get("/openapi.json"))
    assert document["components"]["schemas"]["Record"]["properties"]["sibsp"]["nullable"] is False
    bad = {**ROW, "sibsp": None}
    for route, payload in [("/predict", bad), ("/explain", bad), ("/invocations", {"instances": [bad]})]:
        assert_error(client.post(route, json=payload), 400, "Column 'sibsp' is null", "cannot take a missing value")
    rows = titanic_rows(1_100)
    rows[9] = bad
    assert_error(client.post("/invocations", json=forest_split(rows)), 400, "Column 'sibsp' is null", "row 9")
    assert ok(client.post("/predict", json={**ROW, "sex": None}))  # a category still takes null
    predictor = load_local(dirs["strict"]).predictor
    frame = pl.DataFrame([bad, ROW], schema_overrides={"sibsp": pl.Int64})
    with pytest.raises(DataError, match="Column 'sibsp' has 1 missing value"):
        predictor.predict_frame(frame)
    with pytest.raises(DataError, match="Column 'age' has 1 value"):
        predictor.predict_frame(pl.DataFrame([{**ROW, "age": 1e39}]))


def test_duplicate_split_columns_are_400(client: FlaskClient) -> None:
    for n in (1, 1_000):
        payload = {"dataframe_split": {"columns": [*ROW, "age"], "data": [[*ROW.values(), 50]] * n}}
        assert_error(client.post("/invocations", json=payload), 400, "names 'age' more than once")


def test_a_number_for_a_category_is_scored_with_a_warning(client: FlaskClient) -> None:
    record = {**ROW, "pclass": 1}
    body = ok(client.post("/predict", json=record))
    assert body["prediction"] in ("died", "survived")
    assert body["warnings"] == [
        "Column 'pclass' got 1 number(s) that are not among its categories (first: 1); "
        "they were scored as an unseen (missing) category"
    ]
    body = ok(client.post("/predict", json=[ROW, record, record]))
    assert len(body["warnings"]) == 1 and "got 2 number(s)" in body["warnings"][0] and "row 1" in body["warnings"][0]
    assert "warnings" in ok(client.post("/invocations", json={"instances": [record]}))
    assert "warnings" in ok(client.post("/explain", json=record))
    assert "warnings" not in ok(client.post("/predict", json=ROW))  # none: the body is unchanged


def test_a_number_for_a_category_is_rejected_in_strict_mode(make_client: Factory) -> None:
    client = make_client("titanic", ServeSettings(categorical_numbers="reject"))
    for route, payload in [("/predict", {**ROW, "sex": 0}), ("/invocations", {"instances": [{**ROW, "sex": 0}]})]:
        assert_error(client.post(route, json=payload), 400, "Column 'sex' is categorical", "got the number 0")
    assert ok(client.post("/predict", json=ROW))["prediction"] == "survived"


def test_long_values_are_cut_short_in_messages(client: FlaskClient) -> None:
    response = client.post("/predict", json={**ROW, "age": "x" * 100_000})
    body = assert_error(response, 400, "Column 'age' must be a number", "100002 characters")
    assert len(body["message"]) < 300


# --------------------------------------------------------------------------- /metrics


def metric_lines(response: TestResponse) -> list[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    return [line for line in response.get_data(as_text=True).splitlines() if not line.startswith("#")]


def sample(lines: list[str], prefix: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix)]
    return sum(values)


def test_metrics_count_requests_latency_predictions_and_model(client: FlaskClient) -> None:
    ok(client.post("/predict", json=[ROW, MAN, ROW]))
    ok(client.post("/invocations", json={"instances": [MAN]}))
    client.post("/predict", json=[])
    client.get("/nope/a/b")
    lines = metric_lines(client.get("/metrics"))
    assert sample(lines, 'mmp_http_requests_total{method="POST",route="/predict",status="200"}') == 1
    assert sample(lines, 'mmp_http_requests_total{method="POST",route="/predict",status="400"}') == 1
    assert sample(lines, 'mmp_http_requests_total{method="GET",route="other",status="404"}') == 1
    assert sample(lines, 'mmp_http_request_duration_seconds_count{route="/predict"}') == 2
    assert sample(lines, 'mmp_http_request_duration_seconds_bucket{le="+Inf",route="/invocations"}') == 1
    assert sample(lines, 'mmp_predictions_total{class="survived"}') == 2
    assert sample(lines, 'mmp_predictions_total{class="died"}') == 2
    info = [line for line in lines if line.startswith("mmp_model_info{")]
    assert len(info) == 1 and 'model_uri="models:/m-titanic"' in info[0] and 'run_id="run-titanic"' in info[0]
    assert info[0].endswith(" 1.0")


def test_metrics_regression_counts_values(make_client: Factory) -> None:
    client = make_client("diamonds")
    ok(client.post("/predict", json=[RECORDS["diamonds"]] * 4))
    assert sample(metric_lines(client.get("/metrics")), 'mmp_predictions_total{class="value"}') == 4


def test_metrics_are_guarded_by_the_token(make_client: Factory) -> None:
    client = make_client("titanic", token=TOKEN)
    assert_error(client.get("/metrics"), 401, code="UNAUTHENTICATED")
    assert metric_lines(client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}))
    open_client = make_client("titanic", ServeSettings(metrics_auth=False), token=TOKEN)
    assert metric_lines(open_client.get("/metrics"))


def test_metrics_in_multiprocess_mode(
    model_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With PROMETHEUS_MULTIPROC_DIR set, samples go to the folder, and /metrics sums every worker's files."""
    from prometheus_client import values

    folder = tmp_path / "prom"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)  # restored after the test
    first = create_app(model_dirs["titanic"], ServeSettings()).test_client()
    second = create_app(model_dirs["titanic"], ServeSettings()).test_client()  # a second "worker"
    ok(first.post("/predict", json=ROW))
    ok(second.post("/predict", json=[ROW, MAN]))
    assert any(folder.glob("*.db"))
    lines = metric_lines(first.get("/metrics"))
    assert sample(lines, 'mmp_http_requests_total{method="POST",route="/predict",status="200"}') == 2
    assert sample(lines, 'mmp_predictions_total{class="survived"}') == 2
    assert len([line for line in lines if line.startswith("mmp_model_info{")]) == 1
