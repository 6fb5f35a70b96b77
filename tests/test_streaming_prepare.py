"""The prepare stage streams (issue 18): the same splits and preprocessing state as the in-memory path, and one
error line for bad input found while streaming. Its memory against the row count is measured by
bench/bench_scale.py (1M to 10M rows: sizes a test cannot afford)."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from conftest import REPO
from mmp import data as data_lib
from mmp.config import load_config
from mmp.data.preprocessing import Preprocessor
from mmp.errors import DataError
from mmp.model.registry import check_model_name, encoding_plan
from mmp.pipeline.prepare import check_inputs, fit_preprocessing, write_splits


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("streaming") / "project"
    shutil.copytree(REPO / "conf", root / "conf", symlinks=True)
    shutil.copytree(REPO / "recipes", root / "recipes")
    shutil.copytree(REPO / "data", root / "data", ignore=shutil.ignore_patterns("prepared"))
    return root


def _in_memory(config, spec):  # type: ignore[no-untyped-def]
    """The prepare stage's work on a frame in memory, as it ran before it streamed."""
    data = config.data
    cleaned = data_lib.clean_and_check(data_lib.load(data, config.resolve(data.path)), data, config.recipe.task)
    parts = data_lib.split(cleaned.frame, data.target, cleaned.task, config.split, config.seed)
    preprocessor = Preprocessor.fit(
        parts["train"],
        target=data.target,
        task=cleaned.task,
        classes=cleaned.classes,
        id_columns=data.id_columns,
        features=data_lib.feature_columns(cleaned.frame, data),
        categorical_columns=data.categorical_columns,
        plan=encoding_plan(spec, config.recipe.preprocessing),
    )
    return parts, preprocessor


@pytest.mark.parametrize(
    "overrides",
    [
        ["recipe=xgb-baseline"],
        ["recipe=linear-baseline"],  # median imputation, scaling, one-hot
        ["recipe=linear-baseline", "data=penguins"],
        ["recipe=rf-experiment", "data=diamonds"],
        ["split.strategy=random"],
        ["split.strategy=temporal", "split.time_column=sibsp"],  # rows come out in time order
        ["split.strategy=group", "split.group_column=parch", "split.test_size=0.2"],
        ["data.query='age >= 18'"],
    ],
    ids=lambda o: " ".join(o),
)
def test_streamed_splits_and_state_equal_the_in_memory_ones(root: Path, tmp_path: Path, overrides: list[str]) -> None:
    config = load_config(overrides, root=root)
    spec = check_model_name(config.recipe.model.name)
    parts, preprocessor = _in_memory(config, spec)
    inputs = check_inputs(config, spec, columns=False)  # as the stage runs: write_splits checks the features
    write_splits(inputs, tmp_path)
    for name, part in parts.items():
        assert pl.read_parquet(tmp_path / f"{name}.parquet").equals(part), name
    assert inputs.rows == {name: part.height for name, part in parts.items()}
    streamed = fit_preprocessing(config, spec, inputs, tmp_path / "train.parquet")
    assert streamed.to_json() == preprocessor.to_json()


def test_a_missing_split_column_is_named_with_the_files_columns(root: Path) -> None:
    config = load_config(["split.strategy=temporal", "split.time_column=when"], root=root)
    with pytest.raises(DataError, match=r"split.time_column is 'when'.*one of pclass, survived, sex"):
        check_inputs(config)


def test_a_parse_error_while_streaming_is_one_line(root: Path, tmp_path: Path) -> None:
    bad = root / "data" / "bad.csv"
    rows = ["x,y"] + [f"{i},{i % 2}" for i in range(30_000)] + ["oops,1"]
    bad.write_text("\n".join(rows) + "\n", encoding="utf-8")
    config = load_config(["data.path=data/bad.csv", "data.target=y", "data.positive_class=null"], root=root)
    with pytest.raises(DataError, match=r"bad.csv cannot be parsed"):
        check_inputs(config)  # mmp validate: every column parsed
    inputs = check_inputs(config, columns=False)  # the stage: the target only, then one pass writes the splits
    with pytest.raises(DataError, match=r"bad.csv cannot be parsed"):
        write_splits(inputs, tmp_path)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_a_bad_feature_column_found_while_writing_leaves_no_split(root: Path, tmp_path: Path) -> None:
    rows = (root / "data" / "titanic.csv").read_text(encoding="utf-8").splitlines()
    cells = rows[7].split(",")
    rows[7] = ",".join([*cells[:3], "inf", *cells[4:]])  # age
    (root / "data" / "inf.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    config = load_config(["data.path=data/inf.csv"], root=root)
    inputs = check_inputs(config, columns=False)
    with pytest.raises(DataError, match=r"Column 'age' holds 1 infinite value"):
        write_splits(inputs, tmp_path)
    assert not list(tmp_path.iterdir())
