"""The HTML page at ``/`` (placeholder until the full page lands)."""

from __future__ import annotations

import html
from typing import Any


def render_page(metadata: dict[str, Any], *, token_required: bool) -> str:
    return f"<!doctype html><title>mmp</title><h1>{html.escape(str(metadata.get('model_class')))}</h1>"
