"""Keeping secrets out of messages, logs and logged config: passwords in URIs and in the environment."""

from __future__ import annotations

import os
import re

# user:password@ in a URI (http://alice:s3cret@host:5000); the user name stays, it helps a reader.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@")
# Environment variables whose values must never be shown.
SECRET_VARIABLES = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MMP_API_TOKEN", "AWS_SECRET_ACCESS_KEY")
MASK = "***"


def redact(text: str) -> str:
    """``text`` with URI passwords and the values of secret environment variables masked."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    for name in SECRET_VARIABLES:
        value = os.environ.get(name)
        if value and len(value) >= 4:  # masking a 1-3 character value would mangle ordinary words
            text = text.replace(value, MASK)
    return text
