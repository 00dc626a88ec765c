"""The seam between the registry client and HTTP, as httpx's ``BaseTransport``.

A :class:`Transport` has one job, :meth:`Transport.handle_request`: a :class:`Request` in, a
:class:`Response` out (status, headers, an async body stream). It follows no redirects and adds no
headers; the client does that. A request body is bytes or an async stream of bytes (a chunk of
a file being pushed); sending it consumes it. :class:`MemoryTransport` answers with a handler
function and opens no socket, for tests; :mod:`.aiohttp_transport` is the real one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

Reader = Callable[[int], Awaitable[bytes]]
Body = bytes | AsyncIterable[bytes]


@dataclass(frozen=True)
class Request:
    method: str
    url: URL
    headers: Mapping[str, str] = field(default_factory=dict)
    form: Mapping[str, str] | None = None  # an urlencoded POST body
    content: Body | None = field(default=None, repr=False)  # a PATCH/PUT body (not with form)


def _nothing() -> None:
    return None


async def _empty(_n: int) -> bytes:
    return b""


class Response:
    """Status, headers and a body read in pieces; ``release`` or ``close`` it when done.

    ``release`` after the whole body was read lets a connection be reused, ``close`` drops it.
    """

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str] | CIMultiDict[str] | CIMultiDictProxy[str] | None = None,
        *,
        url: URL | None = None,
        method: str = "GET",
        read: Reader = _empty,
        release: Callable[[], None] = _nothing,
        close: Callable[[], None] = _nothing,
    ) -> None:
        self.status = status
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict(headers or {}))
        self.url = url if url is not None else URL()
        self.method = method
        self._read = read
        self._release = release
        self._close = close

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes of the body (at least one unless it is over)."""
        return await self._read(n)

    async def chunks(self, size: int) -> AsyncIterator[bytes]:
        while chunk := await self._read(size):
            yield chunk

    def release(self) -> None:
        self._release()

    def close(self) -> None:
        self._close()


class Transport(Protocol):
    async def handle_request(self, request: Request) -> Response:
        """Send one request; raise for a failure to get an answer (connection, timeout, TLS)."""
        ...

    async def aclose(self) -> None:
        """Free connections (a transport that owns none does nothing)."""
        ...


@dataclass(frozen=True)
class Answer:
    """What a :class:`MemoryTransport` handler answers: status, headers, body or body stream."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | AsyncIterable[bytes] = b""


def respond(
    status: int = 200,
    body: bytes | AsyncIterable[bytes] = b"",
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """An :class:`Answer`; a bytes body gets a Content-Length unless ``headers`` has one."""
    h: CIMultiDict[str] = CIMultiDict(headers or {})
    if isinstance(body, bytes):
        h.setdefault("Content-Length", str(len(body)))
    return Answer(status, h, body)


Handler = Callable[[Request], Awaitable[Answer]]


async def _chunks_of(body: bytes) -> AsyncIterator[bytes]:
    if body:
        yield body


class _BodyReader:
    """``read(n)`` over an async iterable of chunks, with an optional per-read timeout."""

    def __init__(self, stream: AsyncIterable[bytes], timeout: float | None) -> None:
        self._it = aiter(stream)
        self._buf = b""
        self._done = False
        self._timeout = timeout

    async def read(self, n: int) -> bytes:
        while not self._buf and not self._done:
            try:
                self._buf = await asyncio.wait_for(anext(self._it), self._timeout)
            except StopAsyncIteration:
                self._done = True
        piece, self._buf = self._buf[:n], self._buf[n:]
        return piece


async def collect(body: Body | None) -> bytes | None:
    """A request body as bytes (a stream is read to its end)."""
    if body is None or isinstance(body, bytes):
        return body
    return b"".join([piece async for piece in body])


class MemoryTransport:
    """Answers every request with ``handler(request)``: no sockets, for tests.

    A streamed request body is read to its end first, so handlers (and :attr:`requests`) see
    ``content`` as bytes. Like a server, it sends no body for HEAD. ``read_timeout`` bounds each
    wait for body bytes (:class:`TimeoutError`), like a socket read timeout; a handler's body
    stream may raise ``ConnectionResetError`` to play a dropped connection, and a handler may
    raise it to play a connection that broke while the request was sent.
    """

    def __init__(self, handler: Handler, *, read_timeout: float | None = None) -> None:
        self.handler = handler
        self.read_timeout = read_timeout
        self.requests: list[Request] = []

    async def handle_request(self, request: Request) -> Response:
        if request.content is not None and not isinstance(request.content, bytes):
            request = replace(request, content=await collect(request.content))
        self.requests.append(request)
        answer = await asyncio.wait_for(self.handler(request), self.read_timeout)
        body = answer.body
        stream = _chunks_of(body) if isinstance(body, bytes) else body
        reader: Reader = _empty
        if request.method != "HEAD":
            reader = _BodyReader(stream, self.read_timeout).read
        return Response(
            answer.status, answer.headers, url=request.url, method=request.method, read=reader
        )

    async def aclose(self) -> None:
        return None


__all__ = [
    "Answer",
    "Body",
    "Handler",
    "MemoryTransport",
    "Request",
    "Response",
    "Transport",
    "collect",
    "respond",
]
