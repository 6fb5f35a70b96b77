"""Evaluation plots from small synthetic predictions: the files, their contents, and the importances."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from PIL import Image
from sklearn import metrics

from mmp.evaluation.plots import (
    CLASSIFICATION_FILES,
    CURVE_POINTS,
    IMPORTANCE_FILES,
    LEARNING_CURVE_FILES,
    REGRESSION_FILES,
    SAMPLE_ROWS,
    feature_importances,
    fold_importances,
    write_evaluation_plots,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FEATURES = [f"f{i}" for i in range(25)]
HISTORY = {"train": [0.7, 0.5, 0.4, 0.35], "valid": [0.7, 0.55, 0.5, 0.52]}


def classification_case(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class codes and (n, k) probabilities that favour the true class."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), codes] += 1.0
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return codes, proba


def write(out_dir: Path, **overrides: Any) -> list[Path]:
    """``write_evaluation_plots`` for a binary case, with any argument overridden."""
    codes, proba = classification_case(60, 2)
    arguments: dict[str, Any] = {
        "task": "binary",
        "classes": ["no", "yes"],
        "y_true": codes,
        "proba": proba,
        "predicted": None,
        "feature_names": FEATURES,
        "importances": np.linspace(0.1, 2.5, len(FEATURES)),
        "history": HISTORY,
        "history_metric": "logloss",
    }
    arguments.update(overrides)
    return write_evaluation_plots(out_dir, **arguments)


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
    assert width > 100 and height > 100


def read_records(path: Path, key: str) -> list[dict[str, Any]]:
    def reject(constant: str) -> None:
        raise AssertionError(f"{path.name} holds {constant}, which is not JSON")

    payload = json.loads(path.read_text(encoding="utf-8"), parse_constant=reject)
    assert list(payload) == [key]
    return payload[key]


def assert_files(out_dir: Path, written: list[Path], names: tuple[str, ...]) -> None:
    assert sorted(p.name for p in written) == sorted(names)
    assert all(p.parent == out_dir for p in written)
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(names)
    for path in written:
        assert path.stat().st_size > 0
        if path.suffix == ".png":
            assert_png(path)


# --------------------------------------------------------------------------- classification


def test_binary_writes_every_file(tmp_path: Path) -> None:
    out = tmp_path / "plots"
    written = write(out)
    assert_files(out, written, CLASSIFICATION_FILES + IMPORTANCE_FILES + LEARNING_CURVE_FILES)
    assert not [p for p in tmp_path.iterdir() if p != out]  # no scratch folder left behind


def test_binary_confusion_rows_are_test_rows_with_class_labels(tmp_path: Path) -> None:
    codes, proba = classification_case(60, 2)
    write(tmp_path, y_true=codes, proba=proba)
    frame = pl.read_csv(tmp_path / "confusion_matrix.csv")
    assert frame.columns == ["actual", "predicted"]
    assert frame.height == 60
    labels = np.array(["no", "yes"])
    assert frame["actual"].to_list() == labels[codes].tolist()
    assert frame["predicted"].to_list() == labels[proba.argmax(axis=1)].tolist()


def test_binary_roc_and_precision_recall_match_scikit_learn(tmp_path: Path) -> None:
    codes, proba = classification_case(60, 2)
    proba = np.round(proba, 1)  # ties: several rows per threshold
    write(tmp_path, y_true=codes, proba=proba)
    scores = proba[:, 1]

    roc = read_records(tmp_path / "roc_curve.json", "roc")
    assert (roc[0]["fpr"], roc[0]["tpr"], roc[0]["threshold"]) == (0.0, 0.0, None)
    assert (roc[-1]["fpr"], roc[-1]["tpr"]) == (1.0, 1.0)
    fpr, tpr, thresholds = metrics.roc_curve(codes, scores, drop_intermediate=False)
    np.testing.assert_allclose([r["fpr"] for r in roc], fpr, rtol=1e-5)
    np.testing.assert_allclose([r["tpr"] for r in roc], tpr, rtol=1e-5)
    np.testing.assert_allclose([r["threshold"] for r in roc[1:]], thresholds[1:], rtol=1e-5)

    prc = read_records(tmp_path / "precision_recall.json", "prc")
    assert (prc[0]["recall"], prc[0]["precision"], prc[0]["threshold"]) == (0.0, 1.0, None)
    assert prc[-1]["recall"] == 1.0
    precision, recall, _ = metrics.precision_recall_curve(codes, scores, drop_intermediate=False)
    np.testing.assert_allclose([r["recall"] for r in prc], recall[::-1], rtol=1e-5)
    np.testing.assert_allclose([r["precision"] for r in prc], precision[::-1], rtol=1e-5)


def test_curves_are_thinned_and_keep_their_ends(tmp_path: Path) -> None:
    codes, proba = classification_case(5_000, 2)
    write(tmp_path, y_true=codes, proba=proba)
    roc = read_records(tmp_path / "roc_curve.json", "roc")
    prc = read_records(tmp_path / "precision_recall.json", "prc")
    assert 100 < len(roc) <= CURVE_POINTS and 100 < len(prc) <= CURVE_POINTS
    assert (roc[0]["fpr"], roc[0]["tpr"], roc[-1]["fpr"], roc[-1]["tpr"]) == (0.0, 0.0, 1.0, 1.0)
    assert (prc[0]["recall"], prc[-1]["recall"]) == (0.0, 1.0)
    fpr = [r["fpr"] for r in roc]
    assert fpr == sorted(fpr)


def test_curves_undefined_when_the_test_split_has_one_class(tmp_path: Path) -> None:
    codes, proba = classification_case(30, 2)
    write(tmp_path, y_true=np.zeros_like(codes), proba=proba)
    assert read_records(tmp_path / "roc_curve.json", "roc") == []
    assert read_records(tmp_path / "precision_recall.json", "prc") == []
    assert_png(tmp_path / "roc_curve.png")


def test_multiclass_micro_average_and_labels(tmp_path: Path) -> None:
    classes = ["red", "green", "blue, dark", "yellow"]  # a comma must survive the CSV
    codes, proba = classification_case(80, 4)
    written = write(tmp_path, task="multiclass", classes=classes, y_true=codes, proba=proba)
    assert_files(tmp_path, written, CLASSIFICATION_FILES + IMPORTANCE_FILES + LEARNING_CURVE_FILES)

    frame = pl.read_csv(tmp_path / "confusion_matrix.csv")
    assert frame.height == 80
    assert set(frame["actual"]) <= set(classes) and set(frame["predicted"]) <= set(classes)
    assert frame["actual"].to_list() == [classes[c] for c in codes]

    onehot = (codes[:, None] == np.arange(4)).ravel()
    fpr, tpr, _ = metrics.roc_curve(onehot, proba.ravel(), drop_intermediate=False)
    roc = read_records(tmp_path / "roc_curve.json", "roc")
    np.testing.assert_allclose([r["fpr"] for r in roc], fpr, rtol=1e-5)
    np.testing.assert_allclose([r["tpr"] for r in roc], tpr, rtol=1e-5)
    prc = read_records(tmp_path / "precision_recall.json", "prc")
    assert (prc[0]["recall"], prc[-1]["recall"], prc[-1]["precision"]) == (0.0, 1.0, 0.25)


def test_multiclass_with_a_class_missing_from_test(tmp_path: Path) -> None:
    codes, proba = classification_case(40, 3)
    codes = np.where(codes == 2, 0, codes)  # no row of class 2: its own curves are undefined
    write(tmp_path, task="multiclass", classes=["a", "b", "c"], y_true=codes, proba=proba)
    roc = read_records(tmp_path / "roc_curve.json", "roc")  # the micro-average is still defined
    assert (roc[-1]["fpr"], roc[-1]["tpr"]) == (1.0, 1.0)
    assert_png(tmp_path / "roc_curve.png")


# --------------------------------------------------------------------------- regression


def regression_case(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    actual = rng.normal(50, 10, n)
    return actual, actual + rng.normal(0, 3, n)


def test_regression_writes_every_file(tmp_path: Path) -> None:
    actual, predicted = regression_case(120)
    written = write(tmp_path, task="regression", classes=None, y_true=actual, proba=None, predicted=predicted)
    assert_files(tmp_path, written, REGRESSION_FILES + IMPORTANCE_FILES + LEARNING_CURVE_FILES)

    predictions = pl.read_csv(tmp_path / "predictions.csv")
    assert predictions.columns == ["actual", "predicted"]
    np.testing.assert_allclose(predictions["actual"].to_numpy(), actual)
    np.testing.assert_allclose(predictions["predicted"].to_numpy(), predicted)
    residuals = pl.read_csv(tmp_path / "residuals.csv")
    assert residuals.columns == ["predicted", "residual"]
    np.testing.assert_allclose(residuals["residual"].to_numpy(), actual - predicted)


def test_regression_csvs_are_sampled_the_same_way_each_time(tmp_path: Path) -> None:
    actual, predicted = regression_case(SAMPLE_ROWS * 3)
    frames = []
    for name in ("first", "second"):
        write(tmp_path / name, task="regression", classes=None, y_true=actual, proba=None, predicted=predicted)
        frames.append(pl.read_csv(tmp_path / name / "predictions.csv"))
    assert frames[0].height == SAMPLE_ROWS
    assert frames[0].equals(frames[1])
    rows = np.flatnonzero(np.isin(actual, frames[0]["actual"].to_numpy()))
    assert rows.size == SAMPLE_ROWS  # sampled rows, in their original order
    np.testing.assert_allclose(frames[0]["actual"].to_numpy(), actual[rows])


# --------------------------------------------------------------------------- importances, history, output folder


def test_feature_importance_sorted_descending(tmp_path: Path) -> None:
    importances = np.random.default_rng(0).random(len(FEATURES))
    write(tmp_path, importances=importances)
    records = read_records(tmp_path / "feature_importance.json", "importance")
    values = [r["importance"] for r in records]
    assert values == sorted(values, reverse=True)
    assert sorted(r["feature"] for r in records) == sorted(FEATURES)
    assert records[0]["feature"] == FEATURES[int(importances.argmax())]


def test_no_importances_no_history_no_files(tmp_path: Path) -> None:
    written = write(tmp_path, importances=None, history={})
    assert_files(tmp_path, written, CLASSIFICATION_FILES)


def test_learning_curve_has_the_splits_present(tmp_path: Path) -> None:
    write(tmp_path)
    frame = pl.read_csv(tmp_path / "learning_curve.csv")
    assert frame.columns == ["step", "train", "valid"]
    assert frame["step"].to_list() == [0, 1, 2, 3]
    assert frame["valid"].to_list() == HISTORY["valid"]

    write(tmp_path, history={"valid": np.array([1.0, 0.5]), "train": []})
    assert pl.read_csv(tmp_path / "learning_curve.csv").columns == ["step", "valid"]


def test_plots_of_an_earlier_model_are_removed(tmp_path: Path) -> None:
    write(tmp_path)
    (tmp_path / "notes.txt").write_text("not ours")
    actual, predicted = regression_case(50)
    written = write(
        tmp_path, task="regression", classes=None, y_true=actual, proba=None, predicted=predicted, history={}
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*REGRESSION_FILES, *IMPORTANCE_FILES, "notes.txt"])
    assert len(written) == len(REGRESSION_FILES + IMPORTANCE_FILES)


def test_failure_leaves_earlier_plots_untouched(tmp_path: Path) -> None:
    out = tmp_path / "plots"
    write(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError, match="importances"):
        write(out, importances=np.ones(3))  # not one per feature
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["plots"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"task": "ranking"}, "task must be one of"),
        ({"proba": None}, "need `classes` and `proba`"),
        ({"proba": np.full((60, 3), 1 / 3)}, "proba must have shape"),
        ({"y_true": np.full(60, 2)}, "class codes"),
        ({"task": "regression", "classes": None, "proba": None}, "need `predicted`"),
    ],
)
def test_bad_arguments(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write(tmp_path / "plots", **overrides)


@pytest.mark.slow
def test_large_test_split_is_fast(tmp_path: Path) -> None:
    codes, proba = classification_case(200_000, 5)
    write(tmp_path / "warm", y_true=codes[:100], proba=proba[:100], task="multiclass", classes=list("abcde"))
    started = time.perf_counter()
    write(tmp_path / "plots", y_true=codes, proba=proba, task="multiclass", classes=list("abcde"))
    actual, predicted = regression_case(200_000)
    write(tmp_path / "reg", task="regression", classes=None, y_true=actual, proba=None, predicted=predicted)
    assert time.perf_counter() - started < 10


# --------------------------------------------------------------------------- reading importances off estimators


def fit_data(task: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    if task == "regression":
        return x, 3 * x[:, 0] + x[:, 1] + rng.normal(0, 0.1, 300)
    if task == "multiclass":
        return x, np.digitize(x[:, 0] + 0.2 * x[:, 1], [-0.5, 0.5])
    return x, (x[:, 0] + 0.3 * x[:, 1] > 0).astype(int)


def trained(name: str, task: str, estimator: Any) -> Any:
    from mmp.model.registry import MODELS
    from mmp.model.trained import TrainedModel

    return TrainedModel(MODELS[name], task, estimator, [])


def assert_first_feature_leads(values: np.ndarray | None) -> None:
    assert values is not None and values.shape == (4,)
    assert np.all(values >= 0) and int(values.argmax()) == 0


def test_tree_importances() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    x, y = fit_data("binary")
    assert_first_feature_leads(
        feature_importances(
            trained("random_forest", "binary", RandomForestClassifier(n_estimators=10, random_state=0).fit(x, y)), 4
        )
    )
    assert (
        feature_importances(
            trained("hist_gradient_boosting", "binary", HistGradientBoostingClassifier(max_iter=5).fit(x, y)), 4
        )
        is None
    )
    with pytest.raises(ValueError, match="3 features"):
        feature_importances(trained("random_forest", "binary", RandomForestClassifier(n_estimators=2).fit(x, y)), 3)


def test_linear_importances_are_absolute_coefficients() -> None:
    from sklearn.linear_model import LogisticRegression, Ridge

    x, y = fit_data("multiclass")
    model = LogisticRegression().fit(x, y)
    values = feature_importances(trained("linear", "multiclass", model), 4)
    assert_first_feature_leads(values)
    np.testing.assert_allclose(values, np.abs(model.coef_).mean(axis=0))
    x, y = fit_data("regression")
    np.testing.assert_allclose(
        feature_importances(trained("linear", "regression", Ridge().fit(-x, y)), 4), [3, 1, 0, 0], atol=0.05
    )


def test_xgboost_importances_from_estimator_or_loaded_model(tmp_path: Path) -> None:
    xgboost = pytest.importorskip("xgboost")
    from mmp.model.trained import TrainedModel

    x, y = fit_data("binary")
    estimator = xgboost.XGBClassifier(n_estimators=5).fit(x, y)
    fitted = feature_importances(trained("xgboost", "binary", estimator), 4)
    assert_first_feature_leads(fitted)
    trained("xgboost", "binary", estimator).save(tmp_path)
    np.testing.assert_allclose(feature_importances(TrainedModel.load(tmp_path), 4), fitted)


def test_lightgbm_importances_are_gain_from_estimator_or_loaded_booster(tmp_path: Path) -> None:
    lightgbm = pytest.importorskip("lightgbm")
    from mmp.model.trained import TrainedModel

    x, y = fit_data("multiclass")
    estimator = lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(x, y)
    fitted = feature_importances(trained("lightgbm", "multiclass", estimator), 4)
    assert_first_feature_leads(fitted)
    assert fitted.sum() == pytest.approx(1.0)
    trained("lightgbm", "multiclass", estimator).save(tmp_path)
    loaded = TrainedModel.load(tmp_path)  # the LightGBM booster behind its LoadedBooster face
    np.testing.assert_allclose(feature_importances(loaded, 4), fitted)


def test_fold_importances_sums_one_hot_levels() -> None:
    groups = ["age", "town", "town", "town", "fare"]
    names, folded = fold_importances(np.array([0.5, 0.1, 0.2, 0.3, 1.5]), groups)
    assert names == ["age", "town", "fare"]
    np.testing.assert_allclose(folded, [0.5, 0.6, 1.5])
    with pytest.raises(ValueError, match="4 feature groups"):
        fold_importances(np.ones(3), groups[:4])
