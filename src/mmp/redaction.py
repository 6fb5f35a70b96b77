"""Keeping secrets out of messages, logs and logged config: passwords in URIs and in the environment."""

from __future__ import annotations

import os
import re

# user:password@ in a URI (http://alice:s3cret@host:5000); the user name stays, it helps a reader.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@")
# Environment variables whose values must never be shown.
SECRET_VARIABLES = (
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MMP_API_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "PGPASSWORD",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
)
MASK = "***"
# Secrets met at run time outside those variables (the password inside a URI read from .env).
_REMEMBERED: set[str] = set()


def remember_secret(value: str | None) -> None:
    """Mask ``value`` in everything :func:`redact` sees from now on (in this process)."""
    if value and len(value) >= 4:
        _REMEMBERED.add(value)


def redact(text: str) -> str:
    """``text`` with URI passwords and the values of secret environment variables masked."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    values = [os.environ.get(name) for name in SECRET_VARIABLES] + sorted(_REMEMBERED)
    for value in values:
        if value and len(value) >= 4:  # masking a 1-3 character value would mangle ordinary words
            text = text.replace(value, MASK)
    return text
