"""Running a plan (:mod:`warmstart.fetch.plan`): the sources its steps name, tried in order.

:meth:`PlanRunner.sources` turns steps into sources, one at a time and only when the previous
one failed (a probe asks its peers in parallel, and only once it is reached);
:meth:`PlanRunner.first` tries them in order until one answers. Stat, manifest and blob
requests all go through these two; a blob transfer keeps its :class:`Attempt`'s sources
across calls, so a source that fails mid-stream is replaced by the next one from the plan.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from warmstart.aio import cancel_all
from warmstart.errors import retry_after_of
from warmstart.fetch.interfaces import FetchError, NotFoundError, UnavailableError
from warmstart.fetch.metrics import FetchMetrics
from warmstart.fetch.peer_ring import PeerHealth
from warmstart.fetch.plan import HomePeer, NotHere, ProbePeers, Step
from warmstart.fetch.source import (
    BlobRequest,
    OpenedBlob,
    Source,
    SourceCorrupt,
    SourceError,
    SourceNotFound,
    SourceUnreachable,
)
from warmstart.oci import Digest

log = logging.getLogger(__name__)

T = TypeVar("T")


class Exhausted(Exception):
    """No source is left to try; what failed is in the :class:`Failures`."""


@dataclass
class Failures:
    entries: list[tuple[Source, SourceError]] = field(default_factory=list)

    def add(self, source: Source, error: SourceError) -> None:
        self.entries.append((source, error))

    def error(self, what: str) -> FetchError:
        """Not found if the upstream said so (or everybody did), else unavailable."""
        summary = "; ".join(f"{s.name}: {e}" for s, e in self.entries[-4:])
        upstream_missing = any(
            s.kind == "upstream" and isinstance(e, SourceNotFound) for s, e in self.entries
        )
        if upstream_missing or all(isinstance(e, SourceNotFound) for _, e in self.entries):
            return NotFoundError(f"{what} not found" + (f" ({summary})" if summary else ""))
        return UnavailableError(
            f"{what}: every source failed ({summary})",
            retry_after=retry_after_of(*(e for _, e in self.entries)),
        )


@dataclass(eq=False)
class Transfer:
    registry: str
    repository: str
    digest: Digest
    known_size: int | None
    from_peer: bool
    ready: asyncio.Future[tuple[int, str]]  # (size, source kind) once a source answered
    started: float  # on the fetcher's clock
    attempt_open: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    abandoned: asyncio.Event = field(default_factory=asyncio.Event)  # set: this attempt is bad
    generation: int = 0  # bumped when an attempt turned out corrupt
    error: FetchError | None = None
    size: int | None = None
    source_kind: str | None = None
    source_name: str | None = None


@dataclass(eq=False)
class PlanRunner:
    """The sources of a plan's steps: the upstream, ``peer_source(url)`` for peers (None: no
    peers); a failed source is reported to ``health`` (unreachable peers) and ``metrics``."""

    upstream: Source
    peer_source: Callable[[str], Source] | None
    health: PeerHealth
    metrics: FetchMetrics

    def peer(self, url: str) -> Source | None:
        return self.peer_source(url) if self.peer_source is not None else None

    async def sources(
        self,
        steps: Iterable[Step],
        what: str,
        registry: str,
        repository: str,
        digest: Digest,
        known_size: int | None = None,
    ) -> AsyncGenerator[Source, None]:
        """The sources to try, best first, each decided when the one before it failed."""
        for step in steps:
            if isinstance(step, NotHere):
                raise NotFoundError(f"{what} is not on this node")
            if isinstance(step, HomePeer):
                peer = self.peer(step.url)
                if peer is not None:
                    yield peer
            elif isinstance(step, ProbePeers):
                # Leave out peers marked down since the plan was made (by a failure before).
                urls = [u for u in step.urls if not self.health.is_down(u)]
                peers = [p for p in map(self.peer, urls) if p is not None]
                if peers:
                    holder = await self._probe(peers, registry, repository, digest, known_size)
                    if holder is not None:
                        yield holder
            else:
                yield self.upstream

    async def first(
        self,
        sources: AsyncIterator[Source],
        call: Callable[[Source], Awaitable[T]],
        registry: str,
        failures: Failures,
        failed: set[str] | None = None,
    ) -> tuple[Source, T]:
        """The first of ``sources`` whose ``call`` answers, and its answer; each that fails is
        added to ``failures`` (and its name to ``failed``). Raises :class:`Exhausted`."""
        async for source in sources:
            try:
                return source, await call(source)
            except SourceError as e:
                self.failed(source, e, registry, failures)
                if failed is not None:
                    failed.add(source.name)
        raise Exhausted()

    async def run(
        self,
        steps: Iterable[Step],
        what: str,
        registry: str,
        repository: str,
        digest: Digest,
        call: Callable[[Source], Awaitable[T]],
    ) -> tuple[Source, T]:
        """The first answer of the plan's sources; a :class:`FetchError` when none answers."""
        failures = Failures()
        sources = self.sources(steps, what, registry, repository, digest)
        try:
            return await self.first(sources, call, registry, failures)
        except Exhausted:
            raise failures.error(what) from None
        finally:
            await sources.aclose()

    async def _probe(
        self,
        peers: list[Source],
        registry: str,
        repository: str,
        digest: Digest,
        known_size: int | None,
    ) -> Source | None:
        """Ask peers in parallel whether they hold the blob; the first to say yes wins."""
        tasks = {asyncio.create_task(p.stat_blob(registry, repository, digest)): p for p in peers}
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    peer = tasks[task]
                    error = task.exception()
                    if error is None:
                        if known_size is None or task.result() == known_size:
                            return peer
                    elif isinstance(error, SourceError):
                        self.failed(peer, error, registry)
                    else:
                        log.warning("probing %s failed: %r", peer.name, error)
            return None
        finally:
            await cancel_all(tasks)

    def failed(
        self, source: Source, error: SourceError, registry: str, failures: Failures | None = None
    ) -> None:
        if failures is not None:
            failures.add(source, error)
        if source.kind == "peer":
            if isinstance(error, SourceUnreachable):
                self.health.mark_down(source.name)
            if not isinstance(error, SourceNotFound):
                self.metrics.peer_error(error.kind)
                log.info("peer %s: %s", source.name, error)
        elif source.kind == "upstream":
            self.metrics.upstream_error(registry, error.kind)
            if not isinstance(error, SourceNotFound):
                log.info("upstream %s: %s", registry, error)


class Attempt:
    """One pass over a plan's sources for a transfer; the store calls :meth:`blob_source`."""

    def __init__(
        self, runner: PlanRunner, t: Transfer, steps: Iterable[Step], failures: Failures
    ) -> None:
        self._runner = runner
        self._t = t
        self._failures = failures
        self._sources = runner.sources(
            steps, f"blob {t.digest}", t.registry, t.repository, t.digest, t.known_size
        )
        self._first: OpenedBlob | None = None
        self._first_at = 0
        self.source: Source | None = None
        self.contributors: set[str] = set()
        self._resumed: set[str] = set()
        self._failed: set[str] = set()  # sources that failed in this attempt

    async def open_first(self, offset: int = 0) -> tuple[Source, OpenedBlob]:
        """Open the best source from ``offset`` (where the store will resume a partial file
        a previous agent left; the store asks for another offset if it decides otherwise)."""
        self._first = await self._open_next(offset)
        self._first_at = offset
        assert self.source is not None
        return self.source, self._first

    async def _open_next(self, offset: int) -> OpenedBlob:
        t = self._t
        size = t.size if t.size is not None else t.known_size

        async def open_blob(source: Source) -> OpenedBlob:
            return await source.open_blob(
                BlobRequest(t.registry, t.repository, t.digest, offset, size)
            )

        self.source, blob = await self._runner.first(
            self._sources, open_blob, t.registry, self._failures, self._failed
        )
        return blob

    def blob_source(self, offset: int) -> AsyncIterator[bytes]:
        return self._pump(offset)

    async def _pump(self, offset: int) -> AsyncIterator[bytes]:
        """The blob from ``offset``; when a source fails mid-stream, it is asked once more
        from where it stopped (if it had made progress), then the next source is."""
        pos = offset
        metrics = self._runner.metrics
        resume: Source | None = None
        while True:
            if self._first is not None and pos == self._first_at:
                blob = self._first
                self._first = None
            else:
                if self._first is not None:
                    await self._first.aclose()
                    self._first = None
                reopened = None
                if resume is not None:
                    reopened = await self._reopen(resume, pos)
                elif self.source is not None and self.source.name not in self._failed:
                    # The store asks from another offset than the last answer's (it resumes a
                    # partial file, or dropped one that did not verify): that source did not
                    # fail, so ask it again.
                    reopened = await self._reopen(self.source, pos, once=False)
                blob = reopened if reopened is not None else await self._open_next(pos)
            source = self.source
            assert source is not None
            began = pos
            try:
                async for chunk in blob.chunks:
                    if chunk:
                        self.contributors.add(source.name)
                        pos += len(chunk)
                        metrics.fetched(source.kind, len(chunk))
                    yield chunk
                return
            except SourceError as e:
                self._runner.failed(source, e, self._t.registry, self._failures)
                self._failed.add(source.name)
                log.info("blob %s: %s failed at byte %d: %s", self._t.digest, source.name, pos, e)
                progressed = pos > began and source.name not in self._resumed
                resume = source if progressed and not isinstance(e, SourceCorrupt) else None
            finally:
                await blob.aclose()

    async def _reopen(self, source: Source, offset: int, *, once: bool = True) -> OpenedBlob | None:
        """Ask ``source`` again from ``offset`` (``once``: once per source after a failure);
        None if that fails too."""
        if once:
            self._resumed.add(source.name)
        t = self._t
        try:
            blob = await source.open_blob(
                BlobRequest(t.registry, t.repository, t.digest, offset, t.size)
            )
        except SourceError as e:
            self._runner.failed(source, e, t.registry, self._failures)
            self._failed.add(source.name)
            return None
        self.source = source
        return blob

    async def aclose(self) -> None:
        if self._first is not None:
            await self._first.aclose()
            self._first = None
        await self._sources.aclose()


__all__ = ["Attempt", "Exhausted", "Failures", "PlanRunner", "Transfer"]
