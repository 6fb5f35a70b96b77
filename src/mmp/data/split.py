"""The seeded train/valid/test split, stratified for classification."""

from __future__ import annotations

import numpy as np
import polars as pl

from mmp.config import SplitConfig
from mmp.errors import DataError

SPLITS = ("train", "valid", "test")


def split(frame: pl.DataFrame, target: str, task: str, config: SplitConfig, seed: int) -> dict[str, pl.DataFrame]:
    """Seeded train/valid/test split, stratified by class for classification."""
    rng = np.random.default_rng(seed)
    n = frame.height
    assignment = np.zeros(n, dtype=np.int8)  # 0 train, 1 valid, 2 test
    if task != "regression" and config.stratify:
        labels = frame[target].cast(pl.String)
        # One comparison per class, in sorted order (a string rank of every row costs 7x more).
        groups = [np.flatnonzero((labels == label).to_numpy()) for label in sorted(labels.unique().to_list())]
    else:
        groups = [np.arange(n)]
    for rows in groups:
        rows = rng.permutation(rows)
        n_test = int(round(len(rows) * config.test_size))
        n_valid = int(round(len(rows) * config.valid_size))
        assignment[rows[:n_test]] = 2
        assignment[rows[n_test : n_test + n_valid]] = 1
    parts = {name: frame.filter(pl.Series(assignment == code)) for code, name in enumerate(SPLITS)}
    for name, part in parts.items():
        if part.height == 0:
            raise DataError(f"The {name} split is empty ({n} rows in all); use more data or larger split sizes")
    if task != "regression":
        seen = set(parts["train"][target].unique().to_list())
        missing = sorted(set(frame[target].unique().to_list()) - seen)
        if missing:
            raise DataError(
                f"Class(es) {', '.join(map(str, missing))} of '{target}' have too few rows to reach the train split; "
                "drop them with data.query or add data"
            )
    return parts
