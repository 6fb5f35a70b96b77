"""Pure transformations on small frames: task inference, splitting, preprocessing, metrics, params."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from mmp.config import DataConfig, PreprocessingConfig, SplitConfig
from mmp.data import clean_and_check, infer_task, split
from mmp.data.preprocessing import Preprocessor
from mmp.errors import ConfigError, DataError
from mmp.evaluation.metrics import classification_metrics, regression_metrics
from mmp.model.registry import MODELS, check_params, encoding_plan, resolve_params


@pytest.fixture()
def frame() -> pl.DataFrame:
    rng = np.random.default_rng(0)
    n = 200
    return pl.DataFrame(
        {
            "age": [None if i % 10 == 0 else float(rng.integers(1, 80)) for i in range(n)],
            "town": [["north", "south", "east"][i % 3] if i % 7 else None for i in range(n)],
            "label": ["yes" if i % 4 == 0 else "no" for i in range(n)],
        }
    )


def fit(frame: pl.DataFrame, family: str, **settings: object) -> Preprocessor:
    return Preprocessor.fit(
        frame,
        target="label",
        task="binary",
        classes=["no", "yes"],
        id_columns=[],
        features=["age", "town"],
        categorical_columns=[],
        plan=encoding_plan(MODELS[family], PreprocessingConfig(**settings)),
    )


def test_native_encoding_keeps_missing_and_maps_unseen_to_missing(frame: pl.DataFrame) -> None:
    pre = fit(frame, "xgboost")
    assert pre.categorical_indices == [1]
    x = pre.transform(pl.DataFrame({"age": [None, 5.0], "town": ["west", "south"]}))
    assert np.isnan(x[0, 0]) and np.isnan(x[0, 1])  # missing age stays missing; unseen town is missing
    assert x[1, 1] == pre.columns[1].categories.index("south")


def test_linear_models_get_onehot_imputation_and_scaling(frame: pl.DataFrame) -> None:
    pre = fit(frame, "linear")
    assert pre.feature_names == ["age", "town=east", "town=north", "town=south"] or set(pre.feature_names) == {
        "age",
        "town=east",
        "town=north",
        "town=south",
    }
    x = pre.transform(frame)
    assert not np.isnan(x).any()
    assert abs(float(x[:, 0].mean())) < 1e-5 and abs(float(x[:, 0].std()) - 1) < 0.02
    unseen = pre.transform(pl.DataFrame({"age": [30.0], "town": ["west"]}))
    assert unseen[0, 1:].sum() == 0  # unseen category: all zeros
    assert pre.feature_groups == ["age", "town", "town", "town"]


def test_ordinal_for_forests_and_json_roundtrip(frame: pl.DataFrame) -> None:
    pre = fit(frame, "random_forest")
    again = Preprocessor.from_dict(__import__("json").loads(pre.to_json()))
    assert again == pre
    x = again.transform(pl.DataFrame({"age": [None], "town": [None]}))
    assert x[0, 1] == -1.0 and x[0, 0] == pre.columns[0].impute


def test_transform_names_missing_columns(frame: pl.DataFrame) -> None:
    with pytest.raises(DataError, match="missing column"):
        fit(frame, "xgboost").transform(pl.DataFrame({"age": [1.0]}))


def test_split_is_seeded_and_stratified(frame: pl.DataFrame) -> None:
    config = SplitConfig(valid_size=0.2, test_size=0.2)
    first = split(frame, "label", "binary", config, seed=1)
    second = split(frame, "label", "binary", config, seed=1)
    assert all(first[k].equals(second[k]) for k in first)
    assert sum(part.height for part in first.values()) == frame.height
    for part in first.values():
        assert part["label"].eq("yes").mean() == pytest.approx(0.25, abs=0.03)
    other = split(frame, "label", "binary", config, seed=2)
    assert not first["test"].equals(other["test"])


@pytest.mark.parametrize(
    ("values", "requested", "expected"),
    [
        (["a", "b", "a"], "auto", "binary"),
        (["a", "b", "c"], "auto", "multiclass"),
        ([1.5, 2.25, 3.0], "auto", "regression"),
        (list(range(100)), "auto", "regression"),
        ([0, 1, 2, 1], "auto", "multiclass"),
        ([0, 1, 0, 1], "regression", "regression"),
    ],
)
def test_infer_task(values: list, requested: str, expected: str) -> None:
    assert infer_task(pl.Series("y", values), requested, "y") == expected


@pytest.mark.parametrize(
    ("values", "requested", "message"),
    [
        (["a", "a"], "auto", "single value"),
        (["a", "b"], "regression", "numeric target"),
        ([0.5, 1.5, 2.0], "binary", "fractional"),
        (["a", "b", "c"], "binary", "set recipe.task=multiclass"),
    ],
)
def test_task_mismatch_is_explained(values: list, requested: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        infer_task(pl.Series("y", values), requested, "y")


def test_clean_drops_null_targets_and_orders_positive_class_last(frame: pl.DataFrame) -> None:
    data = DataConfig(name="t", path="x.csv", target="label", positive_class="no")
    with_nulls = pl.concat([frame, pl.DataFrame({"age": [1.0], "town": ["north"], "label": [None]})])
    cleaned = clean_and_check(with_nulls, data, "auto")
    assert cleaned.dropped_null_target == 1 and cleaned.frame.height == frame.height
    assert cleaned.classes == ["yes", "no"]


def test_metrics() -> None:
    y = np.array([0, 1, 1, 0])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.3, 0.7]])
    result = classification_metrics(y, proba)
    assert result["accuracy"] == 0.75 and result["roc_auc"] == 0.75
    reg = regression_metrics(np.array([1.0, 2.0]), np.array([1.0, 3.0]))
    assert reg["mae"] == 0.5 and "mape" in reg
    assert "mape" not in regression_metrics(np.array([0.0, 2.0]), np.array([1.0, 3.0]))


def test_hyperparameters_are_checked() -> None:
    with pytest.raises(ConfigError, match="did you mean 'num_leaves'"):
        check_params(MODELS["lightgbm"], {"num_leave": 3}, seed=0)
    with pytest.raises(ConfigError, match="must be a number"):
        check_params(MODELS["xgboost"], {"learning_rate": "fast"}, seed=0)
    linear = resolve_params(MODELS["linear"], "regression", {"C": 1.0, "alpha": 2.0}, seed=0)
    assert linear == {"alpha": 2.0, "random_state": 0}
    assert resolve_params(MODELS["lightgbm"], "binary", {"feature_fraction": 0.8}, 1)["feature_fraction"] == 0.8


@pytest.mark.parametrize("family", ["xgboost", "random_forest", "linear"])
def test_row_encoding_matches_frame_transform(frame: pl.DataFrame, family: str) -> None:
    """The serving fast path (dicts) and the batch path (Polars) give the same matrix."""
    pre = fit(frame, family)
    extra = pl.DataFrame({"age": [None, 41.0, float("nan")], "town": ["west", None, "north"], "label": ["no"] * 3})
    rows = pl.concat([frame, extra])
    np.testing.assert_array_equal(pre.encode_rows(rows.to_dicts()), pre.transform(rows))


def sklearn_metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """What classification_metrics reports, computed by scikit-learn itself."""
    from sklearn import metrics

    labels = list(range(proba.shape[1]))
    predicted = proba.argmax(axis=1)
    result = {
        "accuracy": metrics.accuracy_score(y, predicted),
        "precision_macro": metrics.precision_score(y, predicted, average="macro", labels=labels, zero_division=0),
        "recall_macro": metrics.recall_score(y, predicted, average="macro", labels=labels, zero_division=0),
        "f1_macro": metrics.f1_score(y, predicted, average="macro", labels=labels, zero_division=0),
        "log_loss": metrics.log_loss(y, np.clip(proba, 1e-15, 1.0), labels=labels),
    }
    if len(np.unique(y)) == len(labels):
        result["roc_auc"] = (
            metrics.roc_auc_score(y, proba[:, 1])
            if len(labels) == 2
            else metrics.roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=labels)
        )
    return result


@pytest.mark.parametrize(
    ("classes", "rows", "dtype"), [(2, 50_000, np.float32), (3, 2_000, np.float64), (4, 500, np.float32)]
)
def test_classification_metrics_equal_scikit_learns(classes: int, rows: int, dtype: type) -> None:
    rng = np.random.default_rng(classes)
    y = rng.integers(0, classes, rows)
    raw = np.round(rng.random((rows, classes)) * 4) + np.eye(classes)[y] * 2 + 0.5  # many tied scores
    proba = (raw / raw.sum(axis=1, keepdims=True)).astype(dtype)
    assert classification_metrics(y, proba) == pytest.approx(sklearn_metrics(y, proba), rel=1e-12, abs=1e-15)

    # A class that is never predicted, and one missing from this split (no AUC then).
    y = np.array([0, 0, 1, 1, 0])
    proba = np.array([[0.9, 0.1, 0], [0.8, 0.2, 0], [0.6, 0.4, 0], [0.3, 0.7, 0], [0.5, 0.5, 0]])
    assert classification_metrics(y, proba) == pytest.approx(sklearn_metrics(y, proba), rel=1e-12)
    assert "roc_auc" not in classification_metrics(y, proba)
