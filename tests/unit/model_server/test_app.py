from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from warmstart_harness.model_server.app import ModelApp, make_server
from warmstart_harness.model_server.config import BenchCosts, ServerConfig


@dataclass
class FakeEmbedder:
    calls: list[list[str]] = field(default_factory=list)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return [[1.0, 0.0] for _ in texts]


def make_app(model_dir: Path, **overrides: Any) -> tuple[ModelApp, FakeEmbedder]:
    embedder = FakeEmbedder()
    config = ServerConfig(port=0, host="127.0.0.1", model_dir=model_dir, **overrides)
    return ModelApp(config, lambda: embedder), embedder


def body(obj: object) -> bytes:
    return json.dumps(obj).encode()


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    (tmp_path / "model.onnx").write_bytes(b"m" * 100)
    (tmp_path / "padding").mkdir()
    (tmp_path / "padding" / "padding-000.bin").write_bytes(b"p" * 4096)
    return tmp_path


def test_ping_is_503_until_every_weight_byte_was_read(model_dir: Path) -> None:
    app, _ = make_app(model_dir)
    assert app.handle("GET", "/ping", b"").status == 503
    assert app.handle("POST", "/invocations", body({"texts": ["a"]})).status == 503
    app.load()
    response = app.handle("GET", "/ping", b"")
    assert response.status == 200
    assert json.loads(response.body)["weights"]["bytes"] == 4196


def test_failed_load_keeps_503_and_says_why(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path / "missing")
    app.load()
    response = app.handle("GET", "/ping", b"")
    assert response.status == 503
    assert "FileNotFoundError" in json.loads(response.body)["error"]


def test_invocations_embed(model_dir: Path) -> None:
    app, embedder = make_app(model_dir)
    app.load()
    response = app.handle("POST", "/invocations", body({"inputs": ["x", "y"]}))
    assert response.status == 200
    assert json.loads(response.body) == {"embeddings": [[1.0, 0.0], [1.0, 0.0]]}
    assert embedder.calls == [["x", "y"]]


def test_errors(model_dir: Path) -> None:
    app, _ = make_app(model_dir)
    app.load()
    assert app.handle("POST", "/invocations", b"{").status == 400
    assert app.handle("GET", "/invocations", b"").status == 405
    assert app.handle("POST", "/ping", b"").status == 405
    assert app.handle("GET", "/nope", b"").status == 404


def test_bench_mode_reads_weights_but_loads_no_model(model_dir: Path) -> None:
    slept: list[float] = []

    def boom() -> FakeEmbedder:
        raise AssertionError("bench mode must not load the model")

    config = ServerConfig(
        port=0, model_dir=model_dir, bench_mode=True, costs=BenchCosts(0.001, 0.01, 1.0)
    )
    app = ModelApp(config, boom, sleep=slept.append)
    app.load()
    assert app.ready and app.load_report is not None and app.load_report.bytes == 4196
    response = app.handle("POST", "/invocations", body({"input_tokens": 100, "output_tokens": 5}))
    assert response.status == 200
    payload = json.loads(response.body)
    assert payload["service_seconds"] == pytest.approx(0.15)
    assert slept == [pytest.approx(0.15)]
    assert app.served == 1


def test_bench_mode_serves_at_most_k_at_once(model_dir: Path) -> None:
    gate = threading.Event()
    peak = 0

    def sleep(seconds: float) -> None:
        nonlocal peak
        peak = max(peak, app.in_flight)
        gate.wait(5)

    config = ServerConfig(port=0, model_dir=model_dir, bench_mode=True, max_concurrency=2)
    app = ModelApp(config, FakeEmbedder, sleep=sleep)
    app.load()
    threads = [
        threading.Thread(
            target=app.handle, args=("POST", "/invocations", body({"input_tokens": 1}))
        )
        for _ in range(5)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while app.in_flight < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert app.in_flight == 2
    gate.set()
    for t in threads:
        t.join(5)
    assert peak == 2 and app.served == 5 and app.in_flight == 0


@pytest.fixture
def served(model_dir: Path) -> Iterator[tuple[str, ModelApp]]:
    app, _ = make_app(model_dir)
    server = make_server(app)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", app
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _request(url: str, data: bytes | None = None) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_over_http(served: tuple[str, ModelApp]) -> None:
    url, app = served
    assert _request(url + "/ping")[0] == 503
    app.load()
    assert _request(url + "/ping")[0] == 200
    status, payload = _request(url + "/invocations", body({"texts": ["a"]}))
    assert (status, payload) == (200, {"embeddings": [[1.0, 0.0]]})
    assert _request(url + "/invocations", b"[]")[0] == 400
