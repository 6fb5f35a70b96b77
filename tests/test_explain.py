"""SHAP values are exact and additive for every supported model family, on the bundled data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmp.config import DataConfig, PreprocessingConfig, SplitConfig
from mmp.data import clean_and_check, feature_columns, load, split
from mmp.data.preprocessing import Preprocessor, fold
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


# --------------------------------------------------------------------------- charts (issue 15, issue 16 item 7)


def test_chart_values_are_in_the_users_units_with_one_hot_groups_decoded() -> None:
    import polars as pl

    from mmp.data.preprocessing import EncodingPlan
    from mmp.pipeline.explain import chart_values

    frame = pl.DataFrame({"town": ["north", "south", None, "east"], "age": [20.0, 40.0, None, 60.0], "y": [0, 1, 0, 1]})
    plan = EncodingPlan(encoding="onehot", imputation="median", scaling="standard")
    pre = Preprocessor.fit(
        frame, target="y", task="binary", classes=None, id_columns=[], features=["town", "age"],
        categorical_columns=[], plan=plan,
    )  # fmt: skip
    data, categories = chart_values(pre.transform(frame), pre, ["town", "age"])
    labels = categories["town"]
    decoded = [labels[int(code)] if np.isfinite(code) else None for code in data[:, 0]]
    assert decoded == ["north", "south", None, "east"]  # a row with no level set has no code
    np.testing.assert_allclose(data[:, 1], [20.0, 40.0, 40.0, 60.0], rtol=1e-5)  # unscaled; the median imputed
    assert "age" not in categories


def test_dependence_charts_tick_category_labels_not_codes() -> None:
    from mmp.explanation.charts import MISSING_LABEL, dependence_chart
    from mmp.pipeline.explain import chart_values

    model, pre, x = trained("xgboost", "titanic", "survived")
    explanation = explain(model, x["test"], pre.feature_groups)
    data, categories = chart_values(x["test"], pre, explanation.feature_names)
    column = explanation.feature_names.index("pclass")
    assert categories["pclass"] == ["1st", "2nd", "3rd"]
    fig = dependence_chart(explanation.values[:, column], data[:, column], categories["pclass"], "pclass", "t", "")
    assert [label.get_text() for label in fig.axes[0].get_xticklabels()] == ["1st", "2nd", "3rd"]
    codes = np.array([0.0, 1.0, -1.0, np.nan])  # -1: the ordinal code of a missing or unseen level
    fig = dependence_chart(np.zeros(4), codes, ["a", "b"], "f", "t", "")
    assert [label.get_text() for label in fig.axes[0].get_xticklabels()] == ["a", "b", MISSING_LABEL]


def test_beeswarm_layout_and_colours() -> None:
    from mmp.explanation.charts import colour_scale, swarm_offsets

    offsets = swarm_offsets(np.array([0.0, 0.0, 0.0, 5.0]))
    assert sorted(offsets[:3]) == [-1.0, 0.0, 1.0] and offsets[3] == 0.0  # equal values stack both ways
    assert np.array_equal(offsets, swarm_offsets(np.array([0.0, 0.0, 0.0, 5.0])))  # seeded
    scaled = colour_scale(np.array([np.nan, *range(100)]))
    assert np.isnan(scaled[0]) and scaled[1] == 0.0 and scaled[-1] == 1.0
    assert np.isnan(colour_scale(np.full(3, np.nan))).all()  # no numpy warning for an all-NaN column


@pytest.mark.slow
def test_an_xgboost_explanation_with_charts_imports_no_other_library(tmp_path: Path) -> None:
    """The explain stage of an XGBoost model loads neither shap nor the other model libraries."""
    import subprocess
    import sys

    script = f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_explain import trained
from mmp.explanation.charts import write_shap_plots
from mmp.pipeline.explain import chart_values
model, pre, x = trained("xgboost", "titanic", "survived")
explanation = explain(model, x["test"], pre.feature_groups)
data, categories = chart_values(x["test"], pre, explanation.feature_names)
written = write_shap_plots(Path({str(tmp_path)!r}), explanation, data, top_k=2, categories=categories)
print(len(written), *sorted(m for m in ("shap", "lightgbm", "catboost", "numba") if m in sys.modules))
"""
    out = subprocess.run(
        [sys.executable, "-c", "from mmp.explanation.shap import explain\n" + script],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.split() == ["4"]  # summary, two dependence charts, bar; no other library


@pytest.mark.parametrize("family", ["random_forest", "extra_trees"])
@pytest.mark.parametrize(("dataset", "target"), [("titanic", "survived"), ("penguins", "species")])
def test_forests_get_shap_tree_explainers_values_without_importing_shap(family: str, dataset: str, target: str) -> None:
    """The forests' TreeSHAP through XGBoost's C library gives shap.TreeExplainer's values (float32 precision)."""
    import shap

    model, pre, x = trained(family, dataset, target)
    rows = x["test"][:100]
    ours = explain(model, rows, pre.feature_groups)
    assert ours.explainer == "treeshap.xgboost_c" and ours.output_space == "probability"
    reference = shap.TreeExplainer(model.estimator)
    values = np.moveaxis(np.asarray(reference.shap_values(rows, check_additivity=False)), 2, 1)
    base = np.asarray(reference.expected_value, dtype=float)
    names, folded = fold(values[:, 1] if model.task == "binary" else values, pre.feature_groups)
    assert names == ours.feature_names
    np.testing.assert_allclose(ours.values, folded, atol=1e-5)
    np.testing.assert_allclose(ours.base_values, base[1] if model.task == "binary" else base, atol=1e-5)
