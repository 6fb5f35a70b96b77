"""mmp.model.adapters.xgboost_capi: the C API fast path and models loaded through the C library give XGBoost's
own predictions and SHAP values, bit for bit, or are not used."""

from __future__ import annotations

import subprocess
import sys
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


@pytest.mark.parametrize(
    ("dataset", "target"),
    [("titanic", "survived"), ("penguins", "species"), ("penguins", "body_mass_g")],  # binary, multiclass, regression
)
def test_a_loaded_model_answers_through_the_c_library_as_the_package_does(
    dataset: str, target: str, tmp_path: Path
) -> None:
    """Saved and loaded, an XGBoost model predicts, gives margins and SHAP values bit for bit as the package's
    estimator does (categoricals, early stopping's best round, binary, multiclass, regression)."""
    import pickle

    from test_explain import trained

    from mmp.explanation.shap import explain
    from mmp.model.trained import TrainedModel

    fitted, pre, x = trained("xgboost", dataset, target)
    fitted.save(tmp_path)
    loaded = TrainedModel.load(tmp_path)
    assert isinstance(loaded.estimator, xgboost_predict.NativeBooster)
    rows = x["test"][:300]
    assert np.array_equal(loaded.output(rows), fitted.output(rows))
    assert np.array_equal(loaded.raw_output(rows), fitted.raw_output(rows))
    ours, theirs = explain(loaded, rows, pre.feature_groups), explain(fitted, rows, pre.feature_groups)
    assert np.array_equal(ours.values, theirs.values) and np.array_equal(ours.base_values, theirs.base_values)
    values = ours.values.sum(axis=-1) + ours.base_values
    np.testing.assert_allclose(values, loaded.raw_output(rows), atol=1e-4 * max(1.0, np.abs(values).max()))
    loaded.limit_threads(1)  # a server's setting; the answers stay the same
    assert np.array_equal(loaded.output(rows[:1]), fitted.output(rows[:1]))
    # Anything else is the package's estimator's, and a pickle holds that estimator.
    np.testing.assert_allclose(loaded.importances(), fitted.importances())
    copy = pickle.loads(pickle.dumps(loaded))
    assert isinstance(copy.estimator, xgboost.XGBModel)
    assert np.array_equal(copy.output(rows), fitted.output(rows))


@pytest.mark.parametrize("family", ["xgboost", "lightgbm"])
def test_explaining_a_loaded_model_imports_neither_its_library_nor_scikit_learn(family: str, tmp_path: Path) -> None:
    from test_explain import trained

    fitted, pre, x = trained(family, "titanic", "survived")
    fitted.save(tmp_path)
    np.save(tmp_path / "rows.npy", x["test"][:50])
    script = f"""
import sys
import numpy as np
from mmp.model.trained import TrainedModel
model = TrainedModel.load(__import__("pathlib").Path({str(tmp_path)!r}))
rows = np.load({str(tmp_path / "rows.npy")!r})
model.output(rows), model.raw_output(rows), model.adapter.contributions(model, rows, None)
print(*sorted(m for m in ("xgboost", "sklearn", "shap") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []


def test_another_xgboost_major_version_loads_through_the_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mmp.model.registry import MODELS
    from mmp.model.trained import TrainedModel

    x, y, _ = encoded("titanic.csv", "survived")
    fitted = TrainedModel(MODELS["xgboost"], "binary", xgboost.XGBClassifier(n_estimators=5).fit(x, y), [0, 1])
    fitted.save(tmp_path)
    monkeypatch.setattr(xgboost_predict, "NATIVE_MAJOR", 99)
    loaded = TrainedModel.load(tmp_path)
    assert isinstance(loaded.estimator, xgboost.XGBClassifier)
    assert np.array_equal(loaded.output(x), fitted.output(x))


@pytest.mark.parametrize(
    ("dataset", "target"),
    [("titanic", "survived"), ("penguins", "species"), ("penguins", "body_mass_g")],  # binary, multiclass, regression
)
def test_a_loaded_lightgbm_model_answers_through_its_c_library_as_the_package_does(
    dataset: str, target: str, tmp_path: Path
) -> None:
    import pickle

    from test_explain import trained

    from mmp.explanation.shap import explain
    from mmp.model.adapters.lightgbm import LoadedBooster
    from mmp.model.trained import TrainedModel

    fitted, pre, x = trained("lightgbm", dataset, target)
    fitted.save(tmp_path)
    loaded = TrainedModel.load(tmp_path)
    assert loaded.estimator.native is not None  # the C library path is in use
    package = TrainedModel.load(tmp_path)
    package.estimator.native = None  # the package's Booster for everything
    rows = x["test"]
    for model in (fitted, package):
        assert np.array_equal(loaded.output(rows), model.output(rows))
        assert np.array_equal(loaded.raw_output(rows), model.raw_output(rows))
        ours, theirs = explain(loaded, rows, pre.feature_groups), explain(model, rows, pre.feature_groups)
        assert np.array_equal(ours.values, theirs.values) and np.array_equal(ours.base_values, theirs.base_values)
    loaded.limit_threads(1)
    assert np.array_equal(loaded.output(rows[:1]), fitted.output(rows[:1]))
    np.testing.assert_allclose(loaded.importances(), fitted.importances())
    copy = pickle.loads(pickle.dumps(loaded))
    assert isinstance(copy.estimator, LoadedBooster) and np.array_equal(copy.output(rows), fitted.output(rows))
