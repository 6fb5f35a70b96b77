"""Errors a user can fix. Their message names the problem and the fix, on one line."""

from __future__ import annotations


class MmpError(Exception):
    """A problem with the user's config, data or environment (not a bug in mmp)."""

    exit_code = 2


class ConfigError(MmpError):
    """The composed config, a recipe or an overlay file is wrong."""


class DataError(MmpError):
    """The data file is missing, unreadable, or does not fit the config."""


class TrackingError(MmpError):
    """The MLflow store cannot be reached or written."""


class Pruned(Exception):
    """A search trial stopped early by the pruner. Its MLflow run ends KILLED, tagged ``mmp.pruned``."""

    run_id: str | None = None


class ExplainError(MmpError):
    """The model cannot be explained exactly."""
