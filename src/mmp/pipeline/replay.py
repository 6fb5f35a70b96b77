"""``mmp mirror``: replay the mirrors that the store interrupted, each into its own run, from the DVC outputs."""

from __future__ import annotations

import logging
from pathlib import Path

from mmp import tracking
from mmp.config import from_dict, tracking_root
from mmp.errors import TrackingError
from mmp.pipeline.explain import _mirror_explain
from mmp.pipeline.prepare import _mirror_prepare
from mmp.pipeline.train import _mirror_train
from mmp.tracking import pending
from mmp.tracking.store import store_paths

log = logging.getLogger(__name__)

MIRRORS: dict[str, tracking.MirrorFunction] = {
    "prepare": _mirror_prepare,
    "train": _mirror_train,
    "explain": _mirror_explain,
}


def remirror_pending(root: Path) -> list[pending.PendingMirror]:
    """Replay the project's interrupted mirrors, oldest first, each into its own run (``mmp mirror``).

    A record whose outputs a later run has replaced cannot be completed: its run is marked FAILED and the
    record dropped. The first store failure stops the replay with a TrackingError; later records stay.
    Returns the records handled.
    """
    import mlflow

    handled = []
    for record in pending.load_all(root):
        config = from_dict(record.config, root=root, overrides=tuple(record.overrides))
        try:
            if changed := pending.changed_outputs(record, root):
                tracking.setup(config)
                reason = f"its outputs ({', '.join(changed)}) were replaced by a later run before they were logged"
                client = mlflow.MlflowClient()
                client.set_tag(record.run_id, f"{tracking.TAG_PREFIX}error", reason)
                client.set_terminated(record.run_id, "FAILED")
                log.warning("%s run %s left FAILED: %s", record.stage, record.run_id, reason)
            else:
                with tracking.stage_run(config, record.stage, resume_run_id=record.run_id) as run:
                    MIRRORS[record.stage](config, run, record.extras)
                    tracking.log_late_artifacts(config, record.extras)
                log.info("mirrored the %s stage into run %s", record.stage, record.run_id)
        except Exception as exc:
            if not tracking.is_store_failure(exc, store_paths(config)):
                raise
            uri = tracking.resolve_tracking_uri(config.mlflow.tracking_uri, tracking_root(root))
            raise TrackingError(tracking.describe_failure(uri, exc, config.mlflow.experiment_name)) from None
        pending.remove(record)
        handled.append(record)
    return handled
