"""MLflow dataset sources for data that is not a local file: object store URLs and SQL connections."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from mmp.redaction import redact


def dataset_source(location: Path | str) -> Any:
    """The MLflow DatasetSource of a local path, an object store URL, or a SQL connection URI (its password
    masked: the source is stored in the tracking store as JSON)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():
        # Local paths match two equivalent source classes; MLflow warns and picks one.
        warnings.simplefilter("ignore", UserWarning)
        if isinstance(location, Path):
            return resolve_dataset_source(str(location.resolve()))
        uri = redact(location)
        try:
            return resolve_dataset_source(uri)  # s3://, gs://, ... have MLflow classes of their own
        except Exception:  # no class for postgresql://, sqlite://, ...
            return _sql_source_class()(uri)


def _sql_source_class() -> type:
    from mlflow.data.dataset_source import DatasetSource

    class SqlDatasetSource(DatasetSource):
        """A table or query behind a database connection URI (no password)."""

        def __init__(self, uri: str) -> None:
            self.uri = uri

        @staticmethod
        def _get_source_type() -> str:
            return "sql"

        def load(self) -> Any:
            raise NotImplementedError("mmp reads SQL sources through data.source: sql")

        @staticmethod
        def _can_resolve(raw_source: Any) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source: Any) -> DatasetSource:
            return cls(str(raw_source))

        def to_dict(self) -> dict[str, Any]:
            return {"uri": self.uri}

        @classmethod
        def from_dict(cls, source_dict: dict[Any, Any]) -> DatasetSource:
            return cls(source_dict["uri"])

    return SqlDatasetSource
