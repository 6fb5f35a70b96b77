"""``mmp serve-api``: download the model once, then serve it with gunicorn (a production WSGI server).

Each worker builds the Flask app (and so loads the model) once, when it starts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mmp.config import Config
from mmp.errors import MmpError
from mmp.inference.http.app import MODEL_DIR_ENV, TOKEN_ENV
from mmp.inference.http.settings import ServeSettings

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 0  # 0: one per core
    worker_class: str = "sync"
    timeout: int = 60


def serve(
    config: Config,
    *,
    run_id: str | None,
    model_uri: str | None,
    options: ServerOptions,
    settings: ServeSettings,
) -> None:
    """Download the model, then run gunicorn in the foreground until stopped."""
    from mmp.config import tracking_root
    from mmp.inference import source as model_source
    from mmp.tracking import load_dotenv

    load_dotenv(tracking_root(config.root))  # MMP_API_TOKEN may live in .env
    cache = Path(tempfile.mkdtemp(prefix="mmp-serve-"))
    try:
        local = model_source.download(config, run_id=run_id, model_uri=model_uri, dest=cache)
        os.environ[MODEL_DIR_ENV] = str(local)
        os.environ["MMP_SERVE_SETTINGS"] = json.dumps(dataclasses.asdict(settings))
        workers = options.workers or os.cpu_count() or 1
        auth = "bearer token required" if os.environ.get(TOKEN_ENV) else "no token"
        log.info(
            "serving %s on http://%s:%d with %d %s worker(s), %s",
            local.name,
            options.host,
            options.port,
            workers,
            options.worker_class,
            auth,
        )
        _Gunicorn(
            {
                "bind": f"{options.host}:{options.port}",
                "workers": workers,
                "worker_class": options.worker_class,
                "timeout": options.timeout,
                "accesslog": None,  # mmp writes its own structured access log
                "errorlog": "-",
                "loglevel": "warning",
                "proc_name": "mmp-serve",
                "preload_app": False,  # each worker loads the model itself, once
            }
        ).run()
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _check_bind(host: str, port: int) -> None:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise MmpError(f"Cannot listen on {host}:{port} ({exc.strerror}); pick another --port") from None


class _Gunicorn:
    """gunicorn's BaseApplication, built lazily so that `mmp --help` never imports gunicorn."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    def run(self) -> None:
        from gunicorn.app.base import BaseApplication

        settings = self.settings
        host, _, port = settings["bind"].rpartition(":")
        _check_bind(host, int(port))

        class Application(BaseApplication):  # type: ignore[misc]
            def load_config(self) -> None:
                for key, value in settings.items():
                    self.cfg.set(key, value)

            def load(self) -> Any:
                from mmp.inference.http.app import create_app

                _configure_worker_logging()
                return create_app()

        Application().run()


def _configure_worker_logging() -> None:
    access = logging.getLogger("mmp.access")
    if not access.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False
