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
