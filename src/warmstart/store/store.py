"""``ContentStore``: the node-local content-addressed store, as one façade.

The modules beside this one each do one job (paths, blob files, index, locks, eviction choice,
room under the budget, single-flight, writing blobs (``ingest``), following reads, recovery);
this class wires them together and holds the only state: an open index, a session lock and the
in-process transfers.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from warmstart.aio import cancel_all
from warmstart.oci import Digest
from warmstart.store.blobs import (
    hash_file,
    write_file_atomic,
)
from warmstart.store.budget import Doomed, SpaceKeeper
from warmstart.store.errors import (
    BlobNotFound,
    BlobTooLarge,
    StoreDigestMismatch,
    StoreError,
    StoreSizeMismatch,
)
from warmstart.store.eviction import (
    orphans,
    plan_removal,
)
from warmstart.store.index import ImageBlob, Index
from warmstart.store.ingest import BlobIngest
from warmstart.store.layout import Layout
from warmstart.store.locks import Session
from warmstart.store.model_dirs import ModelDirs, ModelDirStats
from warmstart.store.models import (
    BlobSource,
    GCReport,
    ImageRecord,
    ProgressFn,
    RecoveryReport,
    VerifyReport,
)
from warmstart.store.piece_geometry import Pieces
from warmstart.store.pieces import PieceFile, follow_prefix
from warmstart.store.pins import Pin
from warmstart.store.reader import follow
from warmstart.store.recovery import (
    clean_ingest,
    clean_locks,
    clean_sessions,
    reconcile,
)
from warmstart.store.singleflight import SingleFlight

log = logging.getLogger(__name__)

REHASH_LIMIT = 4 << 20  # verified_path hashes blobs up to this size again


class ContentStore:
    """Blobs under ``root/blobs/<algorithm>/<hex>``, an SQLite index, a disk budget.

    Safe to share between tasks of one event loop and between processes using the same root.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        budget: int | None = None,
        resume_attempts: int = 1,
        poll_interval: float = 0.02,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if budget is not None and budget < 0:
            raise ValueError(f"store budget must be >= 0 bytes, not {budget}")
        self.root = Path(root).absolute()
        self.budget = budget
        self._poll = poll_interval
        self._clock = clock
        self._layout = Layout(self.root)
        self._layout.create()
        self._session = Session.start(self._layout.sessions_dir)
        try:
            self._index = Index(self._layout.index_path)
        except BaseException:
            self._session.close()
            raise
        self._flights: SingleFlight[Digest, Path] = SingleFlight()
        self._models = ModelDirs(self._index, self._layout, self._session, clock)
        self._space = SpaceKeeper(
            self._index, self._layout, self._session, self._flights, self._models, clock
        )
        self._closed = False
        self._ingest = BlobIngest(
            layout=self._layout,
            index=self._index,
            session=self._session,
            space=self._space,
            budget=budget,
            resume_attempts=max(0, resume_attempts),
            poll=poll_interval,
            clock=clock,
            is_open=lambda: not self._closed,
        )
        try:
            self.recovery: RecoveryReport = self._recover()
        except BaseException:
            self.close()
            raise

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def layout(self) -> Layout:
        return self._layout

    def close(self) -> None:
        """Close the index and end this store's session (its pins lapse). Transfers still
        running are cancelled; prefer ``aclose`` from async code to wait for them."""
        if self._closed:
            return
        self._closed = True
        for flight in self._flights.flights():
            if flight.task is not None and not flight.task.done():
                flight.task.cancel()
        self._index.close()
        self._session.close()

    async def aclose(self) -> None:
        tasks = [
            f.task for f in self._flights.flights() if f.task is not None and not f.task.done()
        ]
        await cancel_all(tasks)
        self.close()

    def __enter__(self) -> ContentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> ContentStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the content store at {self.root} is closed")

    def _recover(self) -> RecoveryReport:
        now = self._clock()
        pins_dropped = self._space.prune_sessions()
        temp = clean_ingest(self._layout, now)
        rec = reconcile(self._layout, self._index, now)
        clean_locks(self._layout)
        clean_sessions(self._layout, self._session.id, now)
        temp += self._models.recover()
        return RecoveryReport(
            temp, rec.rows_dropped, rec.rows_added, rec.bad_files_removed, pins_dropped
        )

    # -- blobs ---------------------------------------------------------------------------

    def blob_path(self, digest: Digest) -> Path:
        return self._layout.blob_path(digest)

    def has(self, digest: Digest) -> bool:
        """Is the complete, verified blob in the store? (Files appear only after verification.)"""
        return self.blob_path(digest).is_file()

    def partial_size(self, digest: Digest) -> int:
        """Bytes of ``digest`` in its partial file (being written, or left by a writer that
        died and kept for a resume); 0 if there is none. A hint: where a new fetch of the
        digest will probably ask its source to start."""
        try:
            return os.stat(self._layout.partial_path(digest)).st_size
        except FileNotFoundError:
            return 0

    def verified_path(self, digest: Digest, size: int) -> Path | None:
        """The blob's file, fit to hand to another store (containerd's) without a transfer.

        Only final files exist at ``blob_path`` (renamed after their digest matched); here the
        file must also be a regular file of the size the index recorded and ``size``. Small
        blobs (configs: nothing else re-checks them) are hashed again. None otherwise; a file
        whose size changed since it was stored, or a small one that no longer hashes right, is
        removed (the next fetch replaces it)."""
        self._check_open()
        path = self.blob_path(digest)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        row = self._index.blob(digest)
        if row is not None and row.size != st.st_size:
            self._space.remove_corrupt(digest)  # changed on disk since it was verified
            return None
        if st.st_size != size:
            return None
        if size <= REHASH_LIMIT:
            try:
                hex_, _ = hash_file(path, digest.algorithm)
            except FileNotFoundError:
                return None
            if hex_ != digest.hex:
                self._space.remove_corrupt(digest)
                return None
        return path

    def shared_blobs(self) -> dict[Digest, int]:
        """Blobs whose file has other hard links (containerd's content store links them):
        deleting the store's name frees no disk space."""
        return self._space.shared_blobs()

    def exclusive_usage(self) -> int:
        """Bytes the store alone holds on disk (what the budget limits): complete blobs that
        no other store links."""
        self._check_open()
        return self._index.usage() - sum(self.shared_blobs().values())

    def blob_size(self, digest: Digest) -> int | None:
        self._check_open()
        row = self._index.blob(digest)
        if row is not None:
            return row.size
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def read_bytes(self, digest: Digest, limit: int) -> bytes:
        """The whole blob (for small ones such as manifests), checked against its digest."""
        path = self.blob_path(digest)
        try:
            with open(path, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                if size > limit:
                    raise BlobTooLarge(
                        f"blob {digest} is {size} bytes, over the {limit} byte limit for reading it"
                        " whole; stream it instead"
                    )
                data = f.read()
        except FileNotFoundError:
            raise BlobNotFound(f"blob {digest} is not in the store at {self.root}") from None
        if Digest.of(data, digest.algorithm) != digest:
            self._space.remove_corrupt(digest)
            raise BlobNotFound(
                f"blob {digest} in the store at {self.root} was corrupt and has been removed; "
                "fetch it again"
            )
        return data

    def put_bytes(self, digest: Digest, data: bytes, media_type: str | None = None) -> None:
        """Store a small blob held in memory: verified first, then written atomically."""
        self._check_open()
        actual = Digest.of(data, digest.algorithm)
        if actual != digest:
            raise StoreDigestMismatch(
                f"data given for {digest} hashes to {actual}: refusing to store it"
            )
        if not self.has(digest):
            write_file_atomic(self._layout.put_temp_path(digest), self.blob_path(digest), data)
        self._index.add_blob(digest, len(data), media_type, self._clock())

    async def fetch(
        self,
        digest: Digest,
        size: int | None,
        source: BlobSource,
        *,
        media_type: str | None = None,
        on_progress: ProgressFn | None = None,
    ) -> Path:
        """Make sure the blob is in the store and return its path.

        Concurrent fetches of one digest (tasks here, and other processes on the same root) call
        ``source`` once: one writer, the others follow it and take over if its process dies.
        ``on_progress`` gets deltas of the bytes written so far (not called if the blob was
        already present).
        """
        self._check_open()
        if size is not None and size < 0:
            raise ValueError(f"blob size must be >= 0, not {size}")
        if not self.has(digest):
            await self._flights.do(
                digest,
                lambda flight: self._ingest.transfer(
                    flight, lambda: self._ingest.write_whole(flight, size, source, media_type)
                ),
                on_progress,
            )
        return self._checked(digest, size)

    def open_reader(self, digest: Digest, start: int = 0) -> AsyncIterator[bytes]:
        """Stream the blob from ``start``, following a write in progress until it completes
        (a blob written as pieces here: in order, up to its verified prefix)."""
        self._check_open()
        piece_file = self._ingest.piece_files.get(digest)
        flight = self._flights.get(digest)
        if piece_file is not None and flight is not None:
            return follow_prefix(
                piece_file,
                self.blob_path(digest),
                start,
                flight.error,
                flight.wait_changed,
                poll=self._poll,
            )
        return follow(self._layout, digest, start, self._flights.get, poll=self._poll)

    def piece_file(self, digest: Digest) -> PieceFile | None:
        """The blob's pieces being written by this process, if it is written as pieces."""
        return self._ingest.piece_files.get(digest)

    async def fetch_pieces(
        self,
        digest: Digest,
        pieces: Pieces,
        run: Callable[[PieceFile], Awaitable[None]],
        *,
        media_type: str | None = None,
    ) -> Path:
        """Make sure the blob is in the store, written as ``pieces`` by ``run``, and return its
        path.

        Like :meth:`fetch` (one writer per digest across tasks and processes, room reserved
        under the budget, nothing kept unless the whole content matches the digest), but
        ``run`` writes pieces in any order into a :class:`PieceFile` and accepts each once its
        hash matched; when it returns every piece must be accepted. A piece file a dead writer
        left is handed over for ``run`` to adopt what still verifies."""
        self._check_open()
        if not self.has(digest):
            await self._flights.do(
                digest,
                lambda flight: self._ingest.transfer(
                    flight, lambda: self._ingest.write_in_pieces(flight, pieces, run, media_type)
                ),
            )
        return self._checked(digest, pieces.size)

    def _checked(self, digest: Digest, size: int | None) -> Path:
        path = self.blob_path(digest)
        try:
            actual = path.stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(
                f"blob {digest} was removed from the store at {self.root} right after it was "
                "fetched; pin blobs while they are in use"
            ) from None
        if size is not None and actual != size:
            raise StoreSizeMismatch(
                f"blob {digest} in the store is {actual} bytes but {size} were expected: the "
                "descriptor's size is wrong"
            )
        return path

    # -- images ----------------------------------------------------------------------------

    def record_image(
        self,
        reference: str,
        manifest_digest: Digest,
        blobs: Sequence[tuple[Digest, int, str]],
        platform: str | None = None,
        *,
        model_format: str | None = None,
    ) -> None:
        """Record (or replace) an image: its manifest and every blob it needs, with sizes.
        ``model_format``: the record is a model artifact of that format (modelpack, ...)."""
        self._check_open()
        if not reference:
            raise ValueError("image reference must not be empty")
        entries: dict[Digest, ImageBlob] = {}
        for digest, size, media_type in blobs:
            entries[digest] = ImageBlob(digest, int(size), media_type)
        if manifest_digest not in entries:
            row = self._index.blob(manifest_digest)
            if row is not None:
                entries[manifest_digest] = ImageBlob(manifest_digest, row.size, row.media_type)
        with self._index.transaction():
            self._index.put_image(
                reference, manifest_digest, platform, list(entries.values()), self._clock()
            )
            self._index.set_model_format(reference, model_format)

    def images(self) -> list[ImageRecord]:
        self._check_open()
        present = self._index.blob_sizes()
        pins = self._space.live_pins()
        pinned_refs = {p.reference for p in pins if p.reference is not None}
        pinned: set[Digest] = set()
        for p in pins:
            pinned.update(p.digests)
        image_blobs = self._index.image_blobs()
        formats = self._index.model_formats()
        materialised = {r.manifest_digest for r in self._index.model_dirs()}
        records = []
        for row in self._index.images():
            blobs = image_blobs.get(row.reference, [])
            records.append(
                ImageRecord(
                    reference=row.reference,
                    manifest_digest=row.manifest_digest,
                    size=sum(b.size for b in blobs),
                    last_used=row.last_used,
                    pinned=row.reference in pinned_refs or row.manifest_digest in pinned,
                    complete=row.manifest_digest in present
                    and all(b.digest in present for b in blobs),
                    platform=row.platform,
                    model_format=formats.get(row.reference),
                    materialised=row.manifest_digest in materialised,
                )
            )
        return records

    def touch(self, reference: str) -> None:
        """Mark the image as used now (it becomes the last to be evicted)."""
        self._check_open()
        self._index.touch(reference, self._clock())

    def remove_image(self, reference: str) -> bool:
        """Drop the image's record and delete the blobs nothing else needs (pinned, in-flight
        and shared blobs stay, and so do all blobs of an image pinned by reference: gc or
        eviction collects them once unpinned). False if there was no such image."""
        self._check_open()
        doomed: Doomed = []
        try:
            with self._index.transaction():
                snap = self._space.snapshot()
                image = next((i for i in snap.images if i.reference == reference), None)
                if image is None:
                    return False
                if image.pinned:  # in use: drop the record, keep the bytes until unpinned
                    snap = replace(snap, protected=snap.protected | image.blobs)
                doomed, _busy = self._space.lock_all(plan_removal(snap, reference))
                self._index.remove_images([reference])
                self._index.remove_blobs(d for d, _ in doomed)
        except BaseException:
            for _, lock in doomed:
                lock.release()
            raise
        self.drop_unused_models()
        self._space.delete_files(doomed)
        return True

    def pin(self, holder: str, digests: Iterable[Digest], reference: str | None = None) -> Pin:
        """Protect blobs (and the image ``reference``) from eviction and gc until released."""
        self._check_open()
        wanted = frozenset(digests)
        pin_id = self._index.add_pin(
            holder, reference, wanted, self._session.id, os.getpid(), self._clock()
        )
        return Pin(pin_id, holder, wanted, reference, self._release_pin)

    def _release_pin(self, pin_id: int) -> None:
        if not self._closed:
            self._index.remove_pin(pin_id)

    # -- materialised models ---------------------------------------------------------------

    def model_dir(self, manifest_digest: Digest) -> Path | None:
        """The model's materialised read-only directory, if it is built."""
        self._check_open()
        return self._models.path(manifest_digest)

    def new_model_dir(self, manifest_digest: Digest) -> Path:
        """An empty directory to build the model in (swept if this store dies first)."""
        self._check_open()
        return self._models.temp_path(manifest_digest)

    def commit_model_dir(self, manifest_digest: Digest, built: Path, stats: ModelDirStats) -> Path:
        """Make ``built`` read-only and put it in place as the model's directory."""
        self._check_open()
        return self._models.commit(manifest_digest, built, stats)

    def link_model_reference(self, reference: str, manifest_digest: Digest) -> Path:
        """``models/by-ref/<reference>`` -> the model's directory (a stable host path)."""
        self._check_open()
        return self._models.link_reference(reference, manifest_digest)

    def model_usage(self) -> int:
        """Bytes extracted from tar layers into model directories (raw layers are links to
        blobs, already counted by :meth:`usage`)."""
        self._check_open()
        return self._models.extracted_usage()

    def drop_unused_models(self) -> int:
        """Delete model directories no image record names and no pin or transfer protects."""
        self._check_open()
        return self._models.drop(self._models.orphans(self._space.snapshot().protected))

    # -- accounting and maintenance --------------------------------------------------------

    def usage(self) -> int:
        """Bytes of complete blobs in the store."""
        self._check_open()
        return self._index.usage()

    def gc(self) -> GCReport:
        """Remove blobs no image references (unless pinned or in flight), stale temp files,
        stale pins, and reconcile the index with the files."""
        self._check_open()
        now = self._clock()
        pins_dropped = self._space.prune_sessions()
        temp = clean_ingest(self._layout, now)
        reconcile(self._layout, self._index, now)
        doomed: Doomed = []
        try:
            with self._index.transaction():
                snap = self._space.snapshot()
                doomed, _busy = self._space.lock_all(orphans(snap))
                self._index.remove_blobs(d for d, _ in doomed)
        except BaseException:
            for _, lock in doomed:
                lock.release()
            raise
        freed = sum(snap.blob_sizes[d] for d, _ in doomed)
        removed = tuple(d for d, _ in doomed)
        self.drop_unused_models()
        self._space.delete_files(doomed)
        clean_locks(self._layout)
        clean_sessions(self._layout, self._session.id, now)
        return GCReport(len(removed), freed, temp, pins_dropped, removed)

    def verify(self) -> VerifyReport:
        """Re-hash every blob; remove corrupt ones; report blobs that images miss."""
        self._check_open()
        files = list(self._layout.iter_blob_files())

        def check(item: tuple[Digest, Path]) -> tuple[str, int, int] | None:
            digest, path = item
            try:
                hex_, size = hash_file(path, digest.algorithm)
                return hex_, size, path.stat().st_nlink
            except FileNotFoundError:
                return None

        workers = max(1, min(4, os.cpu_count() or 1))
        with ThreadPoolExecutor(workers, thread_name_prefix="warmstart-verify") as pool:
            results = list(pool.map(check, files))
        corrupt: list[Digest] = []
        linked: list[Digest] = []
        checked = checked_bytes = 0
        rows = self._index.blob_sizes()
        for (digest, _path), result in zip(files, results, strict=True):
            if result is None:
                continue
            hex_, size, links = result
            checked += 1
            checked_bytes += size
            if hex_ != digest.hex:
                self._space.remove_corrupt(digest)
                corrupt.append(digest)
                if links > 1:
                    linked.append(digest)
            elif rows.get(digest) != size:
                self._index.add_blob(digest, size, None, self._clock())
        reconcile(self._layout, self._index, self._clock())
        missing: list[tuple[str, Digest]] = []
        image_blobs = self._index.image_blobs()
        for row in self._index.images():
            needed = {b.digest for b in image_blobs.get(row.reference, ())} | {row.manifest_digest}
            missing.extend((row.reference, d) for d in sorted(needed) if not self.has(d))
        return VerifyReport(checked, checked_bytes, tuple(corrupt), tuple(missing), tuple(linked))
