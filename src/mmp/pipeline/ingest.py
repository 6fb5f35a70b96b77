"""The ingest stage: a SQL query or a remote file, copied into a local Parquet snapshot (``data.snapshot``).

A query or an object in a bucket is nothing DVC can hash. The DVC idiom is a stage that always runs
(``always_changed: true``) and writes the source's current content to a file DVC does hash: the stages after
it re-run only when that content changed. An unchanged snapshot keeps its bytes and its mtime.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from mmp import data as data_lib
from mmp import tracking
from mmp.config import Config, tracking_root
from mmp.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    snapshot: Path
    rows: int
    digest: str
    changed: bool


def run_ingest(config: Config) -> IngestResult:
    """Write the configured source to ``data.snapshot``; the snapshot's rows, digest and whether it changed."""
    data = config.data
    if not data.snapshot:
        raise ConfigError(
            f"data.snapshot is not set, so ingest has nowhere to write; set data.snapshot=data/raw/{data.name}.parquet"
        )
    tracking.load_dotenv(tracking_root(config.root))  # the source's credentials may live in .env
    dest = config.resolve(data.snapshot)
    before = data_lib.file_digest(dest) if dest.is_file() else None
    data_lib.write_snapshot(data, config.root, dest)
    digest = data_lib.file_digest(dest)
    rows = pl.scan_parquet(dest).select(pl.len()).collect().item()
    result = IngestResult(dest, rows, digest, digest != before)
    log.info(
        "ingest: %s -> %s (%d rows, digest %s, %s)",
        data_lib.source_location(data, config.root),
        data.snapshot,
        rows,
        digest,
        "changed" if result.changed else "unchanged",
    )
    return result
