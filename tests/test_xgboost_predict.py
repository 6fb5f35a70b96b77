"""mmp.xgboost_predict: the C API fast path gives XGBoost's own predictions, bit for bit, or is not used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import xgboost

from mmp.model.adapters import xgboost_capi as xgboost_predict
from mmp.model.adapters.xgboost_capi import dense_predictor

DATA = Path(__file__).resolve().parents[1] / "data"


def encoded(name: str, target: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The data set as float32 codes (strings -> category codes, nulls -> NaN) and its target codes."""
    frame = pl.read_csv(DATA / name)
    features = [c for c in frame.columns if c != target]
    types = ["c" if frame[c].dtype == pl.String else "q" for c in features]
    columns = [
        frame[c].cast(pl.Categorical).to_physical().cast(pl.Float32) if t == "c" else frame[c].cast(pl.Float32)
        for c, t in zip(features, types, strict=True)
    ]
    x = np.column_stack([c.fill_null(np.nan).to_numpy() for c in columns]).astype(np.float32)
    y = frame[target].cast(pl.Categorical).to_physical().to_numpy()
    return x, y, types


@pytest.mark.parametrize(("name", "target"), [("titanic.csv", "survived"), ("penguins.csv", "species")])
def test_fast_path_equals_inplace_predict(name: str, target: str) -> None:
    x, y, types = encoded(name, target)
    model = xgboost.XGBClassifier(
        n_estimators=60, max_depth=4, enable_categorical=True, feature_types=types, n_jobs=1, random_state=0
    )
    model.fit(x, y)
    booster = model.get_booster()
    predict = dense_predictor(booster, (0, 40))
    assert isinstance(predict, xgboost_predict._CApiPredictor)  # the fast path is in use here

    # Every row in one batch and one at a time, with unseen categories and missing values mixed in.
    odd = x[:50].copy()
    odd[::2, types.index("c")] = 999.0
    odd[1::3, 1] = np.nan
    for batch in (x, odd, *[x[i : i + 1] for i in range(0, len(x), 97)]):
        expected = booster.inplace_predict(batch, iteration_range=(0, 40))
        assert np.array_equal(predict(batch), expected)
    classes = len(np.unique(y))
    assert predict(x).shape == ((len(x),) if classes == 2 else (len(x), classes))

    with pytest.raises(ValueError, match="Feature shape mismatch"):
        predict(x[:, :-1])


def test_a_disagreeing_fast_path_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y, types = encoded("titanic.csv", "survived")
    model = xgboost.XGBClassifier(n_estimators=10, enable_categorical=True, feature_types=types, n_jobs=1)
    model.fit(x, y)
    monkeypatch.setattr(xgboost_predict._CApiPredictor, "__call__", lambda self, rows: np.zeros(len(rows)))
    predict = dense_predictor(model.get_booster(), (0, 0))
    assert not isinstance(predict, xgboost_predict._CApiPredictor)
    assert np.array_equal(predict(x), model.get_booster().inplace_predict(x))
