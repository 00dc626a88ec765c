"""A blob written as pieces, in any order: ``ingest/<hex>.pieces``.

:class:`PieceFile` is the write side. Each piece is written at its offset while it is hashed
(:class:`PieceSink`: ``pwrite`` and SHA-256 in a worker thread, chunk by chunk); a piece counts
only once its hash is accepted (:meth:`PieceFile.verified`). The whole blob is hashed along the
contiguous prefix of accepted pieces as it grows, so the final check against the digest needs
no second pass, and :attr:`PieceFile.prefix` is what readers may follow (the file has holes and
pieces not yet accepted beyond it). Progress (``on_prefix``) is that prefix.

:func:`follow_prefix` is the read side: the blob from an offset, in order, never past the
prefix, then from the final file once it is renamed into place.

A piece file left by a process that died is kept for a while (like a ``.partial``): the next
fetch re-reads each piece of it whose hash it learns (:meth:`PieceFile.adopt`) and keeps those
that match. Nothing in it is trusted without a hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

from warmstart.oci import Digest
from warmstart.store.blobs import CHUNK, fsync_dir
from warmstart.store.errors import BlobNotFound, StoreError
from warmstart.store.piece_geometry import Pieces

PIECE_HASH = "sha256"


class PieceCorrupt(StoreError):
    """A piece's bytes do not hash to the piece's published hash (nothing was accepted)."""


class PieceShort(StoreError):
    """A source sent more or fewer bytes than the piece has."""


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _hash_and_write(fd: int, hasher: hashlib._Hash, data: bytes, offset: int) -> None:
    hasher.update(data)
    _pwrite_all(fd, data, offset)


async def _finish_anyway(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` to its end even if the caller is cancelled meanwhile (then re-raise the
    cancellation once it has ended)."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError()


def _is_file(path: Path) -> bool:
    return path.is_file()


def _hash_range(fd: int, hasher: hashlib._Hash, start: int, end: int) -> int:
    """Feed bytes ``start..end`` of the file to ``hasher``; how many there were."""
    pos = start
    while pos < end:
        data = os.pread(fd, min(CHUNK, end - pos), pos)
        if not data:
            break
        hasher.update(data)
        pos += len(data)
    return pos - start


HAND_OFF = 1 << 20  # a piece's bytes are hashed and written in a thread this many at a time


class PieceSink:
    """One piece being written: :meth:`write` its chunks in order, then :meth:`close` checks
    the length and returns its hex SHA-256 (and the hash given, if any: :class:`PieceCorrupt`
    if it differs). Nothing counts until the owner calls :meth:`PieceFile.verified`."""

    def __init__(self, owner: PieceFile, index: int, expected: str | None) -> None:
        self._owner = owner
        self.index = index
        self.expected = expected
        self.start, self.end = owner.pieces.span(index)
        self.pos = self.start
        self._hasher = hashlib.new(PIECE_HASH)
        # Chunks not yet handed to a thread (a socket hands over what has arrived, often a few
        # KiB at a time: a thread hop each would cost more than hashing them), from ``_held_at``
        self._held: list[bytes] = []
        self._held_len = 0
        self._held_at = self.start

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    async def write(self, chunk: bytes) -> None:
        """Take ``chunk``; hashed and written once :data:`HAND_OFF` bytes are held, and when
        the piece is complete (so :meth:`close` finds every byte hashed)."""
        if not chunk:
            return
        if len(chunk) > self.remaining:
            raise PieceShort(
                f"piece {self.index} of {self._owner.digest}: more than its "
                f"{self.end - self.start} bytes"
            )
        self._held.append(chunk)
        self._held_len += len(chunk)
        self.pos += len(chunk)
        if self._held_len < HAND_OFF and self.pos < self.end:
            return
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        offset = self._held_at
        self._held, self._held_len, self._held_at = [], 0, self.pos
        # A cancelled caller waits for its write to land: no stray write may come after it.
        await _finish_anyway(
            asyncio.to_thread(_hash_and_write, self._owner.fd, self._hasher, data, offset)
        )

    def close(self) -> str:
        if self.pos != self.end:
            raise PieceShort(
                f"piece {self.index} of {self._owner.digest}: {self.pos - self.start} of "
                f"{self.end - self.start} bytes"
            )
        actual = self._hasher.hexdigest()
        if self.expected is not None and actual != self.expected:
            raise PieceCorrupt(
                f"piece {self.index} of {self._owner.digest} hashes to {actual}, "
                f"not {self.expected}"
            )
        return actual


class PieceFile:
    """The pieces of one blob under ``path`` (created or adopted by the store, which holds the
    blob's lock). ``on_prefix(bytes)`` is called when the verified prefix grows."""

    def __init__(
        self,
        path: Path,
        digest: Digest,
        pieces: Pieces,
        *,
        on_prefix: Callable[[int], None] | None = None,
    ) -> None:
        self.path = path
        self.digest = digest
        self.pieces = pieces
        self.on_prefix = on_prefix
        self.have: set[int] = set()
        self.prefix = 0
        self.adoptable = 0  # bytes a dead writer left: pieces there may be adopted
        self._whole = digest.hasher()
        self._hashed_to = 0
        self._lock = asyncio.Lock()
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is not None and st.st_size <= pieces.size:
            self.adoptable = st.st_size
            self.fd: int = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(self.fd, pieces.size)  # sparse: pieces land at their offsets
        except BaseException:
            os.close(self.fd)
            raise
        self._closed = False

    @property
    def complete(self) -> bool:
        return len(self.have) == self.pieces.count

    def sink(self, index: int, expected: str | None) -> PieceSink:
        if index in self.have:
            raise StoreError(f"piece {index} of {self.digest} is written already")
        return PieceSink(self, index, expected)

    def covered(self, start: int, end: int) -> bool:
        """Whether bytes ``start..end`` all lie in accepted pieces."""
        if start >= end:
            return start == end
        first = start // self.pieces.piece_size
        last = (end - 1) // self.pieces.piece_size
        return all(i in self.have for i in range(first, last + 1))

    async def verified(self, index: int) -> None:
        """Accept piece ``index`` (its hash matched), then hash the whole blob along the
        prefix as far as it now reaches."""
        self.have.add(index)
        # Shielded: a caller cancelled mid-hash must not leave the hasher fed with bytes the
        # prefix does not count (the next pass would feed them again).
        await _finish_anyway(self._advance_locked())

    async def _advance_locked(self) -> None:
        async with self._lock:
            await self._advance()

    async def _advance(self) -> None:
        """Hash the whole blob on from where it was up to the prefix of accepted pieces (the
        lock held: one pass at a time, in order)."""
        target = self.pieces.prefix(self.have)
        if target > self._hashed_to:
            start = self._hashed_to
            got = await asyncio.to_thread(_hash_range, self.fd, self._whole, start, target)
            if got != target - start:
                raise StoreError(f"{self.path} is shorter than its accepted pieces")
            self._hashed_to = target
            self.prefix = target
            if self.on_prefix is not None:
                self.on_prefix(target)

    async def adopt(self, index: int, expected: str) -> bool:
        """A piece a dead writer may have left: accepted if the file's bytes there hash to
        ``expected``."""
        start, end = self.pieces.span(index)
        if index in self.have or end > self.adoptable:
            return False
        hasher = hashlib.new(PIECE_HASH)
        got = await asyncio.to_thread(_hash_range, self.fd, hasher, start, end)
        if got != end - start or hasher.hexdigest() != expected:
            return False
        await self.verified(index)
        return True

    async def finish(self) -> str:
        """Every piece accepted: fsync and return the hex digest of the whole blob."""
        async with self._lock:
            await self._advance()  # a piece accepted a moment ago may still be hashing
        if not self.complete or self._hashed_to != self.pieces.size:
            raise StoreError(
                f"{self.digest}: {len(self.have)} of {self.pieces.count} pieces accepted"
            )
        await asyncio.to_thread(os.fsync, self.fd)
        return self._whole.hexdigest()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.fd)

    def remove(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def rename(self, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(self.path, final)
        fsync_dir(final.parent)


async def _read_chunk(fd: int, pos: int, end: int, path: Path) -> bytes:
    """Up to ``CHUNK`` bytes of the open file ``fd`` (``path``) from ``pos``, none past ``end``;
    :class:`BlobNotFound` if the file ends before ``end``."""
    data = await asyncio.to_thread(os.pread, fd, min(CHUNK, end - pos), pos)
    if not data:
        raise BlobNotFound(f"{path} ended at byte {pos} of {end}")
    return data


async def read_range(path: Path, start: int, end: int) -> AsyncIterator[bytes]:
    """Bytes ``start..end`` of a file (a verified piece of a piece file, which is never
    written again, or of a final blob)."""
    fd = await asyncio.to_thread(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        pos = start
        while pos < end:
            data = await _read_chunk(fd, pos, end, path)
            pos += len(data)
            yield data
    finally:
        os.close(fd)


async def follow_prefix(
    piece_file: PieceFile,
    final: Path,
    start: int,
    failed: Callable[[], BaseException | None],
    changed: Callable[[float], asyncio.Future[None] | object],
    *,
    poll: float = 0.02,
) -> AsyncIterator[bytes]:
    """The blob from ``start`` in order: from ``piece_file`` up to its verified prefix, waiting
    (``await changed(poll)``) for it to grow, then from ``final`` once the file is there.
    ``failed()`` is the writer's error once it has stopped without a final file."""
    pos = start
    size = piece_file.pieces.size
    fd = await asyncio.to_thread(os.open, piece_file.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        while pos < size:
            limit = piece_file.prefix
            if pos < limit:
                data = await _read_chunk(fd, pos, limit, piece_file.path)
                pos += len(data)
                yield data
                continue
            if _is_file(final):
                break
            error = failed()
            if error is not None:
                if isinstance(error, StoreError):
                    raise error
                raise BlobNotFound(f"the transfer of {piece_file.digest} failed: {error}")
            await changed(poll)  # type: ignore[misc]
    finally:
        os.close(fd)
    if pos >= size:
        return
    # Renamed into place (the same inode, complete and verified): the rest from there.
    async for data in read_range(final, pos, size):
        yield data


__all__ = [
    "PieceCorrupt",
    "PieceFile",
    "PieceShort",
    "PieceSink",
    "follow_prefix",
    "read_range",
]
