"""Fixtures for the registry client's tests: in-memory servers behind a MemoryTransport.

No test here opens a socket: :func:`no_sockets` makes any attempt to connect fail the test.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from warmstart.registry import ClientOptions, RegistryClient
from warmstart.registry.transport import MemoryTransport

from .fakes import FakeRegistry, Handler, Net, Server

Serve = Callable[[Handler], Server]
MakeClient = Callable[..., RegistryClient]


@pytest.fixture(autouse=True)
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The registry's unit tests run on a MemoryTransport: connecting anywhere is a bug."""

    def refuse(self: socket.socket, *args: object, **kwargs: object) -> None:
        raise AssertionError("a registry unit test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield


@pytest.fixture
def net() -> Net:
    return Net()


@pytest.fixture
def serve(net: Net) -> Serve:
    return net.serve


@pytest.fixture
def fake() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def fake_host(fake: FakeRegistry, serve: Serve) -> str:
    """``127.0.0.1:<port>`` of the ``fake`` registry."""
    server = serve(fake.app())
    return f"127.0.0.1:{server.port}"


@pytest.fixture
async def make_client(net: Net) -> AsyncIterator[MakeClient]:
    clients: list[RegistryClient] = []

    def make(host: str | None = None, **options: Any) -> RegistryClient:
        insecure = set(options.pop("insecure", ()))
        if host is not None:
            insecure.add(host)
        options.setdefault("backoff_base", 0.001)
        options.setdefault("backoff_max", 0.01)
        opts = ClientOptions(insecure=frozenset(insecure), **options)
        transport = MemoryTransport(net.handle, read_timeout=opts.read_timeout)
        client = RegistryClient(opts, transport=transport)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
