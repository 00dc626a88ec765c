"""The HTTP side: routing and readiness, over a ``ThreadingHTTPServer``.

:class:`ModelApp` holds the logic (``handle(method, path, body)`` -> :class:`Response`) and is
tested without sockets; :class:`Handler` only moves bytes between it and the socket.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from warmstart_harness.model_server.config import ServerConfig
from warmstart_harness.model_server.download import DownloadReport, download_model, parse_source
from warmstart_harness.model_server.embed import Embedder
from warmstart_harness.model_server.invocations import BadRequest, parse_texts, parse_token_counts
from warmstart_harness.model_server.weights import LoadReport, read_all

log = logging.getLogger("warmstart_harness.model_server")

MAX_BODY = 16 << 20


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, payload: Any) -> Response:
        return cls(status, json.dumps(payload).encode())

    @classmethod
    def error(cls, status: int, message: str) -> Response:
        return cls.json(status, {"error": message})


@dataclass
class ModelApp:
    """Readiness, embeddings and the bench mode's simulated service.

    ``load_embedder`` builds the model after every weight byte was read (not called in bench
    mode); ``sleep`` stands in for the model's work in bench mode. With ``model_source`` set,
    the model is downloaded into the model directory first (``download_report``).
    """

    config: ServerConfig
    load_embedder: Callable[[], Embedder]
    sleep: Callable[[float], None] = time.sleep
    load_report: LoadReport | None = None
    download_report: DownloadReport | None = None
    load_error: str | None = None
    embedder: Embedder | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _slots: threading.BoundedSemaphore = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    served: int = 0

    def __post_init__(self) -> None:
        self._slots = threading.BoundedSemaphore(self.config.max_concurrency)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def load(self) -> None:
        """Download the model if a source is set, read every weight byte, then load the
        model; /ping turns 200 only after this."""
        try:
            start = time.monotonic()
            if self.config.model_source is not None:
                source = parse_source(self.config.model_source)
                log.info("model: downloading %s into %s", source, self.config.model_dir)
                self.download_report = download_model(source, self.config.model_dir)
                log.info("model: %s", self.download_report.describe())
            report = read_all(self.config.model_dir, chunk=self.config.read_chunk)
            log.info("weights: %s", report.describe())
            if not self.config.bench_mode:
                self.embedder = self.load_embedder()
            self.load_report = report
            log.info(
                "ready after %.2f s (bench mode: %s)",
                time.monotonic() - start,
                self.config.bench_mode,
            )
            self._ready.set()
        except Exception as e:  # the server keeps answering 503 and says why
            self.load_error = f"{type(e).__name__}: {e}"
            log.exception("loading the model failed")

    def handle(self, method: str, path: str, body: bytes) -> Response:
        route = path.split("?", 1)[0]
        if route == "/ping":
            if method not in {"GET", "HEAD"}:
                return Response.error(405, "use GET /ping")
            return self._ping()
        if route == "/invocations":
            if method != "POST":
                return Response.error(405, "use POST /invocations")
            if not self.ready:
                return Response.error(503, "model not loaded yet")
            try:
                return self._bench(body) if self.config.bench_mode else self._embed(body)
            except BadRequest as e:
                return Response.error(400, str(e))
        return Response.error(404, f"no route {route}")

    def _ping(self) -> Response:
        if not self.ready:
            status = "failed" if self.load_error else "loading"
            return Response.json(503, {"status": status, "error": self.load_error})
        report = self.load_report.as_dict() if self.load_report else None
        download = self.download_report.as_dict() if self.download_report else None
        return Response.json(
            200,
            {
                "status": "ready",
                "bench_mode": self.config.bench_mode,
                "weights": report,
                "download": download,
            },
        )

    def _embed(self, body: bytes) -> Response:
        texts = parse_texts(body, max_batch=self.config.max_batch)
        assert self.embedder is not None
        return Response.json(200, {"embeddings": self.embedder.embed(texts)})

    def _bench(self, body: bytes) -> Response:
        counts = parse_token_counts(body)
        service = self.config.costs.service_seconds(counts.input_tokens, counts.output_tokens)
        queued = time.monotonic()
        with self._slots:
            waited = time.monotonic() - queued
            with self._lock:
                self.in_flight += 1
            try:
                self.sleep(service)
            finally:
                with self._lock:
                    self.in_flight -= 1
                    self.served += 1
        return Response.json(
            200,
            {
                "input_tokens": counts.input_tokens,
                "generated_tokens": counts.output_tokens,
                "service_seconds": round(service, 6),
                "queue_seconds": round(waited, 6),
            },
        )


def make_handler(app: ModelApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._send(Response.error(413, f"body larger than {MAX_BODY} bytes"))
                return
            body = self.rfile.read(length) if length else b""
            self._send(app.handle(self.command, self.path, body))

        def _send(self, response: Response) -> None:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)

        do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


class _Server(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a router that hands a replica a burst of
    # connections at once would see resets. Requests beyond MAX_CONCURRENCY wait in threads.
    request_queue_size = 1024
    daemon_threads = True


def make_server(app: ModelApp) -> ThreadingHTTPServer:
    return _Server((app.config.host, app.config.port), make_handler(app))
