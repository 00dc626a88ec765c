"""Fixtures for the registry client's tests: in-loop aiohttp servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from warmstart.registry import ClientOptions, RegistryClient

from .fakes import FakeRegistry

Serve = Callable[[web.Application], Awaitable[TestServer]]
MakeClient = Callable[..., RegistryClient]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[TestServer] = []

    async def start(app: web.Application, host: str = "127.0.0.1") -> TestServer:
        server = TestServer(app, host=host)
        await server.start_server()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        await server.close()


@pytest.fixture
def fake() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
async def fake_host(fake: FakeRegistry, serve: Serve) -> str:
    """``127.0.0.1:<port>`` of the running ``fake`` registry."""
    server = await serve(fake.app())
    return f"127.0.0.1:{server.port}"


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    clients: list[RegistryClient] = []

    def make(host: str | None = None, **options: Any) -> RegistryClient:
        insecure = set(options.pop("insecure", ()))
        if host is not None:
            insecure.add(host)
        options.setdefault("backoff_base", 0.001)
        options.setdefault("backoff_max", 0.01)
        client = RegistryClient(ClientOptions(insecure=frozenset(insecure), **options))
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
