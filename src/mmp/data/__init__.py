"""The data layer: reading files (:mod:`.load`), checking them against the config (:mod:`.validate`),
splitting (:mod:`.split`) and the preprocessing fitted on the train split (:mod:`.preprocessing`); SQL and
object store sources and their local snapshots (:mod:`.sources`)."""

from mmp.data.load import file_digest, load, parse_errors, scan, scan_checked
from mmp.data.sources import input_file, local_path, source_location, write_snapshot
from mmp.data.split import SPLITS, assign, split
from mmp.data.validate import (
    MAX_CLASSES,
    CheckedScan,
    Cleaned,
    check_columns,
    check_scan,
    clean_and_check,
    feature_columns,
    infer_task,
    scan_keys,
)

__all__ = [
    "MAX_CLASSES",
    "SPLITS",
    "CheckedScan",
    "Cleaned",
    "assign",
    "check_columns",
    "check_scan",
    "clean_and_check",
    "feature_columns",
    "file_digest",
    "infer_task",
    "input_file",
    "local_path",
    "load",
    "parse_errors",
    "scan",
    "scan_checked",
    "scan_keys",
    "source_location",
    "split",
    "write_snapshot",
]
