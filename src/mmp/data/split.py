"""The seeded train/valid/test split: random or stratified by class, temporal (latest rows to test), or by group
(no group spans two splits)."""

from __future__ import annotations

import numpy as np
import polars as pl

from mmp.config import SplitConfig
from mmp.errors import DataError

SPLITS = ("train", "valid", "test")
STRATEGIES = ("random", "stratified", "temporal", "group")
_TRAIN, _VALID, _TEST = 0, 1, 2


def split(frame: pl.DataFrame, target: str, task: str, config: SplitConfig, seed: int) -> dict[str, pl.DataFrame]:
    """Split by ``config.strategy``; every split must have rows, and train every class."""
    codes, order = assign(frame, target, task, config, seed)
    if order is not None:  # temporal: each split's rows in time order
        return {name: frame[order].filter(pl.Series(codes[order] == code)) for code, name in enumerate(SPLITS)}
    return {name: frame.filter(pl.Series(codes == code)) for code, name in enumerate(SPLITS)}


def assign(
    frame: pl.DataFrame, target: str, task: str, config: SplitConfig, seed: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`split` without the split frames: each row's split (an int8 code, the index in :data:`SPLITS`) and,
    for a temporal split, the rows' time order (else None). ``frame`` needs only the columns the strategy reads
    (target, time or group column). Checked as :func:`split` is: every split has rows, train every class."""
    n = frame.height
    n_test, n_valid = int(round(n * config.test_size)), int(round(n * config.valid_size))
    order = None
    if config.strategy == "temporal":
        order = _time_order(frame, config.time_column)
        codes = np.full(n, _TRAIN, dtype=np.int8)
        # Oldest rows train, then valid, the latest rows test: no shuffling, so nothing is learnt from the future.
        codes[order[n - n_test - n_valid : n - n_test]] = _VALID
        codes[order[n - n_test :]] = _TEST
    elif config.strategy == "group":
        codes = _by_group(frame, config.group_column, n_test, n_valid, seed)
    else:
        stratified = config.strategy == "stratified" and config.stratify and task != "regression"
        codes = _by_rows(n, frame[target] if stratified else None, config, seed)
    for name, count in zip(SPLITS, np.bincount(codes, minlength=len(SPLITS)), strict=True):
        if count == 0:
            raise DataError(f"The {name} split is empty ({n} rows in all); use more data or larger split sizes")
    if task != "regression":
        labels = frame[target]
        seen = set(labels.filter(pl.Series(codes == _TRAIN)).unique().to_list())
        missing = sorted(set(labels.unique().to_list()) - seen)
        if missing:
            raise DataError(
                f"Class(es) {', '.join(map(str, missing))} of '{target}' have too few rows to reach the train split; "
                "drop them with data.query or add data"
            )
    return codes, order


def _by_rows(n: int, labels: pl.Series | None, config: SplitConfig, seed: int) -> np.ndarray:
    """Shuffled rows, the sizes applied per class when ``labels`` are given (stratified)."""
    rng = np.random.default_rng(seed)
    if labels is None:
        groups = [np.arange(n)]
    else:
        # One comparison per class, in the order of the classes as text (a string rank of every row costs 7x
        # more; comparing in the labels' own type spares a text copy of every row).
        values = labels.unique()
        ordered = values.gather(values.cast(pl.String).arg_sort())
        groups = [np.flatnonzero((labels == label).to_numpy()) for label in ordered.to_list()]
    assignment = np.full(n, _TRAIN, dtype=np.int8)
    for rows in groups:
        rows = rng.permutation(rows)
        n_test = int(round(len(rows) * config.test_size))
        n_valid = int(round(len(rows) * config.valid_size))
        assignment[rows[:n_test]] = _TEST
        assignment[rows[n_test : n_test + n_valid]] = _VALID
    return assignment


def _column(frame: pl.DataFrame, name: str | None, key: str) -> pl.Series:
    if name is None or name not in frame.columns:
        raise DataError(
            f"split.{key} is {name!r}, which is not a column of the data; set split.{key} to one of "
            f"{', '.join(frame.columns[:10])}"
        )
    return frame[name]


def _time_order(frame: pl.DataFrame, column: str | None) -> np.ndarray:
    """Row indices from oldest to latest (ties keep file order)."""
    times = _column(frame, column, "time_column")
    if times.null_count():
        raise DataError(
            f"split.time_column '{column}' has {times.null_count()} missing value(s); a temporal split needs a time "
            "on every row: fill them or filter them out with data.query"
        )
    ordered = pl.DataFrame({"time": times, "row": np.arange(times.len())}).sort("time", "row")
    return ordered["row"].to_numpy()


def _by_group(frame: pl.DataFrame, column: str | None, n_test: int, n_valid: int, seed: int) -> np.ndarray:
    """Whole groups, in a seeded order, fill test then valid; the rest train. A group's rows stay together."""
    groups = _column(frame, column, "group_column")
    codes = _group_codes(groups)
    sizes = np.bincount(codes)
    order = np.random.default_rng(seed).permutation(sizes.size)
    # A group goes where its middle row falls along the shuffled groups: split sizes come out close to asked.
    middle = np.cumsum(sizes[order]) - sizes[order] / 2
    where = np.where(middle <= n_test, _TEST, np.where(middle <= n_test + n_valid, _VALID, _TRAIN))
    by_group = np.empty(sizes.size, dtype=np.int8)
    by_group[order] = where
    return by_group[codes]


def folds(frame: pl.DataFrame, target: str, task: str, config: SplitConfig, k: int, seed: int) -> np.ndarray:
    """Each row's fold (0..k-1) for k-fold cross-validation, by ``config.strategy``: shuffled rows dealt round
    the folds (per class when stratified), whole groups filling the smallest fold, or, for temporal, k+1 time
    blocks (0 oldest) where fold i validates on block i and trains on the blocks before it; block 0 only trains.
    """
    n = frame.height
    rng = np.random.default_rng(seed)
    if config.strategy == "temporal":
        order = _time_order(frame, config.time_column)
        block = np.empty(n, dtype=np.int64)
        for index, rows in enumerate(np.array_split(order, k + 1)):
            block[rows] = index
        return block
    fold = np.empty(n, dtype=np.int64)
    if config.strategy == "group":
        codes = _group_codes(_column(frame, config.group_column, "group_column"))
        sizes = np.bincount(codes)
        by_group = np.empty(sizes.size, dtype=np.int64)
        filled = np.zeros(k)
        for group in rng.permutation(sizes.size):  # each group into the emptiest fold so far
            by_group[group] = int(np.argmin(filled))
            filled[by_group[group]] += sizes[group]
        return by_group[codes]
    stratified = config.strategy == "stratified" and config.stratify and task != "regression"
    labels = frame[target].cast(pl.String) if stratified else None
    groups = (
        [np.flatnonzero((labels == label).to_numpy()) for label in sorted(labels.unique().to_list())]
        if labels is not None
        else [np.arange(n)]
    )
    start = 0
    for rows in groups:  # dealt on from where the last class stopped: fold sizes differ by at most one
        fold[rng.permutation(rows)] = (start + np.arange(len(rows))) % k
        start = (start + len(rows)) % k
    return fold


def _group_codes(groups: pl.Series) -> np.ndarray:
    return groups.cast(pl.String).fill_null("\0null").rank("dense").cast(pl.Int64).to_numpy() - 1
