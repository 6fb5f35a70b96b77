"""recipe.class_weight (issue 17): each library's own mechanism raises the minority class's recall."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from titanic_matrices import CLASSES, titanic_matrices

from conftest import REPO
from mmp.config import SplitConfig
from mmp.config.schema import from_dict
from mmp.data.split import split
from mmp.errors import ConfigError
from mmp.model.registry import check_model_name, resolve_params
from mmp.model.spec import FitData
from mmp.model.trained import TrainedModel, fit
from mmp.model.weighting import class_weights


def _imbalanced_titanic() -> dict[str, pl.DataFrame]:
    """Every passenger who died, one in six who survived: about 1 survivor to 8 deaths."""
    frame = pl.read_csv(REPO / "data" / "titanic.csv")
    keep = (frame["survived"] == "died") | pl.Series(np.random.default_rng(0).random(frame.height) < 1 / 6)
    return split(frame.filter(keep), "survived", "binary", SplitConfig(valid_size=0.2, test_size=0.3), seed=0)


def _minority_recall(model_name: str, setting: object, parts: dict[str, pl.DataFrame]) -> float:
    spec = check_model_name(model_name)
    pre, x, y = titanic_matrices(parts, spec)
    params = resolve_params(spec, "binary", {"n_estimators": 100} if spec.name != "linear" else {}, 0)
    weights = class_weights(setting, y["train"], CLASSES, "binary")
    data = FitData(x["train"], y["train"], x["valid"], y["valid"], pre.categorical_indices, None, weights)
    model = TrainedModel(spec, "binary", fit(spec, "binary", params, data).estimator, CLASSES)
    predicted = model.output(x["test"]).argmax(axis=1)
    survivors = y["test"] == 1
    return float((predicted[survivors] == 1).mean())


@pytest.mark.parametrize("model_name", ["xgboost", "lightgbm", "catboost", "random_forest", "linear"])
def test_balanced_raises_minority_recall(model_name: str) -> None:
    parts = _imbalanced_titanic()
    plain = _minority_recall(model_name, "none", parts)
    balanced = _minority_recall(model_name, "balanced", parts)
    print(f"{model_name}: survivor recall {plain:.3f} unweighted, {balanced:.3f} balanced")
    assert balanced > plain


def test_effective_weights() -> None:
    y = np.array([0] * 80 + [1] * 20)
    assert class_weights("balanced", y, CLASSES, "binary") == [0.625, 2.5]
    assert class_weights({"survived": 3}, y, CLASSES, "binary") == [1.0, 3.0]
    assert class_weights("none", y, CLASSES, "binary") is None
    with pytest.raises(ConfigError, match="class\\(es\\) alive that the target does not have"):
        class_weights({"alive": 2}, y, CLASSES, "binary")
    with pytest.raises(ConfigError, match="applies to classification"):
        class_weights("balanced", y.astype(float), [], "regression")


def test_bad_class_weight_settings_get_one_line() -> None:
    base = {"data": {"name": "t", "path": "x.csv", "target": "y"}}
    for value, message in (
        ("heavy", "recipe.class_weight is 'heavy'; use none, balanced or a mapping"),
        ({"survived": -1}, "recipe.class_weight.survived is -1; class weights must be positive"),
        ({"survived": "lots"}, "recipe.class_weight.survived is 'lots'"),
    ):
        recipe = {"name": "r", "model": {"name": "m"}, "class_weight": value}
        with pytest.raises(ConfigError, match=message):
            from_dict({**base, "recipe": recipe}, root=REPO)


def test_class_weight_and_the_library_parameter_clash() -> None:
    parts = _imbalanced_titanic()
    with pytest.raises(ConfigError, match="recipe.model.params.scale_pos_weight both weight the classes"):
        spec = check_model_name("lightgbm")
        params = resolve_params(spec, "binary", {"scale_pos_weight": 2.0}, 0)
        x = np.zeros((len(parts["train"]), 2))
        y = np.zeros(len(parts["train"]), dtype=int)
        fit(spec, "binary", params, FitData(x, y, x, y, [], None, [1.0, 2.0]))
