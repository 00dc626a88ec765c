from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from yarl import URL

from warmstart.registry.transport import Answer, MemoryTransport, Request, respond


async def test_memory_transport_answers_with_its_handler() -> None:
    async def handler(request: Request) -> Answer:
        return respond(200, b"hello world", {"X-Path": request.url.path})

    transport = MemoryTransport(handler)
    resp = await transport.handle_request(Request("GET", URL("http://reg.test/v2/")))
    assert resp.status == 200
    assert resp.headers["x-path"] == "/v2/"
    assert resp.content_length == 11
    assert resp.url == URL("http://reg.test/v2/")
    assert [c async for c in resp.chunks(4)] == [b"hell", b"o wo", b"rld"]
    assert [r.method for r in transport.requests] == ["GET"]


async def test_head_has_no_body_but_keeps_the_length() -> None:
    async def handler(request: Request) -> Answer:
        return respond(200, b"abc")

    resp = await MemoryTransport(handler).handle_request(Request("HEAD", URL("http://r/")))
    assert resp.content_length == 3
    assert await resp.read(10) == b""


async def test_streams_can_drop_and_stall() -> None:
    async def dropped() -> AsyncIterator[bytes]:
        yield b"abc"
        raise ConnectionResetError("dropped")

    async def stalled() -> AsyncIterator[bytes]:
        yield b"abc"
        await asyncio.sleep(10)

    async def handler(request: Request) -> Answer:
        return respond(200, dropped() if request.url.path == "/drop" else stalled())

    transport = MemoryTransport(handler, read_timeout=0.05)
    resp = await transport.handle_request(Request("GET", URL("http://r/drop")))
    assert await resp.read(10) == b"abc"
    with pytest.raises(ConnectionResetError):
        await resp.read(10)
    resp = await transport.handle_request(Request("GET", URL("http://r/stall")))
    assert await resp.read(10) == b"abc"
    with pytest.raises(TimeoutError):
        await resp.read(10)


async def test_streamed_request_bodies_reach_the_handler_as_bytes() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b"def"

    seen: list[bytes | None] = []

    async def handler(request: Request) -> Answer:
        assert request.content is None or isinstance(request.content, bytes)
        seen.append(request.content)
        return respond(202)

    transport = MemoryTransport(handler)
    await transport.handle_request(Request("PATCH", URL("http://r/u"), content=body()))
    await transport.handle_request(Request("PUT", URL("http://r/m"), content=b"{}"))
    await transport.handle_request(Request("POST", URL("http://r/p")))
    assert seen == [b"abcdef", b"{}", None]
    assert transport.requests[0].content == b"abcdef"
