"""The tracking layer: the MLflow store (:mod:`.store`), what runs record (:mod:`.tags`), stage runs and their
mirrors (:mod:`.runs`, :mod:`.pending`, :mod:`.recorder`), the runs table (:mod:`.listing`) and
``mmp system-check`` (:mod:`.system_check`). MLflow itself is imported only when a run needs it."""

from mmp.tracking.runs import (
    LATE_ARTIFACTS,
    MirrorDeferred,
    MirrorFunction,
    RunContext,
    StageRun,
    failed_status,
    log_batch,
    log_dataset,
    log_late_artifacts,
    mirror,
    stage_run,
    start_recorder,
)
from mmp.tracking.store import (
    describe_failure,
    http_status,
    is_store_failure,
    load_dotenv,
    preflight,
    resolve_tracking_uri,
    setup,
)
from mmp.tracking.tags import TAG_PREFIX, common_tags, execution, loggable_config, params_of

__all__ = [
    "LATE_ARTIFACTS",
    "TAG_PREFIX",
    "MirrorDeferred",
    "MirrorFunction",
    "RunContext",
    "StageRun",
    "common_tags",
    "describe_failure",
    "execution",
    "failed_status",
    "http_status",
    "is_store_failure",
    "load_dotenv",
    "log_batch",
    "log_dataset",
    "log_late_artifacts",
    "loggable_config",
    "mirror",
    "params_of",
    "preflight",
    "resolve_tracking_uri",
    "setup",
    "stage_run",
    "start_recorder",
]
