"""Sending blob bodies: zero-copy from a stored file, or following a transfer in progress.

Headers are decided before the first byte goes out (``Content-Length`` always known). If a
transfer fails after that, the connection is aborted: the client sees a short read, never
wrong bytes, and retries (containerd resumes with ``Range``).

A client that goes away in the middle (containerd cancels, a kubelet times out) is normal: it
ends the answer with :class:`ClientGone`, which says how many bytes went out.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import IO

from aiohttp import web

from warmstart.agent.ranges import ByteRange
from warmstart.registry.errors import one_line

log = logging.getLogger(__name__)

FALLBACK_CHUNK = 1 << 20

OnBytes = Callable[[int], None]


class TransferAborted(Exception):
    """The body could not be completed; the connection was aborted.

    ``response`` is the (already prepared) response: the handler layer returns it, so aiohttp
    finishes the request quietly on the closed connection.
    """

    def __init__(self, message: str, response: web.StreamResponse) -> None:
        super().__init__(message)
        self.response = response


class ClientGone(Exception):
    """The client closed the connection before the body was complete (not a fault).

    ``sent`` of ``count`` body bytes were handed to the kernel; ``response`` is the prepared
    response, which the handler layer returns so aiohttp finishes the request quietly.
    """

    def __init__(
        self, sent: int, count: int, response: web.StreamResponse, error: BaseException
    ) -> None:
        strerror = error.strerror if isinstance(error, OSError) else None
        reason = strerror or str(error) or type(error).__name__
        super().__init__(f"client went away after {sent} of {count} bytes ({one_line(reason)})")
        self.sent = sent
        self.count = count
        self.response = response
        self.error = error


class StreamFailed(Exception):
    """The transfer failed before any byte was sent; ``error`` says why."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _read_at(fobj: IO[bytes], offset: int, size: int) -> bytes:
    return os.pread(fobj.fileno(), size, offset)


def abort_connection(request: web.BaseRequest) -> None:
    """Drop the connection at once (after the headers went out nothing else is honest)."""
    transport = request.transport
    if transport is not None and not transport.is_closing():
        transport.abort()


def _response(brange: ByteRange, headers: Mapping[str, str]) -> web.StreamResponse:
    resp = web.StreamResponse(status=brange.status, headers=dict(headers))
    if brange.content_range is not None:
        resp.headers["Content-Range"] = brange.content_range
    resp.content_length = brange.length
    return resp


async def send_file(
    request: web.BaseRequest,
    fobj: IO[bytes],
    brange: ByteRange,
    headers: Mapping[str, str],
    on_bytes: OnBytes,
) -> web.StreamResponse:
    """Send ``brange`` of the open file with ``loop.sendfile`` (a chunked fallback where the
    transport cannot, e.g. TLS). ``fobj`` stays open; the caller closes it."""
    resp = _response(brange, headers)
    await resp.prepare(request)
    count = brange.length
    if request.method == "HEAD" or count == 0:
        await resp.write_eof()
        return resp
    loop = asyncio.get_running_loop()
    transport = request.transport
    if transport is None:
        raise ClientGone(0, count, resp, ConnectionResetError("connection lost"))
    # sendfile leaves the file's position after the last byte it sent, also when it fails
    fobj.seek(brange.start)
    try:
        await loop.sendfile(transport, fobj, brange.start, count)
    except NotImplementedError:  # e.g. TLS: copy in chunks instead
        pass
    except ConnectionError as e:  # the client went away
        sent = max(0, min(count, fobj.tell() - brange.start))
        on_bytes(sent)
        raise ClientGone(sent, count, resp, e) from None
    except OSError as e:  # reading the file failed: the client must not take this as complete
        abort_connection(request)
        raise TransferAborted(f"sending the stored file failed: {e}", resp) from e
    else:
        on_bytes(count)
        await _finish(resp, count, count)
        return resp
    sent = 0
    while sent < count:
        chunk = await loop.run_in_executor(
            None, _read_at, fobj, brange.start + sent, min(FALLBACK_CHUNK, count - sent)
        )
        if not chunk:  # the file shrank under us: it is not what we announced
            abort_connection(request)
            raise TransferAborted(f"file ended after {sent} of {count} bytes", resp)
        sent = await _write(resp, chunk, sent, count, on_bytes)
    await _finish(resp, sent, count)
    return resp


async def _write(
    resp: web.StreamResponse, data: bytes | memoryview, sent: int, count: int, on_bytes: OnBytes
) -> int:
    """Send ``data`` after ``sent`` of ``count`` bytes; how many are sent then (a client that
    went away: :class:`ClientGone`)."""
    try:
        await resp.write(data)
    except ConnectionError as e:
        raise ClientGone(sent, count, resp, e) from None
    on_bytes(len(data))
    return sent + len(data)


async def _finish(resp: web.StreamResponse, sent: int, count: int) -> None:
    try:
        await resp.write_eof()
    except ConnectionError as e:
        raise ClientGone(sent, count, resp, e) from None


async def send_stream(
    request: web.BaseRequest,
    open_stream: Callable[[int], AsyncGenerator[bytes, None]],
    brange: ByteRange,
    headers: Mapping[str, str],
    on_bytes: OnBytes,
) -> web.StreamResponse:
    """Send ``brange`` from a transfer in progress (``open_stream(start)``).

    The first chunk is awaited before the headers go out, so a transfer that fails at once
    raises :class:`StreamFailed` and can still be answered with an error status. Later failures
    (or a stream that ends early) abort the connection and raise :class:`TransferAborted`. A
    client that goes away ends it with :class:`ClientGone`.
    """
    count = brange.length
    if request.method == "HEAD" or count == 0:
        resp = _response(brange, headers)
        await resp.prepare(request)
        await resp.write_eof()
        return resp
    sent = 0
    stream = open_stream(brange.start)
    iterator = stream.__aiter__()
    try:
        exhausted = False
        first: bytes | None = None
        try:
            first = await iterator.__anext__()
        except StopAsyncIteration:
            exhausted = True
        except asyncio.CancelledError:
            raise
        except Exception as e:
            raise StreamFailed(e) from e
        resp = _response(brange, headers)
        await resp.prepare(request)
        while sent < count and not exhausted:
            if first is not None:
                chunk, first = first, None
            else:
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # the transfer failed: the bytes so far were right
                    abort_connection(request)
                    raise TransferAborted(
                        f"transfer failed after {sent} of {count} bytes: {e}", resp
                    ) from e
            if not chunk:
                continue
            view = memoryview(chunk)
            if len(view) > count - sent:
                view = view[: count - sent]
            sent = await _write(resp, view, sent, count, on_bytes)
    finally:
        try:
            await stream.aclose()
        except Exception:  # closing a failed stream must not hide what happened
            log.debug("closing a blob stream failed", exc_info=True)
    if sent < count:
        abort_connection(request)
        raise TransferAborted(f"transfer ended after {sent} of {count} bytes", resp)
    await _finish(resp, sent, count)
    return resp
