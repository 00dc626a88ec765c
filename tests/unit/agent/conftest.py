"""An agent app on a real loopback socket with an in-memory Fetcher (no daemons)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.unit.agent.fakes import MemoryFetcher
from warmstart.agent.app import PartMakers, build_app, server_kwargs
from warmstart.agent.config import AgentConfig, build_config
from warmstart.agent.hooks import HotImages, Prewarmer
from warmstart.agent.metrics import AgentMetrics
from warmstart.fetch.interfaces import Fetcher

REGISTRY = "reg.example:5000"
OTHER = "other.example"


@dataclass
class Agent:
    client: TestClient
    fetcher: MemoryFetcher
    metrics: AgentMetrics
    app: web.Application
    config: AgentConfig

    @property
    def port(self) -> int:
        assert self.client.port is not None
        return self.client.port


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    raw: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def default_config(store: Path, **overrides: Any) -> AgentConfig:
    data: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "store": str(store),
        "node_id": "node-test",
        "upstreams": {REGISTRY: {"url": f"http://{REGISTRY}"}, OTHER: {}},
        "default_upstream": REGISTRY,
    }
    data.update(overrides)
    return build_config(data)


MakeAgent = Callable[..., Awaitable[Agent]]


async def no_linker(*_parts: Any) -> tuple[None, None]:
    return None, None


def memory_makers(
    fetcher: Fetcher,
    prewarmer: Prewarmer | None = None,
    hot: HotImages | None = None,
    metrics: AgentMetrics | None = None,
) -> PartMakers:
    """The agent's parts around an in-memory ``fetcher``: a real store, no containerd."""
    return PartMakers(
        metrics=(lambda: metrics) if metrics is not None else AgentMetrics,
        fetcher=lambda *_parts: fetcher,
        linker=no_linker,
        prewarmer=lambda *_parts: prewarmer,
        hot=lambda _config: hot,
    )


@pytest.fixture
async def make_agent(tmp_path: Path) -> AsyncIterator[MakeAgent]:
    clients: list[TestClient] = []
    blob_dir = tmp_path / "blobs"
    blob_dir.mkdir()

    async def make(
        *,
        fetcher: MemoryFetcher | None = None,
        prewarmer: Any = None,
        hot: Any = None,
        metrics: AgentMetrics | None = None,
        **config: Any,
    ) -> Agent:
        cfg = default_config(tmp_path / f"store{len(clients)}", **config)
        fetcher = fetcher if fetcher is not None else MemoryFetcher(root=blob_dir)
        metrics = metrics if metrics is not None else AgentMetrics()
        app = await build_app(cfg, memory_makers(fetcher, prewarmer, hot, metrics))
        server = TestServer(app)
        await server.start_server(**server_kwargs(cfg))
        client = TestClient(server)
        await client.start_server()
        clients.append(client)
        return Agent(client, fetcher, metrics, app, cfg)

    try:
        yield make
    finally:
        for c in clients:
            await c.close()


@pytest.fixture
async def agent(make_agent: MakeAgent) -> Agent:
    return await make_agent()


def _parse(raw: bytes) -> RawResponse:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return RawResponse(status, headers, body, raw)


async def raw_request(
    port: int,
    method: str,
    target: str | bytes,
    headers: list[tuple[str, str]] | None = None,
    *,
    body: bytes = b"",
    wait: float = 10,
) -> RawResponse:
    """Send exactly this request line (no client-side path normalisation) and read to EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        line = target if isinstance(target, bytes) else target.encode("latin-1")
        out = method.encode() + b" " + line + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        for name, value in headers or []:
            out += f"{name}: {value}\r\n".encode("latin-1")
        if body:
            out += f"Content-Length: {len(body)}\r\n".encode()
        out += b"Connection: close\r\n\r\n" + body
        writer.write(out)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), wait)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass
    return _parse(raw)
