"""Writing and reading blob files: the hot path of ingest.

``BlobWriter`` hashes and writes one blob into a temp file. Chunks are handed to two worker
threads (one hashes, one writes), so hashing, writing and receiving the next chunk overlap; no
chunk is copied except tiny ones, which are joined into ~1 MiB before the hand-off. hashlib and
``os.write`` release the GIL. Written ranges are handed to the kernel for write-back as they go
(``sync_file_range``), so the final ``fsync`` only waits for the tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import hashlib
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CHUNK = 1 << 20
WINDOW = 16  # chunks handed to the worker threads and not yet done
SMALL_CHUNK = 256 << 10  # chunks below this are joined before the hand-off
INLINE_LIMIT = 256 << 10  # blobs known to be this small are written without threads
WRITEBACK_EVERY = 16 << 20
_SYNC_FILE_RANGE_WRITE = 2

_Flusher = Callable[[int, int, int, int], int]


@functools.cache
def _sync_file_range() -> _Flusher | None:
    """libc's ``sync_file_range`` (Linux), or None where it does not exist."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobWriter:
    """One blob being written to ``path`` (created exclusively), hashed as it goes."""

    def __init__(
        self,
        path: Path,
        hasher: hashlib._Hash,
        *,
        on_written: Callable[[int], None] | None = None,
        threaded: bool = True,
        existing: int = 0,
    ) -> None:
        """``existing``: ``path`` already holds that many bytes of the blob (a partial left by
        a writer that died), already fed to ``hasher``; the writer appends after them."""
        self.path = path
        self.accepted = existing  # bytes handed in: the offset a resumed source starts from
        self.written = existing  # bytes in the file
        self._hasher = hasher
        self._on_written = on_written
        if existing:
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            os.lseek(self._fd, existing, os.SEEK_SET)
        else:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self._small: list[bytes] = []
        self._small_len = 0
        self._pending: deque[tuple[asyncio.Future[None], asyncio.Future[None]]] = deque()
        self._writeback_from = existing
        self._file_end = existing
        self._write_error: OSError | None = None  # the first failed write: nothing after it
        self._flusher = _sync_file_range()
        self._pools: tuple[ThreadPoolExecutor, ThreadPoolExecutor] | None = None
        if threaded:
            self._pools = (
                ThreadPoolExecutor(1, thread_name_prefix="warmstart-hash"),
                ThreadPoolExecutor(1, thread_name_prefix="warmstart-write"),
            )

    async def write(self, chunk: bytes) -> None:
        n = len(chunk)
        if not n:
            return
        self.accepted += n
        if n < SMALL_CHUNK:
            self._small.append(chunk)
            self._small_len += n
            if self._small_len >= CHUNK:
                await self._submit(self._take_small())
            return
        if self._small:
            await self._submit(self._take_small())
        await self._submit(chunk)

    async def finish(self) -> str:
        """Write what is left, fsync, close; returns the hex digest of everything written."""
        if self._small:
            await self._submit(self._take_small())
        while self._pending:
            await self._wait_oldest()
        fd = self._require_fd()
        if self._pools is not None:
            await asyncio.get_running_loop().run_in_executor(self._pools[1], os.fsync, fd)
        else:
            os.fsync(fd)
        self._close()
        return self._hasher.hexdigest()

    def abort(self) -> None:
        """Stop, close and delete the temp file (safe to call more than once)."""
        for pair in self._pending:
            for fut in pair:
                if fut.done() and not fut.cancelled():
                    fut.exception()  # retrieved: the caller already has the first error
                else:
                    fut.cancel()
        self._pending.clear()
        self._close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    # -- internals -----------------------------------------------------------------------

    def _take_small(self) -> bytes:
        data = self._small[0] if len(self._small) == 1 else b"".join(self._small)
        self._small = []
        self._small_len = 0
        return data

    def _require_fd(self) -> int:
        if self._fd is None:
            raise RuntimeError(f"blob writer for {self.path} is closed")
        return self._fd

    def _close(self) -> None:
        if self._pools is not None:
            for pool in self._pools:  # wait for a running chunk so nobody uses a closed fd
                pool.shutdown(wait=True, cancel_futures=True)
            self._pools = None
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _write_chunk(self, data: bytes) -> None:
        if self._write_error is not None:
            # An earlier chunk was not (wholly) written. Chunks queued behind it must not be
            # appended: they would land at the wrong offsets, and readers following the file
            # (clients streaming the transfer) would be sent those bytes.
            err = self._write_error
            raise OSError(err.errno, f"not written after an earlier failure: {err.strerror}")
        fd = self._require_fd()
        try:
            write_all(fd, data)
        except OSError as e:
            self._write_error = e
            raise
        self._file_end += len(data)  # touched by the (single) writing thread only
        end = self._file_end
        if self._flusher is not None and end - self._writeback_from >= WRITEBACK_EVERY:
            self._flusher(
                fd, self._writeback_from, end - self._writeback_from, _SYNC_FILE_RANGE_WRITE
            )
            self._writeback_from = end

    def _wrote(self, n: int) -> None:
        self.written += n
        if self._on_written is not None:
            self._on_written(self.written)

    async def _submit(self, data: bytes) -> None:
        if self._pools is None:
            self._hasher.update(data)
            self._write_chunk(data)
            self._wrote(len(data))
            return
        while len(self._pending) >= WINDOW:
            await self._wait_oldest()
        loop = asyncio.get_running_loop()
        h = loop.run_in_executor(self._pools[0], self._hasher.update, data)
        w = loop.run_in_executor(self._pools[1], self._write_chunk, data)
        # Written counts advance in order: one thread writes the chunks, first in first out.
        w.add_done_callback(functools.partial(self._on_chunk_written, len(data)))
        self._pending.append((h, w))

    async def _wait_oldest(self) -> None:
        h, w = self._pending[0]
        await h
        await w
        self._pending.popleft()

    def _on_chunk_written(self, n: int, fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self._wrote(n)


def hash_prefix(path: Path, hasher: hashlib._Hash, limit: int | None = None) -> int:
    """Feed the first ``limit`` bytes of ``path`` (all of it: None) to ``hasher``; returns how
    many bytes that was (the file may be shorter)."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    size = 0
    with open(path, "rb", buffering=0) as f:
        while limit is None or size < limit:
            want = CHUNK if limit is None else min(CHUNK, limit - size)
            n = f.readinto(view[:want])
            if not n:
                break
            hasher.update(view[:n])
            size += n
    return size


def hash_file(path: Path, algorithm: str) -> tuple[str, int]:
    """(hex digest, size) of a file, read in 1 MiB pieces into one reused buffer."""
    hasher = hashlib.new(algorithm)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    size = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            hasher.update(view[:n])
            size += n
    return hasher.hexdigest(), size


def write_file_atomic(tmp: Path, final: Path, data: bytes) -> None:
    """Write ``data`` to ``tmp``, fsync, rename over ``final``, fsync the directory."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(final.parent)
