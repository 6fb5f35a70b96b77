"""The OpenAPI 3.0.3 description of the server's routes, built from the served model's input schema.

Categories seen in training are listed (``x-known-categories``), never enforced with ``enum``: the server
accepts unseen categories and encodes them as missing.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata as package_metadata
from typing import Any

from mmp.data.preprocessing import ColumnState
from mmp.inference.http.protocol import FLOAT32_MAX, MLFLOW_FORMATS, PREDICT_METHODS
from mmp.inference.http.settings import ServeSettings
from mmp.inference.source import LocalModel

Schema = dict[str, Any]

_JSON = "application/json"
_BEARER = [{"bearerAuth": []}]
_LISTED_CATEGORIES = 20  # in a description; x-known-categories has them all


def openapi_document(
    model: LocalModel, settings: ServeSettings | None = None, token_required: bool = True
) -> dict[str, Any]:
    """The OpenAPI document of every route, with request and response bodies for ``model``.

    ``token_required``: the server runs with MMP_API_TOKEN set. Without a token no route takes one, and the
    document says so (no security requirement, no 401 answer).
    """
    settings = settings or ServeSettings()
    document = _document(model, settings)
    if not token_required:
        for item in document["paths"].values():
            for operation in item.values():
                operation["security"] = []
                operation["responses"].pop("401", None)
    return document


def _document(model: LocalModel, settings: ServeSettings) -> dict[str, Any]:
    card, predictor = model.card, model.predictor
    columns = predictor.preprocessor.columns
    classes = [str(c) for c in predictor.classes]
    example = _example_record(columns)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"mmp model server: {card.model_class or 'model'}",
            "version": _mmp_version(),
            "description": (
                f"Serves {card.model_uri} (run {card.run_id}, recipe {card.recipe}, data {card.data}), "
                f"a {predictor.task} model of '{predictor.preprocessor.target}'. "
                "Scoring routes take at most "
                f"{settings.max_rows} rows and {settings.max_body_mb:g} MB per request. "
                "Every response carries an X-Request-ID header (the client's, if it sent one)."
            ),
        },
        "paths": {
            "/invocations": {"post": _invocations(predictor.task, classes, example)},
            "/predict": {"post": _predict(example)},
            "/explain": {"post": _explain(example, settings.explain_top_k)},
            "/health": {"get": _get_json("health", "Liveness: the process answers", "Status")},
            "/ping": {"get": _get_json("ping", "Liveness (the MLflow and SageMaker name)", "Status")},
            "/ready": {"get": _get_json("ready", "Readiness: the model is loaded", "Ready")},
            "/version": {"get": _get_json("version", "Versions of mmp and its libraries", "Version")},
            "/metadata": {"get": _get_json("metadata", "The model card and the input schema", "Metadata")},
            "/metrics": {"get": _metrics(settings.metrics_auth)},
            "/openapi.json": {
                "get": _get(
                    "openapi",
                    "This document",
                    {"description": "The OpenAPI 3.0.3 document", "content": {_JSON: {"schema": {"type": "object"}}}},
                )
            },
            "/": {
                "get": _get(
                    "page",
                    "A page for people: the model card and a form to try a prediction",
                    {"description": "An HTML page", "content": {"text/html": {"schema": {"type": "string"}}}},
                )
            },
            "/drift": {"get": _drift()},
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Needed on the scoring routes when the server runs with MMP_API_TOKEN set.",
                }
            },
            "schemas": {
                "Record": _record_schema(columns, settings, example, predictor.takes_missing),
                "Records": {"type": "array", "items": {"$ref": "#/components/schemas/Record"}, "minItems": 1},
                "Params": {
                    "type": "object",
                    "properties": {
                        "predict_method": {"type": "string", "enum": list(PREDICT_METHODS), "default": "predict"}
                    },
                    "additionalProperties": True,
                },
                **_mlflow_request_schemas(),
                "Prediction": _prediction_schema(predictor.task, classes),
                "Predictions": {
                    "type": "object",
                    "properties": {
                        "predictions": {"type": "array", "items": {"$ref": "#/components/schemas/Prediction"}},
                        "warnings": _WARNINGS,
                    },
                    "required": ["predictions"],
                },
                "MlflowPredictions": _mlflow_predictions_schema(predictor.task, classes),
                "Explanations": _explanations_schema(predictor.task),
                "Error": {
                    "type": "object",
                    "properties": {
                        "error_code": {
                            "type": "string",
                            "description": "MLflow's names: BAD_REQUEST, UNAUTHENTICATED, REQUEST_TOO_LARGE, "
                            "NOT_EXPLAINABLE, NOT_FOUND, METHOD_NOT_ALLOWED, INTERNAL_ERROR",
                            "example": "BAD_REQUEST",
                        },
                        "message": {
                            "type": "string",
                            "description": "What was wrong, naming the column and the problem",
                            "example": "Missing column 'age'; every model input column is required",
                        },
                    },
                    "required": ["error_code", "message"],
                },
                "Status": {
                    "type": "object",
                    "properties": {"status": {"type": "string", "example": "ok"}},
                    "required": ["status"],
                },
                "Ready": {
                    "type": "object",
                    "properties": {"status": {"type": "string", "example": "ready"}, "model_uri": {"type": "string"}},
                    "required": ["status", "model_uri"],
                },
                "Version": {
                    "type": "object",
                    "properties": {
                        "mmp": {"type": "string", "nullable": True},
                        "packages": {"type": "object", "additionalProperties": {"type": "string"}},
                        "model_uri": {"type": "string"},
                    },
                    "required": ["mmp", "packages", "model_uri"],
                },
                "Metadata": _metadata_schema(),
                "Drift": _drift_schema(),
            },
            "responses": {
                "BadRequest": _error_response("The body or a value is invalid (the message says which)"),
                "Unauthorized": _error_response(
                    "No valid bearer token (only when the server runs with MMP_API_TOKEN set)",
                    {"WWW-Authenticate": {"schema": {"type": "string", "example": "Bearer"}}},
                ),
                "TooLarge": _error_response(f"The body is larger than {settings.max_body_mb:g} MB"),
                "UnsupportedMediaType": _error_response("The Content-Type is not supported"),
                "NotExplainable": _error_response("The model cannot be explained with SHAP"),
                "InternalError": _error_response("The server failed; the details are in its log"),
            },
            "headers": {
                "X-Request-ID": {
                    "description": "The request's id: the client's X-Request-ID, or a new one",
                    "schema": {"type": "string"},
                }
            },
            "parameters": {
                "RequestId": {
                    "name": "X-Request-ID",
                    "in": "header",
                    "required": False,
                    "description": "An id to find this request in the access log (one is made up if absent)",
                    "schema": {"type": "string"},
                }
            },
        },
    }


# --------------------------------------------------------------------------- input records


def _record_schema(
    columns: list[ColumnState],
    settings: ServeSettings,
    example: dict[str, Any],
    takes_missing: Callable[[ColumnState], bool],
) -> Schema:
    return {
        "type": "object",
        "description": "One row of raw input values, keyed by column name. Every column is required; "
        "a nullable column takes null."
        + (
            " Unknown columns are ignored."
            if settings.unknown_columns == "ignore"
            else " Unknown columns are rejected."
        ),
        "properties": {
            column.name: _column_schema(column, takes_missing(column), settings.categorical_numbers == "warn")
            for column in columns
        },
        "required": [column.name for column in columns],
        "additionalProperties": settings.unknown_columns == "ignore",
        "example": example,
    }


def _column_schema(column: ColumnState, nullable: bool, numbers_for_categories: bool) -> Schema:
    null_note = " May be null." if nullable else ""
    if column.kind == "numeric":
        return {
            "type": "number",
            "nullable": nullable,
            "minimum": -FLOAT32_MAX,
            "maximum": FLOAT32_MAX,
            "description": f"Numeric (trained on {column.dtype}), within float32's range.{null_note}",
        }
    listed = ", ".join(column.categories[:_LISTED_CATEGORIES])
    more = (
        f" and {len(column.categories) - _LISTED_CATEGORIES} more"
        if len(column.categories) > _LISTED_CATEGORIES
        else ""
    )
    text: Schema = {
        "type": "string",
        "nullable": nullable,
        "description": f"Categorical. Known categories: {listed}{more}. "
        f"Other values are accepted and encoded as an unseen (missing) category.{null_note}",
        "x-known-categories": list(column.categories),
    }
    if not numbers_for_categories:  # categorical_numbers: reject
        return text
    # categorical_numbers: warn. A number (or boolean) is scored as its text, with a warning in the
    # response when that text is not a known category.
    return {
        **{key: value for key, value in text.items() if key not in ("type", "nullable")},
        "anyOf": [{"type": "string", "nullable": nullable}, {"type": "number"}, {"type": "boolean"}],
        "description": text["description"] + " A number is taken as its text; one that is not a category "
        "is scored as unseen, with a note in the response's warnings (a 400 when the server runs with "
        "categorical_numbers: reject).",
    }


def _example_record(columns: list[ColumnState]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for column in columns:
        if column.kind == "categorical":
            record[column.name] = column.categories[0] if column.categories else None
        else:
            value = column.mean if column.mean is not None else column.impute
            record[column.name] = round(float(value), 4) if value is not None else 0
    return record


def _mlflow_request_schemas() -> dict[str, Schema]:
    """One schema per MLflow JSON format; each also takes ``params``."""
    params = {"$ref": "#/components/schemas/Params"}
    records = {"$ref": "#/components/schemas/Records"}
    bodies: dict[str, Schema] = {
        "dataframe_split": {
            "type": "object",
            "description": "pandas' split orientation",
            "properties": {
                "columns": {"type": "array", "items": {"type": "string"}},
                "data": {"type": "array", "items": {"type": "array", "items": {}}},
                "index": {"type": "array", "items": {}},
            },
            "required": ["columns", "data"],
        },
        "dataframe_records": records,
        "instances": records,
        "inputs": {
            "oneOf": [
                records,
                {
                    "type": "object",
                    "description": "Columnar: each column name maps to a list of values, all of the same length",
                    "additionalProperties": {"type": "array", "items": {}},
                },
            ]
        },
    }
    names = {key: "Mlflow" + "".join(part.title() for part in key.split("_")) for key in bodies}
    schemas = {
        names[key]: {
            "type": "object",
            "properties": {key: body, "params": params},
            "required": [key],
            "additionalProperties": False,
        }
        for key, body in bodies.items()
    }
    schemas["MlflowRequest"] = {
        "oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in names.values()],
        "description": "Exactly one of " + ", ".join(MLFLOW_FORMATS) + ", and optionally params",
    }
    return schemas


# --------------------------------------------------------------------------- responses


def _probabilities(classes: list[str]) -> Schema:
    return {
        "type": "object",
        "description": "The probability of each class",
        "properties": {name: {"type": "number", "minimum": 0, "maximum": 1} for name in classes},
        "required": classes,
    }


_WARNINGS: Schema = {
    "type": "array",
    "items": {"type": "string"},
    "description": "Present when some values were scored but maybe not as meant "
    "(a number sent for a categorical column that is not one of its categories)",
}


def _prediction_schema(task: str, classes: list[str]) -> Schema:
    if task == "regression":
        return {
            "type": "object",
            "properties": {"prediction": {"type": "number"}, "warnings": _WARNINGS},
            "required": ["prediction"],
        }
    return {
        "type": "object",
        "properties": {
            "prediction": {"type": "string", "enum": classes, "description": "The most probable class"},
            "probabilities": _probabilities(classes),
            "warnings": _WARNINGS,
        },
        "required": ["prediction", "probabilities"],
    }


def _mlflow_predictions_schema(task: str, classes: list[str]) -> Schema:
    if task == "regression":
        item: Schema = {"type": "number"}
    else:
        item = {
            "oneOf": [
                {"type": "string", "enum": classes, "description": "predict: the most probable class"},
                {**_probabilities(classes), "description": "predict_proba: the probability of each class"},
            ]
        }
    return {
        "type": "object",
        "properties": {"predictions": {"type": "array", "items": item}, "warnings": _WARNINGS},
        "required": ["predictions"],
    }


def _explanations_schema(task: str) -> Schema:
    item: Schema = {
        "allOf": [
            {"$ref": "#/components/schemas/Prediction"},
            {
                "type": "object",
                "properties": {
                    "base_value": {"type": "number", "description": "The model's output for the background data"},
                    "contributions": {
                        "type": "object",
                        "description": "SHAP value of every input column, in the explainer's output space",
                        "additionalProperties": {"type": "number"},
                    },
                    "top": {
                        "type": "array",
                        "description": "The top_k contributions by absolute value",
                        "items": {
                            "type": "object",
                            "properties": {"feature": {"type": "string"}, "contribution": {"type": "number"}},
                            "required": ["feature", "contribution"],
                        },
                    },
                    **(
                        {"explained_class": {"type": "string", "description": "Multiclass: the predicted class"}}
                        if task == "multiclass"
                        else {}
                    ),
                },
                "required": ["base_value", "contributions", "top"],
            },
        ]
    }
    return {
        "type": "object",
        "properties": {
            "explainer": {"type": "string", "example": "xgboost.pred_contribs"},
            "output_space": {"type": "string", "example": "log-odds"},
            "explanations": {"type": "array", "items": item},
            "warnings": _WARNINGS,
        },
        "required": ["explainer", "output_space", "explanations"],
    }


def _metadata_schema() -> Schema:
    text = {"type": "string", "nullable": True}
    return {
        "type": "object",
        "properties": {
            "run_id": text,
            "model_uri": {"type": "string"},
            "model_class": text,
            "recipe": text,
            "data": text,
            "task": {"type": "string", "enum": ["binary", "multiclass", "regression"]},
            "target": {"type": "string"},
            "classes": {"type": "array", "items": {"type": "string"}, "nullable": True},
            "decision_threshold": {"type": "number", "nullable": True},
            "calibration": {"type": "string", "enum": ["isotonic", "sigmoid", None], "nullable": True},
            "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
            "top_features": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"feature": {"type": "string"}, "mean_abs_shap": {"type": "number"}},
                    "required": ["feature", "mean_abs_shap"],
                },
            },
            "input_schema": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "type": {"type": "string", "enum": ["number", "string"]},
                        "nullable": {"type": "boolean"},
                        "categories": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["name", "type", "nullable"],
                },
            },
        },
        "required": ["model_uri", "task", "target", "metrics", "top_features", "input_schema"],
    }


def _error_response(description: str, headers: dict[str, Any] | None = None) -> Schema:
    return {
        "description": description,
        "headers": {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}, **(headers or {})},
        "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(description: str, schema_ref: str, example: Any = None) -> Schema:
    media: Schema = {"schema": {"$ref": schema_ref}}
    if example is not None:
        media["example"] = example
    return {
        "description": description,
        "headers": {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}},
        "content": {_JSON: media},
    }


def _errors(*names: str) -> dict[str, Schema]:
    statuses = {
        "BadRequest": "400",
        "Unauthorized": "401",
        "TooLarge": "413",
        "UnsupportedMediaType": "415",
        "NotExplainable": "422",
        "InternalError": "500",
    }
    return {statuses[name]: {"$ref": f"#/components/responses/{name}"} for name in names}


# --------------------------------------------------------------------------- operations


_SCORING_ERRORS = ("BadRequest", "Unauthorized", "TooLarge", "UnsupportedMediaType", "InternalError")
_REQUEST_ID = {"$ref": "#/components/parameters/RequestId"}


def _invocations(task: str, classes: list[str], example: dict[str, Any]) -> Schema:
    csv_example = ",".join(example) + "\n" + ",".join("" if v is None else str(v) for v in example.values()) + "\n"
    return {
        "operationId": "invocations",
        "summary": "Score rows in MLflow's scoring-server formats",
        "description": "The body of `mlflow models serve`: JSON with one of "
        + ", ".join(MLFLOW_FORMATS)
        + ' (and optionally params, e.g. {"predict_method": "predict_proba"}), or CSV with a header row.',
        "tags": ["scoring"],
        "security": _BEARER,
        "parameters": [_REQUEST_ID],
        "requestBody": {
            "required": True,
            "content": {
                _JSON: {
                    "schema": {"$ref": "#/components/schemas/MlflowRequest"},
                    "examples": {
                        "dataframe_records": {"value": {"dataframe_records": [example]}},
                        "dataframe_split": {
                            "value": {"dataframe_split": {"columns": list(example), "data": [list(example.values())]}}
                        },
                        "predict_proba": {
                            "value": {"inputs": [example], "params": {"predict_method": "predict_proba"}}
                        },
                    },
                },
                "text/csv": {"schema": {"type": "string"}, "example": csv_example},
            },
        },
        "responses": {
            "200": _ok(
                "A prediction per row: classes (predict), class probabilities (predict_proba) or values (regression)",
                "#/components/schemas/MlflowPredictions",
            ),
            **_errors(*_SCORING_ERRORS),
        },
    }


def _one_or_many(example: dict[str, Any]) -> Schema:
    return {
        "required": True,
        "content": {
            _JSON: {
                "schema": {
                    "oneOf": [{"$ref": "#/components/schemas/Record"}, {"$ref": "#/components/schemas/Records"}]
                },
                "examples": {"one": {"value": example}, "many": {"value": [example, example]}},
            }
        },
    }


def _predict(example: dict[str, Any]) -> Schema:
    return {
        "operationId": "predict",
        "summary": "Predict one record or a list of records",
        "description": "One record (an object) gets one prediction back; a list gets {predictions: [...]}.",
        "tags": ["scoring"],
        "security": _BEARER,
        "parameters": [_REQUEST_ID],
        "requestBody": _one_or_many(example),
        "responses": {
            "200": {
                "description": "The prediction (for one record) or the predictions (for a list)",
                "headers": {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}},
                "content": {
                    _JSON: {
                        "schema": {
                            "oneOf": [
                                {"$ref": "#/components/schemas/Prediction"},
                                {"$ref": "#/components/schemas/Predictions"},
                            ]
                        }
                    }
                },
            },
            **_errors(*_SCORING_ERRORS),
        },
    }


def _explain(example: dict[str, Any], top_k: int) -> Schema:
    return {
        "operationId": "explain",
        "summary": "Predict and explain records with SHAP",
        "description": "Per-row SHAP contributions of every input column, the top_k of them, and the base value. "
        "Multiclass rows are explained for their predicted class.",
        "tags": ["scoring"],
        "security": _BEARER,
        "parameters": [
            {
                "name": "top_k",
                "in": "query",
                "required": False,
                "description": "How many of the largest contributions to list in `top`",
                "schema": {"type": "integer", "minimum": 0, "maximum": 999_999, "default": top_k},
            },
            _REQUEST_ID,
        ],
        "requestBody": _one_or_many(example),
        "responses": {
            "200": _ok("The explanations, one per record", "#/components/schemas/Explanations"),
            **_errors(*_SCORING_ERRORS, "NotExplainable"),
        },
    }


def _get(operation_id: str, summary: str, response: Schema) -> Schema:
    """An open (token-free) GET route with one 200 response."""
    return {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["status"],
        "security": [],
        "responses": {"200": response},
    }


def _metrics(guarded: bool) -> Schema:
    operation = _get(
        "metrics",
        "Prometheus metrics of every worker: requests by route and status, latency, predictions by class, model",
        {
            "description": "The Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
    )
    if guarded:
        operation["security"] = _BEARER
        operation["responses"]["401"] = {"$ref": "#/components/responses/Unauthorized"}
    return operation


def _drift() -> Schema:
    summary = "Drift: PSI of each input column and of the prediction, recent rows against the training data"
    operation = _get_json("drift", summary, "Drift")
    operation["description"] = (
        "Each worker keeps a sliding window of the rows it scored last (/predict and /invocations) and counts "
        "them into the buckets of the training distribution saved with the model: quantile bins of each numeric "
        "column, the most frequent categories of each categorical one, and the prediction's. The answer sums "
        "the live workers' windows, so it covers up to workers x rows_per_worker recent rows. A column is "
        "flagged when its PSI (population stability index) is above the threshold. The same PSI values are in "
        "/metrics as mmp_drift_psi."
    )
    operation["tags"] = ["monitoring"]
    operation["security"] = _BEARER
    operation["responses"]["401"] = {"$ref": "#/components/responses/Unauthorized"}
    return operation


def _drift_schema() -> Schema:
    bucket = {
        "type": "object",
        "properties": {
            "bucket": {"type": "string", "example": "(22, 25]"},
            "expected": {"type": "number", "description": "share of the training rows"},
            "observed": {"type": "number", "nullable": True, "description": "share of the window's rows"},
        },
        "required": ["bucket", "expected", "observed"],
    }
    column = {
        "type": "object",
        "properties": {
            "kind": {"type": "string", "enum": ["numeric", "categorical"]},
            "psi": {"type": "number", "nullable": True, "description": "null until a row was scored"},
            "drifted": {"type": "boolean"},
            "rows": {"type": "integer"},
            "buckets": {"type": "array", "items": bucket},
        },
        "required": ["kind", "psi", "drifted", "rows", "buckets"],
    }
    return {
        "type": "object",
        "properties": {
            "monitored": {"type": "boolean", "description": "false: the model has no saved training distribution"},
            "message": {"type": "string"},
            "threshold": {"type": "number", "example": 0.2},
            "rows": {"type": "integer"},
            "drifted": {"type": "array", "items": {"type": "string"}},
            "columns": {"type": "object", "additionalProperties": column},
            "window": {
                "type": "object",
                "properties": {"rows_per_worker": {"type": "integer"}, "workers": {"type": "integer"}},
                "required": ["rows_per_worker", "workers"],
            },
        },
        "required": ["monitored", "threshold", "rows", "drifted", "columns"],
    }


def _get_json(operation_id: str, summary: str, schema_name: str) -> Schema:
    return _get(operation_id, summary, _ok(summary, f"#/components/schemas/{schema_name}"))


def _mmp_version() -> str:
    try:
        return package_metadata.version("mmp")
    except package_metadata.PackageNotFoundError:
        return "0"
