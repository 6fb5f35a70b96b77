"""The OpenAPI description of the server's routes (placeholder until the full document lands)."""

from __future__ import annotations

from typing import Any

from mmp.model_source import LocalModel


def openapi_document(model: LocalModel) -> dict[str, Any]:
    return {"openapi": "3.0.3", "info": {"title": "mmp model server", "version": "1"}, "paths": {}}
