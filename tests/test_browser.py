"""The served page and OpenAPI document: unit tests of both, then a real `mmp serve-api` driven by headless
Chromium (with and without a bearer token). The browser tests need the Debian packages chromium and
chromium-driver (`make browser` installs them).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from headless_chromium import headless_chromium
from test_http_app import ROUTES

from conftest import Server, make_project, start_server
from mmp.data.preprocessing import ColumnState
from mmp.inference.http.openapi import openapi_document
from mmp.inference.http.page import render_page
from mmp.inference.http.protocol import MLFLOW_FORMATS
from mmp.inference.source import LocalModel, ModelCard

TOKEN = "s3cret-token"
SCORING = {"/invocations", "/predict", "/explain"}
GUARDED = {*SCORING, "/metrics", "/drift"}  # /metrics takes the token too (ServeSettings.metrics_auth)
PASSENGER = {"pclass": "1st", "sex": "female", "age": 29, "sibsp": 0, "parch": 0}
# Category names that would run script if the page put them into HTML or a <script> unescaped.
HOSTILE = ['"><img src=x onerror="window.pwned=1">', "</script><script>window.pwned=2</script>", "a&b"]


# --------------------------------------------------------------------------- unit tests (fast)


def fake_model(task: str = "multiclass", categories: list[str] | None = None) -> LocalModel:
    """Just what the page and the document read from a served model."""
    columns = [
        ColumnState("colour", "categorical", "String", False, "native", categories or ["red", "green", "blue"]),
        ColumnState("size", "numeric", "Float64", True, impute=1.5),
        ColumnState("count", "numeric", "Int64", False),
    ]
    classes = [] if task == "regression" else ["a", "b", "c"]
    preprocessor = SimpleNamespace(target="label", columns=columns)
    predictor = SimpleNamespace(preprocessor=preprocessor, task=task, classes=classes)
    # the null policy of a model without native missing support (Predictor.takes_missing)
    predictor.takes_missing = lambda c: c.kind == "categorical" or c.nullable or c.impute is not None
    card = ModelCard("models:/m-1", "run1", "xgboost.XGBClassifier", "xgb-baseline", "toy", task)
    return cast(LocalModel, SimpleNamespace(predictor=predictor, card=card))


def fake_metadata(categories: list[str]) -> dict[str, Any]:
    return {
        "run_id": "run1",
        "model_uri": "models:/m-1",
        "model_class": "xgboost.XGBClassifier",
        "recipe": "xgb-baseline",
        "data": "toy",
        "task": "binary",
        "target": "label",
        "classes": ["no", "yes"],
        "metrics": {"test_roc_auc": 0.91234, "test_accuracy": 0.8, "train_accuracy": 0.99},
        "top_features": [{"feature": "colour", "mean_abs_shap": 1.0}, {"feature": "size", "mean_abs_shap": 0.25}],
        "input_schema": [
            {"name": "colour", "type": "string", "nullable": False, "categories": categories},
            {"name": "size", "type": "number", "nullable": True},
        ],
    }


def schema_validator(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A JSON-schema validator for ``schema``, resolving $refs into ``document``'s components."""
    from openapi_schema_validator import OAS30Validator

    return OAS30Validator({**schema, "components": document["components"]})


def response_schema(document: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    response = document["paths"][path][method]["responses"][str(status)]
    if "$ref" in response:
        response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
    return response["content"]["application/json"]["schema"]


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_openapi_document_is_valid(task: str) -> None:
    from openapi_spec_validator import validate

    document = openapi_document(fake_model(task, categories=HOSTILE))
    validate(document)
    assert document["openapi"] == "3.0.3"
    assert {(path, method) for path, item in document["paths"].items() for method in item} == ROUTES
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, item in document["paths"].items():
        for operation in item.values():
            expected = [{"bearerAuth": []}] if path in GUARDED else []
            assert operation["security"] == expected, path
            if path in SCORING:
                assert {"400", "401", "413", "415", "200"} <= set(operation["responses"]), path
    assert "422" in document["paths"]["/explain"]["post"]["responses"]
    assert set(document["paths"]["/invocations"]["post"]["requestBody"]["content"]) == {"application/json", "text/csv"}
    assert {p["name"] for p in document["paths"]["/explain"]["post"].get("parameters", []) if "name" in p} == {"top_k"}


def test_openapi_record_lists_categories_without_enforcing_them() -> None:
    document = openapi_document(fake_model())
    record = document["components"]["schemas"]["Record"]
    assert record["required"] == ["colour", "size", "count"]
    assert record["additionalProperties"] is False
    colour, size, count = (record["properties"][name] for name in ("colour", "size", "count"))
    # a string, or a number taken as its text (categorical_numbers: warn)
    assert [option["type"] for option in colour["anyOf"]] == ["string", "number", "boolean"] and "enum" not in colour
    assert colour["x-known-categories"] == ["red", "green", "blue"]
    assert "red, green, blue" in colour["description"]
    assert size == {**size, "type": "number", "nullable": True}  # imputed: null is accepted
    assert count["type"] == "number" and count["nullable"] is False

    validator = schema_validator(document, {"$ref": "#/components/schemas/Record"})
    assert validator.is_valid({"colour": "purple", "size": None, "count": 3})  # unseen category: accepted
    assert not validator.is_valid({"colour": "red", "size": 1, "count": None})
    assert not validator.is_valid({"colour": "red", "size": 1, "count": 2, "extra": 1})


def test_openapi_examples_match_their_schemas() -> None:
    document = openapi_document(fake_model())
    invocations = document["paths"]["/invocations"]["post"]["requestBody"]["content"]["application/json"]
    schemas = document["components"]["schemas"]
    variants = [schemas[ref["$ref"].rsplit("/", 1)[-1]] for ref in schemas["MlflowRequest"]["oneOf"]]
    assert [key for variant in variants for key in variant["required"]] == list(MLFLOW_FORMATS)
    checked = 0
    for path, method in (("/invocations", "post"), ("/predict", "post"), ("/explain", "post")):
        media = document["paths"][path][method]["requestBody"]["content"]["application/json"]
        validator = schema_validator(document, media["schema"])
        for example in media["examples"].values():
            validator.validate(example["value"])
            checked += 1
    assert checked >= 7 and "predict_proba" in invocations["examples"]
    mlflow = schema_validator(document, {"$ref": "#/components/schemas/MlflowRequest"})
    record = {"colour": "red", "size": 1.0, "count": 2}
    for body in (
        {"dataframe_split": {"columns": ["colour", "size", "count"], "data": [["red", 1.0, 2]]}},
        {"dataframe_records": [record]},
        {"instances": [record], "params": {"predict_method": "predict_proba"}},
        {"inputs": {"colour": ["red"], "size": [1.0], "count": [2]}},
    ):
        mlflow.validate(body)
    assert not mlflow.is_valid({"inputs": [record], "instances": [record]})
    assert not mlflow.is_valid({"inputs": [record], "params": {"predict_method": "guess"}})


def test_page_escapes_names_and_embeds_the_schema_safely() -> None:
    page = render_page(fake_metadata(HOSTILE), token_required=False)
    for name in HOSTILE:
        assert name not in page  # never raw: not as HTML, not inside the <script> JSON
    assert "&quot;&gt;&lt;img src=x onerror=&quot;window.pwned=1&quot;&gt;" in page
    assert page.count("</script>") == 2  # the JSON block and the script, nothing closed early
    schema_json = page.split('id="mmp-schema">', 1)[1].split("</script>", 1)[0]
    assert json.loads(schema_json)[0]["categories"] == HOSTILE
    assert 'id="field-colour"' in page and 'id="field-size"' in page and 'id="predict-button"' in page
    assert 'id="result"' in page and 'id="api-token"' not in page
    assert "roc_auc" in page and "0.9123" in page and "train_accuracy" not in page  # the test metrics only
    assert "http://" not in page and "https://" not in page and "<script src" not in page and "<link" not in page
    assert 'id="api-token"' in render_page(fake_metadata(["red"]), token_required=True)


# --------------------------------------------------------------------------- a real server and browser (slow)


# Loopback only, whatever proxy the environment names.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method: str, url: str, body: Any = None, **headers: str) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body or text) of one request."""
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _opener.open(request, timeout=30) as response:
            status, head, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, head, raw = exc.code, dict(exc.headers), exc.read()
    text = raw.decode()
    return status, head, json.loads(text) if head.get("Content-Type", "").startswith("application/json") else text


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """A trained titanic model served twice: openly and behind a bearer token."""
    root = tmp_path_factory.mktemp("browser")
    project = make_project(root / "project")
    project.mmp("train")
    run_id = project.mmp("runs", "--stage", "train", "--limit", "1", "--quiet").stdout.strip()
    served = ["--run-id", run_id, "--workers", "1"]
    started: dict[str, Server] = {}
    try:
        started["open"] = start_server(project, served)
        started["token"] = start_server(project, served, env={"MMP_API_TOKEN": TOKEN})
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with headless_chromium(tmp_path_factory.mktemp("chromium"), "1200,900", page_load_timeout=30) as driver:
        yield driver


def fill_form(driver: Any, values: dict[str, Any], token: str | None = None) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    for name, value in values.items():
        field = driver.find_element(By.ID, f"field-{name}")
        if field.tag_name == "select":
            Select(field).select_by_value("" if value is None else str(value))
        else:
            field.clear()
            if value is not None:
                field.send_keys(str(value))
    if token is not None:
        field = driver.find_element(By.ID, "api-token")
        field.clear()
        field.send_keys(token)


def submit(driver: Any, done: Callable[[Any], bool]) -> Any:
    """Click Predict and wait for a new answer in #result; returns the #result element."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("document.getElementById('result').replaceChildren()")
    driver.find_element(By.ID, "predict-button").click()
    result = driver.find_element(By.ID, "result")
    WebDriverWait(driver, 20).until(lambda _: result.text.strip() and "Predicting" not in result.text and done(result))
    return result


@pytest.mark.slow
def test_page_predicts_in_the_browser(servers: dict[str, Server], browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{servers['open'].url}/")
    assert "xgboost.XGBClassifier" in browser.find_element(By.TAG_NAME, "h1").text
    card = browser.find_element(By.ID, "model-card").text
    assert "xgb-baseline" in card and "titanic" in card and "survived" in card
    assert "roc_auc" in browser.find_element(By.ID, "metrics").text
    assert "sex" in browser.find_element(By.ID, "top-features").text
    assert not browser.find_elements(By.ID, "api-token")
    options = [o.text for o in browser.find_elements(By.CSS_SELECTOR, "#field-pclass option")]
    assert options == ["", "1st", "2nd", "3rd"]

    fill_form(browser, PASSENGER)
    result = submit(browser, lambda r: bool(r.find_elements(By.CLASS_NAME, "prediction")))
    assert result.find_element(By.CLASS_NAME, "prediction").text == "survived"
    assert "died" in result.text and "%" in result.text  # the class probabilities
    assert "error" not in (result.get_attribute("class") or "")

    # A number beyond float32's range: the server's 400 message is shown.
    fill_form(browser, {**PASSENGER, "age": 1e39})
    result = submit(browser, lambda r: "error" in (r.get_attribute("class") or ""))
    assert "BAD_REQUEST" in result.text and "age" in result.text

    # age may be empty (null): still a prediction.
    fill_form(browser, {**PASSENGER, "age": None})
    result = submit(browser, lambda r: bool(r.find_elements(By.CLASS_NAME, "prediction")))
    assert result.find_element(By.CLASS_NAME, "prediction").text in ("survived", "died")


@pytest.mark.slow
def test_token_field_makes_the_page_work_behind_a_token(servers: dict[str, Server], browser: Any) -> None:
    from selenium.webdriver.common.by import By

    url = servers["token"].url
    status, headers, body = http("POST", f"{url}/predict", PASSENGER)
    assert status == 401 and body["error_code"] == "UNAUTHENTICATED" and headers["WWW-Authenticate"] == "Bearer"
    assert http("POST", f"{url}/predict", PASSENGER, Authorization="Bearer wrong")[0] == 401
    status, _, body = http("POST", f"{url}/predict", PASSENGER, Authorization=f"Bearer {TOKEN}")
    assert status == 200 and body["prediction"] == "survived"
    assert http("GET", f"{url}/")[0] == 200  # the page itself needs no token

    browser.get(f"{url}/")
    fill_form(browser, PASSENGER)  # token left empty
    result = submit(browser, lambda r: "error" in (r.get_attribute("class") or ""))
    assert "UNAUTHENTICATED" in result.text
    fill_form(browser, PASSENGER, token=TOKEN)
    result = submit(browser, lambda r: bool(r.find_elements(By.CLASS_NAME, "prediction")))
    assert result.find_element(By.CLASS_NAME, "prediction").text == "survived"


@pytest.mark.slow
def test_openapi_json_is_valid_and_matches_the_responses(servers: dict[str, Server]) -> None:
    from openapi_spec_validator import validate

    url = servers["open"].url
    status, _, document = http("GET", f"{url}/openapi.json")
    assert status == 200
    validate(document)
    assert {(path, method) for path, item in document["paths"].items() for method in item} == ROUTES
    record = document["components"]["schemas"]["Record"]
    assert record["properties"]["pclass"]["x-known-categories"] == ["1st", "2nd", "3rd"]
    assert record["properties"]["age"]["type"] == "number"

    # Real answers conform to the documented response bodies.
    records = [PASSENGER, {**PASSENGER, "sex": "male", "pclass": "3rd"}]
    calls = [
        ("post", "/predict", PASSENGER, 200),
        ("post", "/predict", records, 200),
        ("post", "/explain?top_k=2", PASSENGER, 200),
        ("post", "/invocations", {"dataframe_records": records}, 200),
        ("post", "/invocations", {"inputs": records, "params": {"predict_method": "predict_proba"}}, 200),
        ("post", "/predict", {**PASSENGER, "age": 1e39}, 400),
        ("get", "/metadata", None, 200),
        ("get", "/version", None, 200),
        ("get", "/ready", None, 200),
        ("get", "/health", None, 200),
    ]
    for method, target, body, expected in calls:
        status, _, answer = http(method.upper(), f"{url}{target}", body)
        assert status == expected, (target, answer)
        path = target.split("?")[0]
        schema_validator(document, response_schema(document, path, method, status)).validate(answer)
    status, _, answer = http("POST", f"{url}/invocations", None, **{"Content-Type": "text/plain"})
    assert status == 415
    schema_validator(document, response_schema(document, "/invocations", "post", 415)).validate(answer)


@pytest.mark.slow
def test_hostile_category_names_stay_text_in_the_browser(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    page = tmp_path / "page.html"
    page.write_text(render_page(fake_metadata(HOSTILE), token_required=True), encoding="utf-8")
    browser.get(page.as_uri())
    options = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#field-colour option")]
    assert options == ["", *HOSTILE]
    assert browser.execute_script("return window.pwned === undefined")
    assert browser.find_elements(By.ID, "api-token")
