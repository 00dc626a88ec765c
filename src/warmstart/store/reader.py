"""Streaming a blob, following a write in progress (in this process or another) to its end."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from warmstart.oci import Digest
from warmstart.store.blobs import CHUNK
from warmstart.store.errors import BlobNotFound, StoreError
from warmstart.store.layout import Layout
from warmstart.store.locks import is_locked, same_file
from warmstart.store.singleflight import Flight

FlightLookup = Callable[[Digest], "Flight[Digest, Path] | None"]


def _open(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None


def _writer_gone(flight: Flight[Digest, Path] | None, lock: Path) -> bool:
    if flight is not None and not flight.done:
        return False  # this process writes it, or waits to take over
    return not is_locked(lock)


def _failure(flight: Flight[Digest, Path] | None, digest: Digest) -> StoreError:
    error = flight.error() if flight is not None else None
    if isinstance(error, StoreError):
        return error
    if isinstance(error, asyncio.CancelledError):
        return BlobNotFound(f"the transfer of {digest} was cancelled before it completed")
    if error is not None:
        return BlobNotFound(f"the transfer of {digest} failed: {error}")
    return BlobNotFound(f"blob {digest} is not in the store and no transfer of it is running")


async def follow(
    layout: Layout,
    digest: Digest,
    start: int,
    flight_of: FlightLookup,
    *,
    poll: float = 0.02,
    chunk: int = CHUNK,
) -> AsyncIterator[bytes]:
    """Yield the blob's bytes from ``start``: from the finished file, or from the temp file of
    the write in progress, waiting for it to grow until it is renamed into place.

    Raises the writer's error (e.g. ``StoreDigestMismatch``) if it fails in this process, and
    ``BlobNotFound`` if the blob is absent and nobody writes it, or a writer elsewhere stops.
    """
    if start < 0:
        raise ValueError(f"start offset must be >= 0, not {start}")
    final = layout.blob_path(digest)
    partial = layout.partial_path(digest)
    lock = layout.lock_path(digest)
    pos = start
    fd: int | None = None
    is_final = False
    yielded_once = False
    flight = flight_of(digest)

    async def wait() -> None:
        if flight is not None and not flight.done:
            await flight.wait_changed(poll)
        else:
            await asyncio.sleep(poll)

    try:
        while True:
            flight = flight_of(digest) or flight
            if fd is None:
                fd, is_final = _open(final), True
                if fd is None:
                    fd, is_final = _open(partial), False
                if fd is None:
                    if _writer_gone(flight, lock) and not final.exists():
                        if not yielded_once:
                            # A fetch task created just before us has not run yet: let it
                            # start (it registers its transfer before its first await).
                            yielded_once = True
                            await asyncio.sleep(0)
                            continue
                        raise _failure(flight, digest)
                    await wait()
                    continue
            data = await asyncio.to_thread(os.pread, fd, chunk, pos)
            if data:
                pos += len(data)
                yield data
                continue
            if is_final:
                return
            # At the end of the temp file: finished, replaced, failed, or still being written?
            if same_file(fd, final):
                is_final = True  # renamed into place: read whatever came last, then stop
                continue
            if final.exists() or not same_file(fd, partial):
                os.close(fd)  # finished by another writer, or a new writer took over
                fd = None
                continue
            if _writer_gone(flight, lock):
                if same_file(fd, final) or final.exists():
                    continue
                raise _failure(flight, digest)
            await wait()
    finally:
        if fd is not None:
            os.close(fd)
