"""Files: outputs written whole or not at all, JSON, a lock between processes, and safe names."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmp.errors import DataError

if TYPE_CHECKING:
    import polars as pl


@contextlib.contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """Yield an empty scratch folder; on success it replaces ``target`` whole, on error it is removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    os.chmod(scratch, 0o777 & ~_umask())  # mkdtemp's 0700 would outlive the swap: others could not read it
    try:
        yield scratch
        _carry_tracked_files(target, scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(scratch, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(scratch, target)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _carry_tracked_files(target: Path, scratch: Path) -> None:
    """Copy into ``scratch`` the files git tracks inside ``target`` that the stage did not write.

    DVC keeps a ``.gitignore`` beside the outputs it tracks; swapping the folder must not delete it.
    """
    if not target.is_dir():
        return
    import subprocess

    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--", "."], cwd=target, capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return
    if listed.returncode != 0:
        return
    for name in filter(None, listed.stdout.decode().split("\0")):
        source, copy = target / name, scratch / name
        if source.is_file() and not copy.exists():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy)


def safe_name(name: str, allowed: str = "-_.") -> str:
    """``name`` with every character that is not a letter, a digit or in ``allowed`` replaced by ``_``."""
    return "".join(ch if ch.isalnum() or ch in allowed else "_" for ch in name)


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(text, encoding="utf-8")
    os.replace(scratch, path)


def write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes, held while the block runs (``fcntl.flock`` on ``path``)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def scan_table(path: Path, error: type[Exception] = DataError) -> pl.LazyFrame:
    """Open a CSV or Parquet file lazily, with a clear ``error`` (one line, naming the fix) when it cannot be read."""
    import polars as pl

    if not path.is_file():
        raise error(f"Data file {path} does not exist; set data.path (or -d PATH) to a CSV or Parquet file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pl.scan_parquet(path)
        elif suffix in (".csv", ".txt", ".tsv"):
            frame = pl.scan_csv(
                path, separator="\t" if suffix == ".tsv" else ",", infer_schema_length=10_000, try_parse_dates=False
            )
        else:
            raise error(f"Data file {path} has an unknown format '{suffix}'; use .csv or .parquet")
        frame.collect_schema()
    except (OSError, pl.exceptions.PolarsError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise error(f"Data file {path} cannot be read ({reason}); check that it is a valid {suffix[1:]} file") from None
    return frame
