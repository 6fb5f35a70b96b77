"""Saved scikit-learn models load back through skops with only scikit-learn's own types trusted: a model file
changed in a shared artifact store cannot run code where the model is loaded or served."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from mmp.errors import MmpError
from mmp.model.adapters.base import load_class
from mmp.model.registry import adapter_for, check_model_name


@pytest.mark.parametrize("name", ["random_forest", "hist_gradient_boosting", "k_neighbors", "logistic_regression"])
def test_a_saved_sklearn_model_loads_back_and_predicts_the_same(name: str, tmp_path: Path) -> None:
    spec = check_model_name(name)
    adapter = adapter_for(spec)
    rng = np.random.default_rng(0)
    x = rng.random((200, 4))
    y = (x[:, 0] > 0.5).astype(int)
    estimator = load_class(spec.classifier)().fit(x, y)
    loaded = adapter.load(spec, "binary", tmp_path / adapter.save(estimator, tmp_path))
    np.testing.assert_array_equal(loaded.predict_proba(x), estimator.predict_proba(x))


def test_a_model_file_with_foreign_types_is_refused_in_one_line(tmp_path: Path) -> None:
    spec = check_model_name("random_forest")
    adapter = adapter_for(spec)
    x = np.random.default_rng(0).random((50, 3))
    estimator = load_class(spec.classifier)(n_estimators=2).fit(x, x[:, 0] > 0.5)
    estimator.note_ = Fraction(1, 3)  # a type outside scikit-learn: what a tampered file would carry
    file = adapter.save(estimator, tmp_path)
    with pytest.raises(MmpError) as caught:
        adapter.load(spec, "binary", tmp_path / file)
    message = str(caught.value)
    assert "fractions.Fraction" in message and "retrain" in message and "\n" not in message
