"""Hostile requests, replayed in process through Flask's test client (issue 14).

A deterministic corpus of well over 500 requests (invalid JSON, wrong shapes, NaN/Infinity literals, deep
nesting, very long strings, NUL bytes, wrong content types, method and path variants, numbers beyond
float32, bad ``top_k``, numbers for categories, duplicate columns, nulls, random mutations of valid records)
goes to a server per model. Every answer must be below 500, carry no stack trace, be a JSON error body when
it is an error, and ``/health`` must still answer 200 afterwards.
"""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from test_http_app import RECORDS, TOKEN, write_model_folder

from mmp.inference.http.app import MODEL_DIR_ENV, TOKEN_ENV, create_app
from mmp.inference.http.settings import ServeSettings

SCORING = ("/predict", "/explain", "/invocations")
ROW = RECORDS["titanic"]
COLUMNS = list(ROW)
LONG = 1_000_000  # characters in a "very long" string


@dataclass
class Case:
    kind: str
    method: str
    path: str
    data: bytes | str | None = None
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    query_string: str | None = None


def js(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


def split(columns: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    return {"dataframe_split": {"columns": columns, "data": rows}}


def bodies_for(route: str, record: dict[str, Any]) -> list[str]:
    """One record as each body a route takes."""
    if route != "/invocations":
        return [js(record), js([record])]
    return [
        js({"dataframe_records": [record]}),
        js({"instances": [record]}),
        js({"inputs": {k: [v] for k, v in record.items()}}),
        js(split(list(record), [list(record.values())])),
    ]


INVALID_JSON = [
    "",
    " ",
    "{",
    "}",
    "[",
    "]",
    "{not json",
    "{'pclass': '1st'}",
    '{"pclass": "1st",}',
    '[{"pclass": "1st"},]',
    '{"pclass" "1st"}',
    '{"pclass": 1st}',
    "undefined",
    "None",
    "True",
    '{"a": 01}',
    '{"a": .5}',
    '{"a": 1.}',
    '{"a": +1}',
    '{"a": 0x10}',
    '"unterminated',
    '{"a": "\\x41"}',
    '{"a": "\\ud800"}',
    '{"a": "\\u12"}',
    "\ufeff{}",
    "{}{}",
    "[] []",
    "/* comment */ {}",
    '{"a": 1} // trailing',
    "\x00",
    "\x00" * 100,
    "{\x00}",
    '{"a\x00": 1}',
    "\xff\xfe",
    "\t\n\r",
    "nul",
    "tru",
    "1e",
    "-",
    "--1",
]
LITERALS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e400", "nan", "inf", "-inf", "1E+999"]
SHAPES: list[Any] = [
    None,
    True,
    0,
    -1,
    1.5,
    "text",
    "",
    [],
    [[]],
    [None],
    [1, 2, 3],
    ["a"],
    [[ROW]],
    {},
    {"": 1},
    {"dataframe_split": None},
    {"dataframe_split": {}},
    {"dataframe_split": {"columns": None, "data": None}},
    {"dataframe_split": {"columns": "pclass", "data": [[1]]}},
    {"dataframe_split": {"columns": COLUMNS, "data": "rows"}},
    {"dataframe_split": {"columns": COLUMNS, "data": [None]}},
    {"dataframe_split": {"columns": COLUMNS, "data": [{"a": 1}]}},
    {"dataframe_split": {"columns": COLUMNS, "data": [list(ROW.values())[:-1]]}},
    {"dataframe_split": {"columns": [None] * 5, "data": [list(ROW.values())]}},
    {"dataframe_split": {"columns": COLUMNS, "data": [list(ROW.values())], "index": "x"}},
    {"dataframe_records": None},
    {"dataframe_records": {}},
    {"dataframe_records": [None]},
    {"dataframe_records": [[1, 2]]},
    {"dataframe_records": ROW},
    {"instances": "x"},
    {"instances": [ROW], "params": "x"},
    {"instances": [ROW], "params": {"predict_method": {"a": 1}}},
    {"instances": [ROW], "params": {"predict_method": ["predict"]}},
    {"instances": [ROW], "extra": 1},
    {"inputs": None},
    {"inputs": {}},
    {"inputs": {"pclass": "1st"}},
    {"inputs": {"pclass": ["1st"], "sex": ["female", "male"]}},
    {"inputs": [[1, 2]]},
    {"params": {}},
    {"dataframe_records": [ROW], "dataframe_split": split(COLUMNS, [])},
    {k: [v] for k, v in ROW.items()},
    {**ROW, "pclass": ["1st"]},
    {**ROW, "pclass": {"nested": "1st"}},
    {**ROW, "age": [29]},
    {**ROW, "age": {"value": 29}},
    {**ROW, "age": "29"},
    {**ROW, "age": ""},
    {**ROW, "age": True},
    {**ROW, "sex": True},
    {**ROW, "sex": False},
    {**ROW, "sex": []},
    {ROW_KEY: None for ROW_KEY in COLUMNS},
]
CONTENT_TYPES = [
    None,
    "",
    "text/plain",
    "text/html",
    "text/csv",
    "application/xml",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/octet-stream",
    "application/json-patch+json",
    "application/jsonx",
    "json",
    "application/json; charset=latin-1",
    "application/json; charset=utf-16",
    "APPLICATION/JSON",
    "application/json;;;",
    "*/*",
    "application/\x00json",
]
METHODS = ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "CONNECT", "PROPFIND", "POST"]
PATHS = [
    "/predict/",
    "//predict",
    "/PREDICT",
    "/predict%00",
    "/predict%2F",
    "/../predict",
    "/./predict",
    "/predict;x=1",
    "/%ff",
    "/%00",
    "/" + "a" * 5000,
    "/invocations/../health",
    "/explain/x",
    "/metrics/",
    "/openapi.json%00",
    "/static/../../etc/passwd",
    "/health/",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/\u00e9",
    "/api/v1/predict",
]
TOP_K = ["-1", "abc", "", "1.5", "1e3", "0x10", "99999999999999999999999", "\x00", "5 5", "+3", " 7 ", "\u0663", "inf"]


def corpus() -> Iterator[Case]:
    """The hostile requests, always the same ones in the same order."""
    for route in SCORING:
        for text in INVALID_JSON:
            yield Case("invalid json", "POST", route, text)
        for literal in LITERALS:
            for body in bodies_for(route, {**ROW, "age": "__X__"}):
                yield Case("nan/infinity literal", "POST", route, body.replace('"__X__"', literal))
        for shape in SHAPES:
            yield Case("wrong shape", "POST", route, js(shape))
        for depth in (64, 512, 1_100, 10_000, 200_000):
            yield Case("deep nesting", "POST", route, "[" * depth + "]" * depth)
            yield Case("deep nesting", "POST", route, '{"a":' * depth + "1" + "}" * depth)
            nested: Any = 1
            for _ in range(min(depth, 900)):
                nested = [nested]
            yield Case("deep nesting", "POST", route, js({**ROW, "age": "__N__"}).replace('"__N__"', js(nested)))
        for value in ("x" * LONG, "\u00e9" * (LONG // 2), "\U0001f600" * 10_000):
            yield Case("long string", "POST", route, js([{**ROW, "sex": value}]))
            yield Case("long string", "POST", route, js([{**ROW, "age": value}]))
            yield Case("long string", "POST", route, js([{**ROW, value: 1}]))
        yield Case("long string", "POST", route, js(split([*COLUMNS, "y" * LONG], [[*ROW.values(), 1]])))
        for nul in ("\x00", "a\x00b", "\x00" * 1000):
            yield Case("nul bytes", "POST", route, js([{**ROW, "sex": nul}]))
            yield Case("nul bytes", "POST", route, js([{**ROW, "pclass": nul}]))
            yield Case("nul bytes", "POST", route, js([{**ROW, nul: 1}]))
        yield Case("nul bytes", "POST", route, js(ROW).encode() + b"\x00")
        yield Case("nul bytes", "POST", route, b"\x00" + js(ROW).encode())
        for content_type in CONTENT_TYPES:
            yield Case("content type", "POST", route, js(ROW), content_type)
        yield Case(
            "content type",
            "POST",
            route,
            gzip.compress(js(ROW).encode(), mtime=0),
            headers={"Content-Encoding": "gzip"},
        )
        yield Case("content type", "POST", route, js(ROW).encode("utf-16"))
        yield Case("content type", "POST", route, js(ROW).encode("latin-1"), "application/json; charset=latin-1")
        # issue 14's classes
        for column in COLUMNS:
            for value in (1e39, -1e39, 3.5e38, 1.7976931348623157e308, 2**64, -(2**63) - 1, 10**30, 5e-324):
                for body in bodies_for(route, {**ROW, column: value}):
                    yield Case("float32 range", "POST", route, body)
            for body in bodies_for(route, {**ROW, column: None}):
                yield Case("null", "POST", route, body)
        for value in (0, 1, -5, 2.5, True, 1e39):
            for body in bodies_for(route, {**ROW, "pclass": value}):
                yield Case("number for a category", "POST", route, body)
        for columns in ([*COLUMNS, "age"], [*COLUMNS, *COLUMNS], ["age", "age"]):
            rows = [[ROW.get(c) for c in columns]]
            yield Case("duplicate columns", "POST", route, js(split(columns, rows)))
            yield Case("duplicate columns", "POST", route, js(split(columns, rows * 1_000)))
    for value in TOP_K:
        yield Case("top_k", "POST", "/explain", js(ROW), query_string="top_k=" + value.replace(" ", "%20"))
    yield Case("top_k", "POST", "/explain", js(ROW), query_string="top_k=1&top_k=abc")
    # CSV bodies
    csvs = [
        "",
        "\n",
        "pclass,sex,age,sibsp,parch\n",
        "pclass,sex,age,sibsp,parch\n1st,female,inf,0,0\n",
        "pclass,sex,age,sibsp,parch\n1st,female,1e39,0,0\n",
        "pclass,sex,age,sibsp,parch\n1st,female,NaN,0,0\n",
        "pclass,sex,age,sibsp,parch\n1st,female,,,\n",
        "pclass,sex,age,sibsp,parch,age\n1st,female,29,0,0,30\n",
        "pclass,sex,age,sibsp,parch\n1st,female,29,0\n",
        "pclass,sex,age,sibsp,parch\n1st,female,29,0,0,9,9\n",
        'pclass,sex,age,sibsp,parch\n"1st,female,29,0,0\n',
        "pclass;sex;age;sibsp;parch\n1st;female;29;0;0\n",
        "\x00\x01\x02",
        "pclass,sex,age,sibsp,parch\n1,2,3,4,5\n",
        "pclass,sex,age,sibsp,parch\n" + "1st,female,29,0,0\n" * 3000,
        "a" * LONG,
        ",".join(["c"] * 10_000) + "\n",
        "pclass,sex,age,sibsp,parch\n1st,\x00,29,0,0\n",
    ]
    for text in csvs:
        yield Case("csv", "POST", "/invocations", text, "text/csv")
    # methods and paths
    for method in METHODS:
        for path in ("/predict", "/invocations", "/explain", "/health", "/metrics", "/openapi.json", "/"):
            yield Case("method", method, path, js(ROW))
    for path in PATHS:
        for method in ("GET", "POST"):
            yield Case("path", method, path, js(ROW))
    # headers
    for headers in (
        {"Authorization": "Bearer " + "x" * 10_000},
        {"Authorization": "\x00"},
        {"X-Request-ID": "r" * 10_000},
        {"Content-Encoding": "br"},
        {"Content-Encoding": "gzip"},
        {"Accept": "text/xml"},
        {"Transfer-Encoding": "chunked"},
    ):
        yield Case("headers", "POST", "/predict", js(ROW), headers=headers)
    yield from mutations(random.Random(14), 250)


POOL: list[Any] = [
    None,
    0,
    -1,
    1,
    0.5,
    -0.0,
    1e39,
    -1e39,
    3.4e38,
    2**53 + 1,
    2**70,
    "",
    " ",
    "1st",
    "female",
    "abc",
    "\x00",
    "\u202e",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "%s%n",
    "{{7*7}}",
    True,
    False,
    [],
    {},
    [None],
    {"a": None},
]


def mutations(rng: random.Random, n: int) -> Iterator[Case]:
    """Valid records with one to three values, keys or rows changed at random (a fixed seed)."""
    for _ in range(n):
        record: dict[str, Any] = dict(ROW)
        for _ in range(rng.randint(1, 3)):
            action = rng.random()
            if action < 0.6:
                record[rng.choice(COLUMNS)] = rng.choice(POOL)
            elif action < 0.75:
                record.pop(rng.choice(COLUMNS), None)
            elif action < 0.9:
                record[rng.choice(["cabin", "", "\x00", "AGE", "age "])] = rng.choice(POOL)
            else:
                record = {str(k): v for k, v in rng.sample(sorted(record.items()), k=len(record))}
        route = rng.choice(SCORING)
        body = rng.choice(bodies_for(route, record))
        if rng.random() < 0.1:
            body = body[: rng.randint(0, len(body))]  # cut short
        query = f"top_k={rng.choice(['2', '-1', 'x', '0'])}" if route == "/explain" and rng.random() < 0.3 else None
        yield Case("mutation", "POST", route, body, query_string=query)


CORPUS = list(corpus())


# --------------------------------------------------------------------------- the replay


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz-models")
    return {name: write_model_folder(root / name, name) for name in ("titanic", "forest")}


def make_client(folder: Path, monkeypatch: pytest.MonkeyPatch, token: str | None = None) -> FlaskClient:
    monkeypatch.delenv(MODEL_DIR_ENV, raising=False)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    if token:
        monkeypatch.setenv(TOKEN_ENV, token)
    else:
        monkeypatch.delenv(TOKEN_ENV, raising=False)
    app = create_app(folder, ServeSettings(max_body_mb=8))
    app.testing = False  # errors go through the app's handlers, as in production
    return app.test_client()


def replay(client: FlaskClient, cases: list[Case], headers: dict[str, str] | None = None) -> Counter[int]:
    statuses: Counter[int] = Counter()
    failures = []
    for index, case in enumerate(cases):
        response = client.open(
            case.path,
            method=case.method,
            data=case.data,
            content_type=case.content_type,
            headers={**(headers or {}), **case.headers},
            query_string=case.query_string,
        )
        status = response.status_code
        statuses[status] += 1
        text = response.get_data(as_text=True)
        problem = None
        if status >= 500:
            problem = "5xx"
        elif "Traceback" in text or 'File "' in text:
            problem = "traceback text"
        elif status >= 400 and case.method != "HEAD":
            body = response.get_json(silent=True)
            if not isinstance(body, dict) or set(body) != {"error_code", "message"}:
                problem = "not a JSON error body"
        if problem:
            failures.append(
                f"#{index} {case.kind} {case.method} {case.path[:60]} -> {status} ({problem}): {text[:200]}"
            )
    assert not failures, "\n".join(failures[:20])
    health = client.get("/health")
    assert health.status_code == 200 and health.get_json() == {"status": "ok"}
    return statuses


def test_the_corpus_is_large_and_covers_every_class() -> None:
    assert len(CORPUS) >= 500
    kinds = Counter(case.kind for case in CORPUS)
    for kind in (
        "invalid json",
        "nan/infinity literal",
        "wrong shape",
        "deep nesting",
        "long string",
        "nul bytes",
        "content type",
        "method",
        "path",
        "float32 range",
        "null",
        "number for a category",
        "duplicate columns",
        "top_k",
        "csv",
        "mutation",
    ):
        assert kinds[kind] > 0, kind
    assert list(corpus()) == CORPUS  # deterministic


@pytest.mark.parametrize("name", ["titanic", "forest"])
def test_no_5xx_no_traceback_and_health_stays_up(
    model_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    statuses = replay(make_client(model_dirs[name], monkeypatch), CORPUS)
    assert sum(statuses.values()) == len(CORPUS)
    assert not [s for s in statuses if s >= 500]
    assert statuses[200] > 0 and statuses[400] > 0  # both answers happen
    print(f"{name}: {len(CORPUS)} requests, statuses {dict(sorted(statuses.items()))}")


def test_with_a_token_every_hostile_request_is_refused_or_answered(
    model_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(model_dirs["titanic"], monkeypatch, token=TOKEN)
    cases = CORPUS[::5]
    unauthenticated = replay(client, cases)
    assert unauthenticated[200] < sum(unauthenticated.values())  # the scoring routes are closed
    replay(client, cases, headers={"Authorization": f"Bearer {TOKEN}"})
