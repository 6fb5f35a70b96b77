"""Finished stages whose MLflow mirror was interrupted: one JSON record each in ``.mmp/pending/``.

A stage writes its DVC outputs first and mirrors them to MLflow last. When the tracking store fails
during the mirror, the stage keeps its outputs and leaves a record here: which run, which config,
the few values that are not in the outputs (timings, learning curves) and a digest of the outputs.
``mmp mirror`` replays the record into the same run from those outputs once the store is back.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmp.config import Config
from mmp.files import read_json, write_json_atomic

PENDING_DIR = Path(".mmp") / "pending"


@dataclass(frozen=True)
class PendingMirror:
    path: Path
    stage: str
    run_id: str
    config: dict[str, Any]
    overrides: list[str]
    extras: dict[str, Any]
    outputs: dict[str, str]  # output path (relative to the project root) -> content digest
    reason: str
    created: float


def folder(root: Path) -> Path:
    return root / PENDING_DIR


def save(
    config: Config, stage: str, run_id: str, extras: dict[str, Any], outputs: list[Path], reason: str
) -> PendingMirror:
    """Record a stage whose outputs are written but not mirrored; return the record."""
    path = folder(config.root) / f"{stage}-{run_id}.json"
    record = PendingMirror(
        path=path,
        stage=stage,
        run_id=run_id,
        config=config.as_dict(),
        overrides=list(config.overrides),
        extras=extras,
        outputs=digest_outputs(config.root, outputs),
        reason=reason,
        created=time.time(),
    )
    write_json_atomic(path, {k: v for k, v in record.__dict__.items() if k != "path"})
    return record


def load_all(root: Path) -> list[PendingMirror]:
    """The project's pending records, oldest first (the order in which they must be replayed)."""
    records = [PendingMirror(path=path, **read_json(path)) for path in folder(root).glob("*.json")]
    return sorted(records, key=lambda record: record.created)


def changed_outputs(record: PendingMirror, root: Path) -> list[str]:
    """The outputs that no longer hold what the interrupted run produced (a later run replaced them)."""
    current = digest_outputs(root, [root / name for name in record.outputs])
    return [name for name, digest in record.outputs.items() if current.get(name) != digest]


def remove(record: PendingMirror) -> None:
    record.path.unlink(missing_ok=True)


def digest_outputs(root: Path, outputs: list[Path]) -> dict[str, str]:
    """A content digest per output file or folder (file names and bytes; "missing" if it is gone)."""
    digests = {}
    for output in outputs:
        name = output.resolve().relative_to(root.resolve()).as_posix()
        files = sorted(p for p in output.rglob("*") if p.is_file()) if output.is_dir() else [output]
        digest = hashlib.sha256()
        for path in files:
            if not path.is_file():
                digests[name] = "missing"
                break
            digest.update(path.relative_to(output).as_posix().encode() + b"\0")
            with path.open("rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
        else:
            digests[name] = digest.hexdigest() if files else "missing"
    return digests
