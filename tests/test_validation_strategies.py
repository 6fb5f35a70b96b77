"""Validation that matches the data (issue 17): temporal and group splits, and their config errors."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from conftest import REPO
from mmp.config import SplitConfig
from mmp.config.schema import from_dict
from mmp.data.split import split
from mmp.errors import ConfigError, DataError


def _titanic() -> pl.DataFrame:
    frame = pl.read_csv(REPO / "data" / "titanic.csv")
    rng = np.random.default_rng(0)
    start = date(2020, 1, 1)
    return frame.with_columns(
        pl.Series("when", [start + timedelta(days=int(d)) for d in rng.integers(0, 400, frame.height)]),
        pl.Series("family", rng.integers(0, 150, frame.height)),
    )


def test_temporal_split_keeps_the_latest_rows_for_test() -> None:
    frame = _titanic()
    parts = split(frame, "survived", "binary", SplitConfig(strategy="temporal", time_column="when"), seed=1)
    assert sum(p.height for p in parts.values()) == frame.height
    assert parts["test"].height == round(frame.height * 0.15)
    # No test row is older than a train row, and valid sits between them.
    assert parts["test"]["when"].min() >= parts["valid"]["when"].max() >= parts["train"]["when"].max()
    # No shuffling: a different seed gives the same split.
    again = split(frame, "survived", "binary", SplitConfig(strategy="temporal", time_column="when"), seed=2)
    assert all(again[name].equals(parts[name]) for name in parts)


def test_group_split_keeps_each_group_in_one_split() -> None:
    frame = _titanic()
    parts = split(frame, "survived", "binary", SplitConfig(strategy="group", group_column="family"), seed=3)
    groups = {name: set(part["family"].to_list()) for name, part in parts.items()}
    assert not groups["train"] & groups["valid"] and not groups["train"] & groups["test"]
    assert not groups["valid"] & groups["test"]
    assert sum(p.height for p in parts.values()) == frame.height
    for name in ("valid", "test"):  # close to the asked 15 % (whole groups of about 9 rows)
        assert abs(parts[name].height - 0.15 * frame.height) < 30


def test_random_and_stratified_splits() -> None:
    frame = _titanic()
    stratified = split(frame, "survived", "binary", SplitConfig(), seed=42)
    assert stratified["test"]["survived"].value_counts().height == 2
    legacy = split(frame, "survived", "binary", SplitConfig(stratify=False), seed=42)
    random = split(frame, "survived", "binary", SplitConfig(strategy="random"), seed=42)
    assert all(legacy[name].equals(random[name]) for name in SPLITS_)
    assert not random["test"].equals(stratified["test"])


SPLITS_ = ("train", "valid", "test")


def test_bad_split_settings_get_one_line() -> None:
    frame = _titanic()
    with pytest.raises(DataError, match="split.time_column is 'nope'"):
        split(frame, "survived", "binary", SplitConfig(strategy="temporal", time_column="nope"), seed=1)
    holes = frame.with_columns(pl.when(pl.col("age") > 60).then(None).otherwise(pl.col("when")).alias("when"))
    with pytest.raises(DataError, match="missing value"):
        split(holes, "survived", "binary", SplitConfig(strategy="temporal", time_column="when"), seed=1)
    base = {"data": {"name": "t", "path": "x.csv", "target": "y"}, "recipe": {"name": "r", "model": {"name": "m"}}}
    for split_cfg, message in (
        ({"strategy": "time"}, "Config key 'split.strategy' is 'time'; choose one of"),
        ({"strategy": "temporal"}, "split.strategy temporal needs split.time_column"),
        ({"strategy": "group"}, "split.strategy group needs split.group_column"),
    ):
        with pytest.raises(ConfigError, match=message) as caught:
            from_dict({**base, "split": split_cfg}, root=REPO)
        assert "\n" not in str(caught.value)
    assert dataclasses.asdict(SplitConfig())["strategy"] == "stratified"


def _cross_validated(k: int, config: SplitConfig, seed: int = 0) -> tuple[object, np.ndarray]:
    from mmp.config import PreprocessingConfig
    from mmp.data.preprocessing import Preprocessor
    from mmp.data.split import folds
    from mmp.model.registry import check_model_name, encoding_plan, resolve_params
    from mmp.pipeline.cv import cross_validate

    frame = _titanic()
    spec = check_model_name("xgboost")
    classes = ["died", "survived"]
    pre = Preprocessor.fit(
        frame,
        target="survived",
        task="binary",
        classes=classes,
        id_columns=["when", "family"],
        features=["pclass", "sex", "age", "sibsp", "parch"],
        categorical_columns=[],
        plan=encoding_plan(spec, PreprocessingConfig()),
    )
    fold_of = folds(frame, "survived", "binary", config, k, seed)
    params = resolve_params(spec, "binary", {"n_estimators": 60, "max_depth": 4, "n_jobs": 1}, seed)
    x, y = pre.transform(frame), pre.encode_target(frame["survived"])
    result = cross_validate(
        spec, "binary", params, x, y, fold_of, k, config.strategy == "temporal", classes, [], 10, None
    )
    return result, fold_of


def test_five_folds_cover_every_row_once_and_repeat_exactly() -> None:
    result, fold_of = _cross_validated(5, SplitConfig())
    assert len(result.fold_metrics) == 5 and all("roc_auc" in m for m in result.fold_metrics)
    # Every row is validated in exactly one fold: one fold id each, and one out-of-fold prediction each.
    assert sorted(np.unique(fold_of).tolist()) == [0, 1, 2, 3, 4]
    assert np.bincount(fold_of).max() - np.bincount(fold_of).min() <= 1
    assert result.validated.all() and not np.isnan(result.oof).any()
    summary = result.summary()
    assert 0.75 < summary["cv_roc_auc_mean"] < 0.95 and 0 < summary["cv_roc_auc_std"] < 0.1
    assert all(b is not None for b in result.best_iterations)
    again, _ = _cross_validated(5, SplitConfig())
    assert again.fold_metrics == result.fold_metrics  # the same seed: identical fold metrics
    np.testing.assert_array_equal(again.oof, result.oof)


def test_grouped_and_time_series_folds() -> None:
    frame = _titanic()
    from mmp.data.split import folds

    grouped = folds(frame, "survived", "binary", SplitConfig(strategy="group", group_column="family"), 4, 0)
    by_group = (
        pl.DataFrame({"family": frame["family"], "fold": grouped}).group_by("family").agg(pl.col("fold").n_unique())
    )
    assert by_group["fold"].max() == 1  # no group in two folds
    result, blocks = _cross_validated(3, SplitConfig(strategy="temporal", time_column="when"))
    times = frame["when"].to_numpy()
    for block in range(1, 4):  # each validated block is later than every row it was trained on
        assert times[blocks == block].min() >= times[blocks < block].max()
    assert len(result.fold_metrics) == 3 and not result.validated[blocks == 0].any()
