"""SHAP values are exact and additive for every supported model family, on the bundled data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmp.config import DataConfig, PreprocessingConfig, SplitConfig
from mmp.data import clean_and_check, feature_columns, load, split
from mmp.data.preprocessing import Preprocessor
from mmp.explanation.shap import ExplainError, explain, raw_output
from mmp.model.registry import MODELS, encoding_plan, resolve_params
from mmp.model.spec import FitData, ModelSpec
from mmp.model.trained import TrainedModel, fit

DATA = Path(__file__).resolve().parents[1] / "data"
SMALL = {
    "xgboost": {"n_estimators": 60, "max_depth": 4},
    "lightgbm": {"n_estimators": 60, "num_leaves": 15},
    "random_forest": {"n_estimators": 40, "max_depth": 6},
    "extra_trees": {"n_estimators": 40, "max_depth": 6},
    "hist_gradient_boosting": {"max_iter": 40},
    "linear": {"max_iter": 500},
    "catboost": {"iterations": 60, "depth": 4},
}


def trained(family_name: str, dataset: str, target: str, seed: int = 0) -> tuple[TrainedModel, Preprocessor, dict]:
    data = DataConfig(name=dataset, path=str(DATA / f"{dataset}.csv"), target=target)
    cleaned = clean_and_check(load(data, DATA / f"{dataset}.csv"), data, "auto")
    parts = split(cleaned.frame, target, cleaned.task, SplitConfig(), seed)
    spec: ModelSpec = MODELS[family_name]
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
    params = resolve_params(spec, cleaned.task, SMALL[family_name], seed)
    data = FitData(x["train"], y["train"], x["valid"], y["valid"], pre.categorical_indices, 10)
    result = fit(spec, cleaned.task, params, data)
    return TrainedModel(spec, cleaned.task, result.estimator, cleaned.classes or []), pre, x


@pytest.mark.parametrize("family", list(SMALL))
@pytest.mark.parametrize(("dataset", "target"), [("titanic", "survived"), ("penguins", "species")])
def test_shap_values_are_additive(family: str, dataset: str, target: str) -> None:
    model, pre, x = trained(family, dataset, target)
    explanation = explain(model, x["test"], pre.feature_groups, background=x["train"])
    output = raw_output(model, x["test"])
    reconstructed = explanation.values.sum(axis=-1) + explanation.base_values
    assert reconstructed.shape == output.shape
    np.testing.assert_allclose(reconstructed, output, atol=1e-4)
    assert explanation.feature_names == pre.input_columns  # one-hot groups folded back


def test_regression_is_additive_too() -> None:
    model, pre, x = trained("xgboost", "diamonds", "price")
    explanation = explain(model, x["test"][:500], pre.feature_groups)
    np.testing.assert_allclose(
        explanation.values.sum(axis=1) + explanation.base_values,
        raw_output(model, x["test"][:500]),
        rtol=1e-5,
        atol=1e-2,
    )
    assert list(explanation.mean_abs())[0] in ("carat", "y", "x")


@pytest.mark.parametrize("family", ["xgboost", "lightgbm", "linear"])
def test_sex_is_a_top_feature_on_titanic(family: str) -> None:
    model, pre, x = trained(family, "titanic", "survived")
    ranking = list(explain(model, x["test"], pre.feature_groups, background=x["train"]).mean_abs())
    assert "sex" in ranking[:2]


def test_unsupported_model_fails_clearly() -> None:
    from sklearn.neighbors import KNeighborsClassifier

    knn = ModelSpec("knn", "sklearn", "sklearn.neighbors:KNeighborsClassifier", None, "onehot", False, linear=True)
    model = TrainedModel(knn, "binary", KNeighborsClassifier(), ["a", "b"])
    with pytest.raises(ExplainError, match="No exact SHAP explainer for sklearn.neighbors.KNeighborsClassifier"):
        explain(model, np.zeros((2, 2), dtype=np.float32), ["a", "b"])
