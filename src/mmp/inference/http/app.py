"""The Flask app: a few lines around :mod:`mmp.inference.http.protocol` for each route.

Built by :func:`create_app` once per server worker, which loads the model once, at start.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from mmp.evaluation import drift
from mmp.inference.http import protocol
from mmp.inference.http.protocol import Limits, RequestError
from mmp.inference.http.settings import ServeSettings
from mmp.inference.source import LocalModel, _artifact_paths, load_local

access_log = logging.getLogger("mmp.access")

SCORING_ROUTES = ("/invocations", "/predict", "/explain")
REQUEST_ID_KEY = "mmp.request_id"  # WSGI environ keys set by RequestLog and the routes
ROWS_KEY = "mmp.rows"
RECORDS_KEY = "mmp.records"  # the validated rows, or a dataframe_split payload: what /drift counts
MODEL_DIR_ENV = "MMP_MODEL_DIR"
TOKEN_ENV = "MMP_API_TOKEN"


def create_app(model_dir: str | Path | None = None, settings: ServeSettings | None = None) -> Flask:
    """The WSGI app serving the model downloaded in ``model_dir`` (default: ``$MMP_MODEL_DIR``)."""
    settings = settings or ServeSettings.from_env()
    model = load_local(Path(model_dir or os.environ[MODEL_DIR_ENV]))
    model.predictor.model.limit_threads(settings.threads_per_worker)
    limits = Limits(
        max_rows=settings.max_rows,
        unknown_columns=settings.unknown_columns,
        categorical_numbers=settings.categorical_numbers,
    )
    token = os.environ.get(TOKEN_ENV) or None
    background = _background(model)

    app = Flask("mmp.inference.http")
    app.config["MAX_CONTENT_LENGTH"] = int(settings.max_body_mb * 1024 * 1024)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["mmp.model"] = model
    app.extensions["mmp.settings"] = settings

    guarded = frozenset(SCORING_ROUTES + ("/drift",) + (("/metrics",) if settings.metrics_auth else ()))
    if token:

        @app.before_request
        def authorise() -> Response | None:
            if request.path in guarded and not _authorised(token):
                message = "A bearer token is required: Authorization: Bearer <token>"
                response = _error(RequestError(message, 401, "UNAUTHENTICATED"))
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
            return None

    @app.errorhandler(RequestError)
    def request_error(exc: RequestError) -> Response:
        return _error(exc)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = {413: "REQUEST_TOO_LARGE", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(
            exc.code or 400, "BAD_REQUEST"
        )
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"The body is larger than the {settings.max_body_mb:g} MB limit; send fewer rows per request"
        response = _error(RequestError(message, exc.code or 400, code))
        if allow := exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = allow  # a 405 must name the methods the route takes (RFC 9110)
        return response

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:  # never a stack trace to the client
        logging.getLogger("mmp.inference.http").exception("request %s failed", request.environ.get(REQUEST_ID_KEY))
        return _error(RequestError(f"Internal error ({type(exc).__name__}); see the server log", 500, "INTERNAL_ERROR"))

    @app.post("/invocations")
    def invocations() -> Response:
        content_type = (request.mimetype or "").lower()
        if content_type == "application/json":
            payload = _json_body()
            fast = protocol.matrix_from_split(payload, model.predictor, limits)
            if fast is not None:
                request.environ[ROWS_KEY] = len(fast[0])
                request.environ[RECORDS_KEY] = payload
                return _json(protocol.predict_mlflow_matrix(model.predictor, *fast, observe=observe))
            rows, params = protocol.rows_from_mlflow(payload)
        elif content_type == "text/csv":
            rows, params = _csv_rows(), {}
        else:
            raise RequestError(
                f"Content type '{request.content_type or ''}' is not supported; use application/json or text/csv",
                415,
                "BAD_REQUEST",
            )
        warnings = validated(rows)
        return _json(_warned(protocol.predict_mlflow(model.predictor, rows, params, observe=observe), warnings))

    def validated(rows: list[protocol.Row]) -> list[str]:
        request.environ[ROWS_KEY] = len(rows)
        request.environ[RECORDS_KEY] = rows
        return protocol.validate(rows, model.predictor, limits)

    def json_records() -> tuple[list[protocol.Row], bool, list[str]]:
        _require_json()
        rows, single = protocol.rows_from_predict(_json_body())
        return rows, single, validated(rows)

    @app.post("/predict")
    def predict() -> Response:
        rows, single, warnings = json_records()
        predictions = protocol.predict_records(model.predictor, rows, observe=observe)
        return _json(_warned(predictions[0] if single else {"predictions": predictions}, warnings))

    @app.post("/explain")
    def explain() -> Response:
        top_k = _top_k(settings.explain_top_k)
        rows, _, warnings = json_records()
        from mmp.explanation.shap import ExplainError

        try:
            result = protocol.explain_records(model.predictor, rows, top_k, background)
        except ExplainError as exc:
            raise RequestError(str(exc), 422, "NOT_EXPLAINABLE") from None
        return _json(_warned(result, warnings))

    @app.get("/ping")
    @app.get("/health")
    def health() -> Response:
        return _json({"status": "ok"})

    @app.get("/ready")
    def ready() -> Response:
        return _json({"status": "ready", "model_uri": model.card.model_uri})

    @app.get("/version")
    def version() -> Response:
        from importlib import metadata

        packages = ("mmp", "mlflow", "polars", *model.predictor.model.requirements)
        versions = {}
        for package in packages:
            try:
                versions[package] = metadata.version(package)
            except metadata.PackageNotFoundError:
                continue
        return _json({"mmp": versions.get("mmp"), "packages": versions, "model_uri": model.card.model_uri})

    from mmp.inference.http.openapi import openapi_document
    from mmp.inference.http.page import render_page

    # Built once per worker: none of them change while the server runs.
    card = metadata(model)
    document = openapi_document(model, settings, token_required=bool(token))
    reference = drift.load_reference(model.directory / _artifact_paths(model.directory)["model"])
    page = render_page(card, token_required=bool(token))

    @app.get("/metadata")
    def metadata_route() -> Response:
        return _json(card)

    from mmp.inference.http.metrics import Metrics  # imported here: see Metrics on PROMETHEUS_MULTIPROC_DIR

    model_labels = {
        "model_uri": card["model_uri"] or "",
        "run_id": card["run_id"] or "",
        "model_class": card["model_class"] or "",
        "recipe": card["recipe"] or "",
        "task": card["task"] or "",
    }
    routes = {*SCORING_ROUTES, "/health", "/ping", "/ready", "/version", "/metadata", "/openapi.json", "/metrics"}
    metrics = Metrics({*routes, "/drift", "/"}, model_labels, drift_reference=reference)
    regression = model.predictor.task == "regression"
    predictor = model.predictor

    def observe(prediction: Any) -> None:
        metrics.count(prediction.labels, regression)
        if metrics.drift is not None:
            records = request.environ.get(RECORDS_KEY)
            values = drift.prediction_values(predictor.task, predictor.classes, prediction.output)[1]
            if isinstance(records, dict):  # the dataframe_split fast path: its columns as they came
                split = records["dataframe_split"]
                columns = zip(*split["data"], strict=True)  # rows of equal length: checked by matrix_from_split
                metrics.drift.add_columns(dict(zip(split["columns"], columns, strict=True)), values)
            else:
                metrics.drift.add(records or [], values)

    @app.get("/drift")
    def drift_route() -> Response:
        report = metrics.drift_report()
        if report is None:
            return _json({**_UNMONITORED, "threshold": metrics.drift_threshold})
        return _json({"monitored": True, **report})

    @app.get("/metrics")
    def metrics_route() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)

    @app.get("/openapi.json")
    def openapi() -> Response:
        return _json(document)

    @app.get("/")
    def index() -> Response:
        return Response(page, mimetype="text/html")

    app.wsgi_app = RequestLog(app.wsgi_app, metrics)  # type: ignore[method-assign]
    return app


class RequestLog:
    """WSGI middleware: an ``X-Request-ID`` on every response, and one JSON access-log line per request.

    Plain WSGI rather than Flask's before/after-request hooks: those cost ~100 us a request, a tenth of
    what serving one row costs in all.
    """

    def __init__(self, wsgi_app: Any, metrics: Any = None) -> None:
        self.wsgi_app = wsgi_app
        self.metrics = metrics  # mmp.inference.http.metrics.Metrics, or None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        started = time.perf_counter()
        request_id = environ.get("HTTP_X_REQUEST_ID") or os.urandom(16).hex()
        environ[REQUEST_ID_KEY] = request_id
        status = ""

        def start(status_line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal status
            status = status_line
            headers.append(("X-Request-ID", request_id))
            return start_response(status_line, headers, exc_info)

        body = self.wsgi_app(environ, start)
        if self.metrics is not None:
            code = int(status[:3]) if status[:3].isdigit() else None
            self.metrics.observe(
                environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""), code, time.perf_counter() - started
            )
        if access_log.isEnabledFor(logging.INFO):
            line = {
                "request_id": request_id,
                "method": environ.get("REQUEST_METHOD"),
                "path": environ.get("PATH_INFO"),
                "status": int(status[:3]) if status[:3].isdigit() else None,
                "ms": round((time.perf_counter() - started) * 1000, 2),
                "rows": environ.get(ROWS_KEY),
                "remote": environ.get("REMOTE_ADDR"),
                "pid": os.getpid(),  # the gunicorn worker that answered
            }
            access_log.info(orjson.dumps(line).decode())
        return body


def metadata(model: LocalModel) -> dict[str, Any]:
    """Run, model class, recipe, training metrics and the input schema with types and categories."""
    card, pre = model.card, model.predictor.preprocessor
    schema = [
        {
            "name": column.name,
            "type": "number" if column.kind == "numeric" else "string",
            "nullable": model.predictor.takes_missing(column),
            **({"categories": column.categories} if column.kind == "categorical" else {}),
        }
        for column in pre.columns
    ]
    return {
        "run_id": card.run_id,
        "model_uri": card.model_uri,
        "model_class": card.model_class,
        "recipe": card.recipe,
        "data": card.data,
        "task": model.predictor.task,
        "target": pre.target,
        "classes": [str(c) for c in model.predictor.classes] or None,
        # Binary: the positive class's probability above which it is predicted; the calibration applied, if any.
        "decision_threshold": model.predictor.model.threshold,
        "calibration": getattr(model.predictor.model.calibrator, "method", None),
        "metrics": card.metrics,
        "top_features": [{"feature": name, "mean_abs_shap": value} for name, value in card.top_features],
        "input_schema": schema,
    }


_UNMONITORED = {
    "monitored": False,
    "message": "The model was trained before mmp saved its training distribution; retrain it to monitor drift",
    "rows": 0,
    "drifted": [],
    "columns": {},
}


def _background(model: LocalModel) -> np.ndarray | None:
    """Linear models are explained against the train means saved with the model."""
    means = getattr(model.predictor.model, "feature_means", None)
    return None if means is None else np.asarray(means, dtype=np.float32)[None, :]


def _authorised(token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, supplied = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(supplied.strip().encode(), token.encode())


def _warned(body: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    """A response body with the request's warnings, if any (values scored, but maybe not as meant)."""
    return {**body, "warnings": warnings} if warnings else body


def _top_k(default: int) -> int:
    unknown = [name for name in request.args if name != "top_k"]
    if unknown:  # the document lists top_k only: anything else is a typo the client should hear about
        raise RequestError(f"Unknown query parameter {unknown[0][:40]!r}; /explain takes only top_k")
    raw = request.args.get("top_k")
    if raw is None:
        return default
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 6:
        raise RequestError(f"top_k must be a whole number from 0 to 999999, got {raw[:40]!r}")
    return int(text)


def _require_json() -> None:
    if (request.mimetype or "").lower() != "application/json":
        raise RequestError(
            f"Content type '{request.content_type or ''}' is not supported; send application/json", 415, "BAD_REQUEST"
        )


def _json_body() -> Any:
    try:
        return orjson.loads(request.get_data(cache=False))
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"The body is not valid JSON ({exc.msg} at position {exc.pos})") from None


def _csv_rows() -> list[dict[str, Any]]:
    import io

    import polars as pl

    try:
        frame = pl.read_csv(io.BytesIO(request.get_data(cache=False)), infer_schema_length=10_000)
    except pl.exceptions.PolarsError as exc:
        raise RequestError(f"The body is not valid CSV ({' '.join(str(exc).split())[:200]})") from None
    return frame.to_dicts()


def _json(payload: Any, status: int = 200) -> Response:
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status=status, mimetype="application/json")


def _error(exc: RequestError) -> Response:
    return _json(exc.body(), exc.status)
