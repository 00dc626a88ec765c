"""Writing blobs into the store: one writer per digest across processes, room reserved under
the budget, nothing kept unless the whole content matches the digest.

:class:`BlobIngest` takes a blob's lock (or follows whoever holds it in another process until
the blob is there or the lock is free), then writes it whole from a :data:`BlobSource` (resuming
a partial file a dead writer left, and a source that broke from the offset reached) or as pieces
into a :class:`PieceFile`. :class:`~warmstart.store.store.ContentStore` calls it inside its
single-flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warmstart.backoff import Backoff
from warmstart.oci import Digest
from warmstart.store.blobs import INLINE_LIMIT, BlobWriter, fsync_dir, hash_prefix
from warmstart.store.budget import SpaceKeeper
from warmstart.store.errors import StoreDigestMismatch, StoreError, StoreSizeMismatch
from warmstart.store.index import Index
from warmstart.store.layout import Layout
from warmstart.store.locks import FIRST_POLL, FileLock, Session
from warmstart.store.models import BlobSource
from warmstart.store.piece_geometry import Pieces
from warmstart.store.pieces import PieceFile
from warmstart.store.recovery import partial_worth_keeping
from warmstart.store.singleflight import Flight

log = logging.getLogger(__name__)


@dataclass(eq=False)
class BlobIngest:
    """The write side of one open store (its index, session and room under the budget):
    :meth:`transfer` takes the blob's lock around :meth:`write_whole` or
    :meth:`write_in_pieces`, or returns the blob another process wrote."""

    layout: Layout
    index: Index
    session: Session
    space: SpaceKeeper
    budget: int | None
    resume_attempts: int
    poll: float
    is_open: Callable[[], bool]
    clock: Callable[[], float] = time.time
    piece_files: dict[Digest, PieceFile] = field(default_factory=dict)  # written as pieces here

    async def transfer(
        self, flight: Flight[Digest, Path], write: Callable[[], Awaitable[Path]]
    ) -> Path:
        """Take the blob's lock and ``write`` it, or follow whoever (another process) holds
        the lock until the blob is there or the lock is free."""
        digest = flight.key
        final = self.layout.blob_path(digest)
        lock = FileLock(self.layout.lock_path(digest))
        partial = self.layout.partial_path(digest)
        try:
            delays = Backoff(FIRST_POLL, self.poll).delays()
            while True:  # someone else (another process) may be writing it: follow, or take over
                if final.is_file():
                    return final
                if lock.try_acquire():
                    break
                with contextlib.suppress(FileNotFoundError):
                    grown = partial.stat().st_size
                    if grown != flight.progress:
                        flight.advance(grown)
                await asyncio.sleep(next(delays))
            if final.is_file():  # finished between our check and the lock
                return final
            return await write()
        finally:
            lock.release(unlink=True)

    async def write_whole(
        self,
        flight: Flight[Digest, Path],
        size: int | None,
        source: BlobSource,
        media_type: str | None,
    ) -> Path:
        """Write the blob (we hold its lock): reserve room, stream, verify, rename.

        A partial file left by a writer that died is resumed: its bytes are hashed again and
        the source is asked for the rest only. Nothing is renamed into ``blobs/`` unless the
        whole content matches the digest, so a torn partial costs one failed resume, then the
        blob is fetched again from byte 0."""
        digest = flight.key
        partial = self.layout.partial_path(digest)
        final = self.layout.blob_path(digest)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.layout.pieces_path(digest))  # a piece write's leftover
        resume = await asyncio.to_thread(self._adopt_partial, digest, size)
        self.space.reserve(digest, size or 0, self.budget)
        reserved = True
        try:
            while True:
                hasher, existing = resume if resume is not None else (digest.hasher(), 0)
                writer = BlobWriter(
                    partial,
                    hasher,
                    on_written=flight.advance,
                    threaded=size is None or size > INLINE_LIMIT,
                    existing=existing,
                )
                if existing:
                    flight.advance(existing)
                try:
                    await self._pump(digest, size, source, writer)
                    try:
                        actual = await writer.finish()
                    except OSError as e:
                        raise self._disk_error(digest, e) from e
                    torn = actual != digest.hex and existing > 0
                    if actual != digest.hex and not torn:
                        raise StoreDigestMismatch(
                            f"blob {digest} from the source hashes to {digest.algorithm}:{actual}: "
                            "the source sent other data; nothing was stored"
                        )
                    if not torn:
                        final.parent.mkdir(parents=True, exist_ok=True)
                        os.rename(partial, final)
                except BaseException:
                    writer.abort()
                    raise
                if not torn:
                    break
                log.warning(
                    "blob %s: the %d bytes resumed from a partial file did not verify; "
                    "fetching it again from byte 0",
                    digest,
                    existing,
                )
                writer.abort()
                resume = None
            with self.index.transaction():
                self.index.add_blob(digest, writer.written, media_type, self.clock())
                self.index.remove_inflight(digest, self.session.id)
            reserved = False
            await asyncio.to_thread(fsync_dir, final.parent)  # make the rename durable
            return final
        finally:
            if reserved and self.is_open():
                with contextlib.suppress(StoreError, sqlite3.Error):
                    self.index.remove_inflight(digest, self.session.id)

    async def write_in_pieces(
        self,
        flight: Flight[Digest, Path],
        pieces: Pieces,
        run: Callable[[PieceFile], Awaitable[None]],
        media_type: str | None,
    ) -> Path:
        """Write the blob as pieces (we hold its lock): reserve room, ``run``, verify, rename."""
        digest = flight.key
        final = self.layout.blob_path(digest)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.layout.partial_path(digest))  # a whole-blob write's leftover
        self.space.reserve(digest, pieces.size, self.budget)
        reserved = True
        piece_file: PieceFile | None = None
        try:
            try:
                piece_file = await asyncio.to_thread(
                    PieceFile,
                    self.layout.pieces_path(digest),
                    digest,
                    pieces,
                    on_prefix=flight.advance,
                )
            except OSError as e:
                raise self._disk_error(digest, e) from e
            self.piece_files[digest] = piece_file
            try:
                await run(piece_file)
                actual = await piece_file.finish()
            except OSError as e:
                raise self._disk_error(digest, e) from e
            if actual != digest.hex:
                raise StoreDigestMismatch(
                    f"blob {digest} from its pieces hashes to {digest.algorithm}:{actual}: "
                    "the pieces' list was wrong; nothing was stored"
                )
            await asyncio.to_thread(piece_file.rename, final)
            with self.index.transaction():
                self.index.add_blob(digest, pieces.size, media_type, self.clock())
                self.index.remove_inflight(digest, self.session.id)
            reserved = False
            return final
        except BaseException as e:
            if piece_file is not None and isinstance(e, StoreDigestMismatch):
                piece_file.remove()  # every piece matched a wrong list: keep none of it
            raise
        finally:
            if piece_file is not None:
                piece_file.close()
                if self.piece_files.get(digest) is piece_file:
                    del self.piece_files[digest]
            if reserved and self.is_open():
                with contextlib.suppress(StoreError, sqlite3.Error):
                    self.index.remove_inflight(digest, self.session.id)

    def _adopt_partial(self, digest: Digest, size: int | None) -> tuple[Any, int] | None:
        """(hash state, bytes) of the partial file a dead writer left for ``digest`` (we hold
        its lock), if it is worth resuming; otherwise it is removed and None returned."""
        partial = self.layout.partial_path(digest)
        try:
            st = os.stat(partial)
        except FileNotFoundError:
            return None
        usable = (
            stat.S_ISREG(st.st_mode)
            and partial_worth_keeping(self.layout, digest, st.st_size, st.st_mtime, self.clock())
            and (size is None or st.st_size <= size)
        )
        if usable:
            hasher = digest.hasher()
            try:
                existing = hash_prefix(partial, hasher, st.st_size)
            except OSError:
                existing = 0
            if existing == st.st_size:
                log.info("blob %s: resuming from byte %d of a partial file", digest, existing)
                return hasher, existing
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        return None

    async def _pump(
        self, digest: Digest, size: int | None, source: BlobSource, writer: BlobWriter
    ) -> None:
        """Copy the source into the writer, resuming from the offset reached if it fails."""
        attempts = 0
        while True:
            try:
                stream = source(writer.accepted)
                try:
                    async for chunk in stream:
                        if size is not None and writer.accepted + len(chunk) > size:
                            raise StoreSizeMismatch(
                                f"the source sent more than the {size} bytes declared for "
                                f"{digest}; aborted, nothing was stored"
                            )
                        if type(chunk) is not bytes and not (
                            isinstance(chunk, memoryview) and chunk.readonly
                        ):
                            chunk = bytes(chunk)  # a mutable buffer: keep our own copy
                        try:
                            await writer.write(chunk)
                        except OSError as e:
                            raise self._disk_error(digest, e) from e
                finally:
                    aclose = getattr(stream, "aclose", None)
                    if aclose is not None:
                        await aclose()
            except StoreError:
                raise
            except Exception:
                if attempts >= self.resume_attempts:
                    raise
                attempts += 1  # resume from writer.accepted; the hash state is kept
                continue
            if size is None or writer.accepted == size:
                return
            if attempts < self.resume_attempts:
                attempts += 1  # the stream ended early: ask for the rest
                continue
            raise StoreSizeMismatch(
                f"the source ended after {writer.accepted} of the {size} bytes declared for "
                f"{digest}; nothing was stored"
            )

    def _disk_error(self, digest: Digest, error: OSError) -> StoreError:
        return StoreError(
            f"cannot write {digest} under {self.layout.root}: {error.strerror or error}; "
            "free disk space or check permissions"
        )
