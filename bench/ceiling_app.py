"""The ceiling of bench/bench_serving.py: the least a Flask app under gunicorn can do to score one row.

One route, ``POST /predict``: the JSON row (raw values, as mmp's ``/predict`` takes them) is mapped to a
float32 array with the category codes of the model's ``preprocessing.json``, and the XGBoost booster
predicts it in place. No validation, no logging, no request ids. Run it the way the benchmark does:

    CEILING_MODEL_DIR=<downloaded mmp model> gunicorn -w 2 -k sync -b 127.0.0.1:8000 \
        --chdir bench 'ceiling_app:create_app()'

``CEILING_NTHREAD`` sets the booster's threads per worker (default 1: gunicorn already runs one worker
per core; 0 means XGBoost's default, all cores).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import xgboost
from flask import Flask, Response, jsonify, request


def create_app(model_dir: str | None = None) -> Flask:
    """The app for the mmp model downloaded in ``model_dir`` (default: ``$CEILING_MODEL_DIR``)."""
    root = Path(model_dir or os.environ["CEILING_MODEL_DIR"])
    state = json.loads((root / "artifacts" / "preprocessing.json").read_text(encoding="utf-8"))
    # (column, category -> code) for each model input; numeric columns have no lookup.
    plan = [
        (column["name"], {level: float(i) for i, level in enumerate(column["categories"])})
        if column["kind"] == "categorical"
        else (column["name"], None)
        for column in state["columns"]
    ]
    booster = xgboost.Booster(model_file=str(root / "artifacts" / "models" / "model.ubj"))
    nthread = int(os.environ.get("CEILING_NTHREAD", "1"))
    if nthread > 0:
        booster.set_param({"nthread": nthread})

    app = Flask("ceiling")

    @app.post("/predict")
    def predict() -> Response:
        row = request.get_json()
        x = np.array(
            [
                [
                    math.nan
                    if row[name] is None
                    else (float(row[name]) if lookup is None else lookup.get(row[name], math.nan))
                    for name, lookup in plan
                ]
            ],
            dtype=np.float32,
        )
        return jsonify(probability=float(booster.inplace_predict(x)[0]))

    return app
