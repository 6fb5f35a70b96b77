"""The data layer: reading files (:mod:`.load`), checking them against the config (:mod:`.validate`),
splitting (:mod:`.split`) and the preprocessing fitted on the train split (:mod:`.preprocessing`)."""

from mmp.data.load import file_digest, load, scan
from mmp.data.split import SPLITS, split
from mmp.data.validate import MAX_CLASSES, Cleaned, clean_and_check, feature_columns, infer_task

__all__ = [
    "MAX_CLASSES",
    "SPLITS",
    "Cleaned",
    "clean_and_check",
    "feature_columns",
    "file_digest",
    "infer_task",
    "load",
    "scan",
    "split",
]
