"""Put an image's blobs in the node's containerd before containerd opens its writers.

Called on two paths: the hot pre-warm (every blob is stored: link them, then ``ctr images
pull`` transfers nothing), and the mirror's manifest answer to containerd (its next step is to
open a writer per blob; a blob already in its content directory is committed without a GET).

On the mirror path the blobs the store lacks (a peer or cold start) are fetched at once, in
parallel, through the tiered fetcher, and each is linked as soon as it is stored; the manifest
answer waits for them up to ``wait`` seconds (``link_wait``). Blobs that arrive later are still
linked when they land; containerd asks the agent for any it opens a writer for before that, and
joins the transfer already running (single-flight), so nothing is fetched twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from warmstart.containerd.content_link import ContentLinker, LinkOutcome, LinkRefused
from warmstart.fetch.interfaces import ClientIdentity, Fetcher, FetchError
from warmstart.oci import Descriptor, Digest, ImageManifest
from warmstart.store import ContentStore, StoreError

log = logging.getLogger(__name__)

DEFAULT_PREFETCH_CONCURRENCY = 8


class BlobIncomplete(FetchError):
    """A blob the fetcher answered for did not end up whole in the store (short, the wrong
    size, or streamed but never renamed into place)."""


@runtime_checkable
class StoringFetcher(Fetcher, Protocol):
    """A fetcher that can bring a blob into the store without the caller reading its bytes
    (the tiered fetcher)."""

    async def ensure_blob(
        self, registry: str, repository: str, digest: Digest, client: ClientIdentity | None = None
    ) -> Path:
        """Fetch the blob into the store through the tiers and return its path."""
        ...


@dataclass
class LinkReport:
    """What one call linked: counts and bytes per outcome, and what was missing."""

    linked: int = 0
    linked_bytes: int = 0
    present: int = 0
    missing: list[Digest] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, outcome: LinkOutcome, size: int) -> None:
        if outcome is LinkOutcome.PRESENT:
            self.present += 1
        else:
            self.linked += 1
            self.linked_bytes += size

    def to_json(self) -> dict[str, object]:
        return {
            "linked": self.linked,
            "linked_bytes": self.linked_bytes,
            "present": self.present,
            "missing": len(self.missing),
            "seconds": round(self.seconds, 3),
        }


async def ensure_stored(
    fetcher: Fetcher,
    store: ContentStore,
    registry: str,
    repository: str,
    desc: Descriptor,
    client: ClientIdentity,
    settle_seconds: float = 10.0,
) -> str:
    """Bring one blob into the store through the fetcher's tiers; returns where it came from.

    Joins a transfer already running. Waits for the store's rename without reading the bytes
    where the fetcher can (:class:`StoringFetcher`); otherwise drains the stream.
    :class:`BlobIncomplete` if the blob does not end up whole in the store."""
    if store.has(desc.digest):
        return "local"
    result = await fetcher.get_blob(registry, repository, desc.digest, client)
    if result.size != desc.size:
        raise BlobIncomplete(
            f"blob {desc.digest} has {result.size} bytes, the manifest says {desc.size}"
        )
    if result.path is not None:
        return result.source
    if isinstance(fetcher, StoringFetcher):
        await fetcher.ensure_blob(registry, repository, desc.digest, client)
        return result.source
    if result.open_stream is None:
        raise BlobIncomplete(f"the fetcher returned neither a file nor a stream for {desc.digest}")
    received = 0
    async for chunk in result.open_stream(0):
        received += len(chunk)
    if received != desc.size:
        raise BlobIncomplete(
            f"blob {desc.digest}: stream ended after {received} of {desc.size} bytes"
        )
    deadline = time.monotonic() + settle_seconds
    while not store.has(desc.digest):  # the fetcher renames the verified file into place
        if time.monotonic() >= deadline:
            raise BlobIncomplete(f"blob {desc.digest} was streamed but is not in the store")
        await asyncio.sleep(0.02)
    return result.source


class ImageLinker:
    """Links an image's verified blobs into containerd's content store; prefetches the rest."""

    def __init__(
        self,
        linker: ContentLinker,
        store: ContentStore,
        fetcher: Fetcher,
        *,
        on_linked: Callable[[LinkOutcome, int], None] | None = None,
        concurrency: int = DEFAULT_PREFETCH_CONCURRENCY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.linker = linker
        self._store = store
        self._fetcher = fetcher
        self._on_linked = on_linked
        self._limit = asyncio.Semaphore(max(1, concurrency))
        self._clock = clock
        self._prefetches: dict[Digest, asyncio.Task[LinkOutcome]] = {}

    @property
    def content_dir(self) -> Path:
        return self.linker.content_dir

    async def link_stored(self, blobs: Sequence[Descriptor]) -> LinkReport:
        """Link every blob of ``blobs`` that the store holds verified; report the rest missing."""
        started = self._clock()
        report = LinkReport()
        for desc in _unique(blobs):
            await self._link_one(desc, report)
        report.seconds = self._clock() - started
        return report

    async def _link_one(self, desc: Descriptor, report: LinkReport) -> None:
        if self.linker.present(desc.digest, desc.size):
            report.add(LinkOutcome.PRESENT, desc.size)
            return
        try:
            path = await asyncio.to_thread(self._store.verified_path, desc.digest, desc.size)
        except StoreError as e:
            report.refused.append(f"{desc.digest.short}: {e}")
            return
        if path is None:
            report.missing.append(desc.digest)
            return
        try:
            outcome = await asyncio.to_thread(self.linker.link, desc.digest, path, desc.size)
        except LinkRefused as e:
            report.refused.append(f"{desc.digest.short}: {e}")
            report.missing.append(desc.digest)
            return
        except OSError as e:
            log.warning("cannot link %s into %s: %s", desc.digest, self.content_dir, e)
            report.refused.append(f"{desc.digest.short}: {e.strerror or e}")
            return
        report.add(outcome, desc.size)
        if self._on_linked is not None:
            self._on_linked(outcome, desc.size)

    async def prepare(
        self,
        registry: str,
        repository: str,
        manifest: ImageManifest,
        client: ClientIdentity,
        wait: float,
    ) -> LinkReport:
        """Link the image's stored blobs; fetch the missing ones (linking each as it lands) and
        wait for them up to ``wait`` seconds. The report counts the blobs fetched and linked
        within the wait too; those still arriving are ``missing``."""
        started = self._clock()
        blobs = _unique(manifest.blobs)
        report = await self.link_stored(blobs)
        if not report.missing:
            return report
        wanted = set(report.missing)
        pending = {
            desc: self._prefetch(registry, repository, desc, client)
            for desc in blobs
            if desc.digest in wanted
        }
        if wait > 0:
            await asyncio.wait(pending.values(), timeout=wait)
        report.missing = []
        for desc, task in pending.items():
            if _succeeded(task):
                report.add(task.result(), desc.size)
            else:
                report.missing.append(desc.digest)
        report.seconds = self._clock() - started
        return report

    def _prefetch(
        self, registry: str, repository: str, desc: Descriptor, client: ClientIdentity
    ) -> asyncio.Task[LinkOutcome]:
        task = self._prefetches.get(desc.digest)
        if task is None:
            task = asyncio.create_task(
                self._fetch_and_link(registry, repository, desc, client),
                name=f"warmstart-link-{desc.digest.short}",
            )
            self._prefetches[desc.digest] = task
            task.add_done_callback(self._prefetch_done)
        return task

    def _prefetch_done(self, task: asyncio.Task[LinkOutcome]) -> None:
        for digest, known in list(self._prefetches.items()):
            if known is task:
                del self._prefetches[digest]
        if not task.cancelled():
            task.exception()  # retrieved: logged where it happened

    async def _fetch_and_link(
        self, registry: str, repository: str, desc: Descriptor, client: ClientIdentity
    ) -> LinkOutcome:
        async with self._limit:
            try:
                await ensure_stored(self._fetcher, self._store, registry, repository, desc, client)
            except Exception as e:
                # containerd asks for this blob itself and gets the error then.
                log.warning("prefetch of %s for containerd failed: %s", desc.digest, e)
                raise
        report = LinkReport()
        await self._link_one(desc, report)
        if report.missing or report.refused:
            raise LinkRefused(f"{desc.digest} stored but not linked: {'; '.join(report.refused)}")
        return LinkOutcome.PRESENT if report.present else LinkOutcome.LINKED

    async def aclose(self) -> None:
        tasks = list(self._prefetches.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


def _succeeded(task: asyncio.Task[LinkOutcome]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


def _unique(blobs: Sequence[Descriptor]) -> list[Descriptor]:
    seen: dict[Digest, Descriptor] = {}
    for desc in blobs:
        seen.setdefault(desc.digest, desc)
    return list(seen.values())
