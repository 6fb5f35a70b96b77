"""``mmp serve-api``: download the model once, then serve it with gunicorn (a production WSGI server).

Each worker builds the Flask app (and so loads the model) once, when it starts.

Workers are gunicorn's threaded workers (``gthread``) with one change: a request's head (request line and
headers) is read by the worker's event loop, not by a thread, so a client that sends its headers slowly
costs a buffer, never a thread, and is dropped after :data:`HEAD_TIMEOUT` seconds. A thread is given the
request once its head is complete; reading the body, a thread waits at most :data:`BODY_TIMEOUT` seconds
for each read (a ``Content-Length`` larger than the body then ends in a 408, not a stuck thread).
A small request that arrived whole with its head (a one-row prediction) is answered by the event loop
itself, as a sync worker would: no thread hand-off, so no wait for the GIL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mmp.config import Config
from mmp.errors import MmpError
from mmp.inference.http.app import MODEL_DIR_ENV, TOKEN_ENV
from mmp.inference.http.settings import ServeSettings

log = logging.getLogger(__name__)

HEAD_TIMEOUT = 10.0  # seconds a client has to send a request's line and headers
BODY_TIMEOUT = 15.0  # seconds a thread waits for the next bytes of a request body (and for a slow reader)
HEAD_BUFFER = 64 * 1024  # a head not complete within this many bytes goes to gunicorn's parser (which answers 400)
THREADS = 8  # threads per worker: requests in progress at once, in each worker
INLINE_WRITE_TIMEOUT = 2  # seconds the event loop waits on a client that does not read the answer it asked for
# Requests on one kept-alive connection before the server closes it (nginx's keepalive_requests). A
# connection stays with the worker that accepted it, so without this a few clients can all land on one
# worker and stay there while the others idle; on reconnecting, an idle worker tends to accept first.
KEEPALIVE_REQUESTS = 100
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]+)[ \t]*(?=\r\n|$)", re.IGNORECASE)
_STREAMED = re.compile(rb"\r\n(?:transfer-encoding|expect):", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 0  # 0: one per core
    worker_class: str = "gthread"  # gthread: mmp's threaded worker (slow clients never hold a thread); or sync, ...
    timeout: int = 60
    threads: int = THREADS


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
    owner = os.getpid()  # gunicorn's master; its forked workers unwind through this function too when they exit
    try:
        local = model_source.download(config, run_id=run_id, model_uri=model_uri, dest=cache)
        os.environ[MODEL_DIR_ENV] = str(local)
        os.environ["MMP_SERVE_SETTINGS"] = json.dumps(dataclasses.asdict(settings))
        metrics_dir = cache / "prometheus"  # every worker's /metrics samples (mmp.inference.http.metrics)
        metrics_dir.mkdir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # set before gunicorn forks its workers
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
        threaded = options.worker_class == "gthread"
        _Gunicorn(
            {
                "bind": f"{options.host}:{options.port}",
                "workers": workers,
                "worker_class": _buffered_thread_worker() if threaded else options.worker_class,
                "threads": options.threads if threaded else 1,
                "timeout": options.timeout,
                "accesslog": None,  # mmp writes its own structured access log
                "errorlog": "-",
                "loglevel": "warning",
                "proc_name": "mmp-serve",
                "preload_app": False,  # each worker loads the model itself, once
            }
        ).run()
    finally:
        if os.getpid() == owner:  # a worker that exits must not delete the model the others (and the next) load
            shutil.rmtree(cache, ignore_errors=True)


def _check_bind(host: str, port: int) -> None:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # As gunicorn binds: a TIME-WAIT socket left by the previous server on this port is no conflict.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
                app = create_app()
                # One line per worker once its model is loaded: when a restarted worker can answer again.
                logging.getLogger("mmp.access").info(json.dumps({"event": "worker_ready", "pid": os.getpid()}))
                return _InputGuard(app, int(app.extensions["mmp.settings"].max_body_mb * 1024 * 1024))

        Application().run()


def _configure_worker_logging() -> None:
    access = logging.getLogger("mmp.access")
    if not access.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False


class _InputGuard:
    """WSGI middleware on the request body, for what werkzeug's ``MAX_CONTENT_LENGTH`` leaves out.

    - A chunked body (no ``Content-Length``) over the limit: werkzeug stops reading at the limit and the
      app would score the truncated rows; here reading past the limit raises 413.
    - A body that stops arriving (a ``Content-Length`` larger than the body): 408 after
      :data:`BODY_TIMEOUT` seconds of silence, instead of werkzeug's generic 400.
    - A compressed body (``Content-Encoding: gzip``, ...): reading it raises 415, with a clear message.

    The errors are raised where the app reads the body, so they are answered by the app's own error
    handlers (the JSON error body and the ``X-Request-ID`` of every other answer).
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        encoding = environ.get("HTTP_CONTENT_ENCODING", "").strip().lower()
        if encoding not in ("", "identity"):
            environ["wsgi.input"] = _RefusedInput(encoding)
        else:
            chunked = not environ.get("CONTENT_LENGTH")
            environ["wsgi.input"] = _BodyInput(environ["wsgi.input"], self.max_bytes if chunked else None)
        return self.app(environ, start_response)


def _too_large() -> Exception:
    from werkzeug.exceptions import RequestEntityTooLarge

    return RequestEntityTooLarge()


def _too_slow() -> Exception:
    from werkzeug.exceptions import RequestTimeout

    return RequestTimeout(
        f"The body stopped arriving ({BODY_TIMEOUT:g} s without data); send a Content-Length that matches the body"
    )


class _RefusedInput:
    def __init__(self, encoding: str) -> None:
        self.encoding = encoding

    def read(self, size: int | None = -1) -> bytes:
        from werkzeug.exceptions import UnsupportedMediaType

        raise UnsupportedMediaType(
            f"Content-Encoding '{self.encoding[:40]}' is not supported; send the body uncompressed"
        )

    readline = read


class _BodyInput:
    """The body stream: 408 when it stops arriving; with a ``limit``, 413 once more than that arrives."""

    def __init__(self, stream: Any, limit: int | None) -> None:
        self.stream = stream
        self.limit = limit
        self.seen = 0

    def read(self, size: int | None = -1) -> bytes:
        if self.limit is None:
            return self._call(self.stream.read, size)
        if size is None or size < 0:  # all of it, a bounded piece at a time
            parts = []
            while part := self.read(64 * 1024):
                parts.append(part)
            return b"".join(parts)
        data = self._call(self.stream.read, min(size, self.limit + 1 - self.seen))
        self.seen += len(data)
        # werkzeug reads exactly up to the limit, then stops: look one byte further
        if self.seen > self.limit or (self.seen == self.limit and data and self._call(self.stream.read, 1)):
            raise _too_large()
        return data

    def readline(self, size: int | None = -1) -> bytes:
        if self.limit is not None and (size is None or size < 0 or size > self.limit + 1 - self.seen):
            size = self.limit + 1 - self.seen
        line = self._call(self.stream.readline, size)
        self.seen += len(line)
        if self.limit is not None and self.seen > self.limit:
            raise _too_large()
        return line

    @staticmethod
    def _call(method: Any, size: int | None) -> bytes:
        try:
            return method(size)
        except (BlockingIOError, TimeoutError):  # SO_RCVTIMEO expired: no data for BODY_TIMEOUT s
            raise _too_slow() from None


def _whole_request(buffer: bytearray, head_end: int) -> bool:
    """Whether ``buffer`` holds exactly one request, body included (a head ends at ``head_end``)."""
    head = bytes(buffer[:head_end])
    if _STREAMED.search(head):
        return False
    lengths = _LENGTH.findall(head)
    if len(lengths) > 1:  # gunicorn's parser refuses it, in a thread
        return False
    return len(buffer) - head_end - 4 == (int(lengths[0]) if lengths else 0)


def _buffered_thread_worker() -> type:
    """gunicorn's ``gthread`` worker, with request heads read by the event loop (see the module's docstring).

    Gunicorn's sync workers expect a buffering proxy in front of them (nginx): one client sending its
    headers a byte a second holds a whole worker. This worker does that buffering itself.
    """
    import errno
    import selectors
    import socket
    import struct
    import time
    from concurrent.futures import Future
    from functools import partial

    from gunicorn.workers.gthread import TConn, ThreadWorker

    wait = struct.pack("ll", int(BODY_TIMEOUT), 0)
    inline_wait = struct.pack("ll", int(INLINE_WRITE_TIMEOUT), 0)

    class BufferedThreadWorker(ThreadWorker):  # type: ignore[misc]
        def init_process(self) -> None:
            self.heads: dict[Any, float] = {}  # connections whose head is being read -> deadline
            super().init_process()

        def accept(self, listener: Any) -> None:
            try:
                client, address = listener.accept()
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                    raise
                return
            self.nr_conns += 1
            # A blocking read or write in a thread returns (EAGAIN) after BODY_TIMEOUT s of silence.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, wait)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, wait)
            self._await_head(TConn(self.cfg, client, address, listener.getsockname()))

        def on_client_socket_readable(self, conn: Any, client: Any) -> None:  # a kept-alive connection's next request
            self.keepalived_conns.remove(conn)
            self._await_head(conn, registered=True)
            self._read_head(conn, client)  # its bytes are there: read them now, not on the loop's next turn

        def _await_head(self, conn: Any, registered: bool = False) -> None:
            conn.sock.setblocking(False)
            conn.mmp_head = bytearray()
            self.heads[conn] = time.monotonic() + HEAD_TIMEOUT
            callback = partial(self._read_head, conn)
            if registered:  # one epoll change instead of an unregister and a register
                self.poller.modify(conn.sock, selectors.EVENT_READ, callback)
            else:
                self.poller.register(conn.sock, selectors.EVENT_READ, callback)

        def _read_head(self, conn: Any, client: Any) -> None:
            try:
                data = conn.sock.recv(HEAD_BUFFER)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:  # the client went away
                self._drop(conn)
                return
            conn.mmp_head += data
            end = conn.mmp_head.find(b"\r\n\r\n")
            if end >= 0 or len(conn.mmp_head) >= HEAD_BUFFER:
                self.poller.unregister(conn.sock)
                del self.heads[conn]
                if end >= 0 and _whole_request(conn.mmp_head, end):
                    self._answer_now(conn)
                else:
                    self.enqueue_req(conn)

        def _answer_now(self, conn: Any) -> None:
            # The whole request is in memory, so no read can block: answering it here saves two thread
            # hand-offs, which cost more than a small prediction (the GIL switch interval is 5 ms).
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, inline_wait)
            done: Future[Any] = Future()
            try:
                done.set_result(self.handle(conn))
            except BaseException as exc:  # handle() answers its own errors; this only keeps the loop alive
                done.set_exception(exc)
            with contextlib.suppress(OSError):
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, wait)
            self.finish_request(conn, done)

        def _drop(self, conn: Any) -> None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(conn.sock)
            self.heads.pop(conn, None)
            self.nr_conns -= 1
            conn.close()

        def murder_pending(self) -> None:  # called by the event loop about once a second
            super().murder_pending()
            now = time.monotonic()
            for conn, deadline in list(self.heads.items()):
                if deadline <= now or not self.alive:
                    self._drop(conn)

        def handle_request(self, req: Any, conn: Any) -> Any:
            conn.mmp_served = getattr(conn, "mmp_served", 0) + 1
            if conn.mmp_served >= KEEPALIVE_REQUESTS:
                req.must_close = True  # answered with "Connection: close"
            return super().handle_request(req, conn)

        def handle(self, conn: Any) -> Any:  # in a thread
            head = getattr(conn, "mmp_head", None)
            if head:
                conn.mmp_head = None
                conn.sock.setblocking(True)
                conn.init()  # the parser, on a new connection; nothing on a kept-alive one
                conn.parser.unreader.unread(bytes(head))
            return super().handle(conn)

    return BufferedThreadWorker
