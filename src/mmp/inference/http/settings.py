"""The server's settings, shared by the app, its OpenAPI document and the gunicorn launcher."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ServeSettings:
    max_rows: int = 100_000
    max_body_mb: float = 50.0
    unknown_columns: str = "reject"  # reject | ignore
    explain_top_k: int = 5
    categorical_numbers: str = "warn"  # a number sent for a categorical column: warn | reject
    metrics_auth: bool = True  # /metrics needs the bearer token too, when MMP_API_TOKEN is set
    threads_per_worker: int = 1  # model threads in each worker process (one worker per core)

    @classmethod
    def from_env(cls) -> ServeSettings:
        raw = json.loads(os.environ.get("MMP_SERVE_SETTINGS", "{}"))
        return cls(**raw)
