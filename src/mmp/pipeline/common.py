"""What the stages share: their result, the prepared data they read, and the names of their files."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from mmp import data as data_lib
from mmp.config import Config
from mmp.data.preprocessing import Preprocessor
from mmp.errors import DataError
from mmp.files import read_json
from mmp.model.predictor import PREPROCESSING_FILE

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"


CONFIG_ARTIFACT = "config.yaml"


@dataclass(frozen=True)
class StageResult:
    run_id: str
    outputs: list[Path]
    metrics: dict[str, Any]
    experiment_id: str = ""


def load_prepared(config: Config) -> tuple[dict[str, Any], Preprocessor, dict[str, pl.DataFrame]]:
    prepared = config.resolve(config.paths.prepared_dir)
    manifest_path = prepared / MANIFEST_FILE
    if not manifest_path.is_file():
        raise DataError(
            f"No prepared data in {prepared}; run the prepare stage first (dvc repro, or python stages/prepare.py)"
        )
    manifest = read_json(manifest_path)
    preprocessor = Preprocessor.load(prepared / PREPROCESSING_FILE)
    splits = {name: pl.read_parquet(prepared / f"{name}.parquet") for name in data_lib.SPLITS}
    return manifest, preprocessor, splits
