"""A blob fetched as pieces from many nodes at once (see :mod:`warmstart.fetch.pieces`).

:class:`Swarm` is the fetcher's piece side: its :class:`~warmstart.fetch.piece_book.PieceBook`
(the trackers of the blobs this node takes part in, the pieces it has uploaded) and
:meth:`Swarm.run`, one piece transfer:

* Not the digest's home: ask the home's tracker first (``POST /pieces/<digest>``). No answer,
  or a piece size of its own: the whole-blob path, as before. Otherwise write the blob as
  pieces (``ContentStore.fetch_pieces``): a poller long-polls the tracker for hashes and
  holders, each verified piece is announced, and the planner (rarest first, least-served
  holder, one piece per peer at a time, at most ``piece_downloads`` at once) says which piece
  to fetch from whom, as a ``Range`` GET of the blob route with ``X-Warmstart-Piece``.
* The home (or the node that now stands in for a home that died): it *fills* the pieces no
  live node holds, from its plan's sources (probed peers that hold the whole blob, then the
  upstream) as one streamed request per run of such pieces, hashing each piece as it arrives
  and publishing its hash; and it fetches from holders what they have, like anyone.

A piece that does not match its hash is refused (its bytes are never served nor counted) and
its sender is not asked for that blob again. A peer that fails mid-piece costs that piece; an
unreachable one is reported ``gone`` to the tracker and skipped. When the home dies the next
node in the digest's rendezvous order answers with the list and holders it learned, and fills
from the upstream only what no live node holds. A non-home node whose wanted pieces have no
usable holder for ``stall`` seconds asks the upstream for those pieces itself (checked against
their published hashes); when no tracker has answered for twice that long (the node standing
in for a dead home keeps no list), also for pieces nobody published a hash of (checked with the
whole blob's digest, as every piece is at the end).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from warmstart.aio import cancel_all
from warmstart.fetch.metrics import FetchMetrics
from warmstart.fetch.peer_ring import PeerRing
from warmstart.fetch.piece_book import PieceBook
from warmstart.fetch.pieces import Holder, orphans, plan_pieces, runs
from warmstart.fetch.plan import Step
from warmstart.fetch.run import Attempt, Exhausted, Failures, PlanRunner, Transfer
from warmstart.fetch.source import (
    SourceBusy,
    SourceCorrupt,
    SourceError,
    SourceNotFound,
    SourceUnreachable,
    aclose_quietly,
)
from warmstart.fetch.tracker import PiecesAnswer, PiecesInvalid, Tracker
from warmstart.oci import Digest
from warmstart.store import ContentStore
from warmstart.store.piece_geometry import Pieces
from warmstart.store.pieces import PieceCorrupt, PieceFile, PieceShort

log = logging.getLogger(__name__)

POLL_WAIT = 1.0  # a tracker holds a poll this long when nothing changed
TICK = 0.25  # the run loop looks again at least this often
STALL = 2.0  # a wanted piece with no usable holder this long: ask the upstream for it
MAX_FILL_ROUNDS = 4  # fills from the plan's sources that may fail before the transfer does


@runtime_checkable
class PieceSource(Protocol):
    """What a peer is for the swarm (``warmstart.fetch.peer_source.PeerSource``)."""

    name: str
    kind: str

    async def open_piece(
        self, registry: str, repository: str, digest: Digest, start: int, end: int
    ) -> Any: ...

    async def tracker(
        self, registry: str, digest: Digest, body: dict[str, Any], wait: float
    ) -> Any: ...


class PiecesDeclined(Exception):
    """This blob does not travel as pieces now (the home has no tracker for it, or another
    piece size): the whole-blob path takes it."""


@dataclass(frozen=True)
class SwarmSettings:
    downloads: int = 4  # pieces fetched at once
    per_peer: int = 1  # pieces fetched at once from one peer
    poll_wait: float = POLL_WAIT
    stall: float = STALL


@dataclass(eq=False)
class Swarm:
    """The piece transfers of one node: its :class:`PieceBook` (trackers, upload counts) and
    the runs."""

    book: PieceBook
    runner: PlanRunner
    metrics: FetchMetrics
    settings: SwarmSettings = field(default_factory=SwarmSettings)

    @property
    def store(self) -> ContentStore:
        return self.book.store

    @property
    def ring(self) -> PeerRing:
        return self.book.ring

    @property
    def clock(self) -> Callable[[], float]:
        return self.book.clock

    # -- one transfer ------------------------------------------------------------------

    async def run(
        self,
        t: Transfer,
        pieces: Pieces,
        fill_steps: Callable[[], tuple[Step, ...]],
        peer: Callable[[str], PieceSource | None],
        on_open: Callable[[str, str], None],
    ) -> None:
        """Fetch ``t``'s blob as ``pieces`` into the store. ``fill_steps()``: where this node
        fills pieces nobody holds from (as the home); ``peer(url)``: a peer; ``on_open(kind,
        name)``: called once the transfer is under way. Raises :class:`PiecesDeclined` before
        anything is written if the home does not take part."""
        digest = t.digest
        me = self.ring.self_url
        home = self.ring.home(digest)
        tracker = self.book.tracker(digest, pieces)
        if home != me:
            source = peer(home)
            if source is None:
                raise PiecesDeclined("no peers")
            try:
                raw = await source.tracker(
                    t.registry, digest, self.book.request(t, pieces, tracker, 0.0).to_json(), 0.0
                )
                answer = PiecesAnswer.parse(raw)
            except SourceError as e:
                self.runner.failed(source, e, t.registry)  # type: ignore[arg-type]
                raise PiecesDeclined(f"home {home}: {e}") from None
            except PiecesInvalid as e:
                raise PiecesDeclined(f"home {home}: {e}") from None
            if answer.pieces != pieces:
                raise PiecesDeclined(f"home {home} cuts the blob into {answer.pieces}")
            tracker.learn_hashes(answer.hashes)
            tracker.learn_holders(answer.holders, me)
        job = _Run(self, t, pieces, tracker, fill_steps, peer)

        async def write(pf: PieceFile) -> None:
            on_open("upstream" if home == me else "peer", home if home != me else "upstream")
            await job.run(pf)

        await self.store.fetch_pieces(digest, pieces, write)


@dataclass(eq=False)
class _Run:
    """The state of one piece transfer while its pieces arrive."""

    swarm: Swarm
    t: Transfer
    pieces: Pieces
    tracker: Tracker
    fill_steps: Callable[[], tuple[Step, ...]]
    peer: Callable[[str], PieceSource | None]
    pf: PieceFile = field(init=False)
    in_flight: set[int] = field(default_factory=set)
    _filling: set[int] = field(default_factory=set)  # in flight from the filler
    loads: dict[str, int] = field(default_factory=dict)
    excluded: set[str] = field(default_factory=set)  # sent a bad piece of this blob
    busy_until: dict[str, float] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)  # unreachable: to tell the tracker
    looked_at: set[int] = field(default_factory=set)  # pieces of a dead writer's file tried
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    filler: asyncio.Task[None] | None = None
    fill_failures: int = 0
    stalled_since: float | None = None
    answered_at: float = 0.0  # when a tracker last answered (or the run began)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    failures: Failures = field(default_factory=Failures)
    error: BaseException | None = None

    @property
    def me(self) -> str:
        return self.swarm.ring.self_url

    @property
    def digest(self) -> Digest:
        return self.t.digest

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"warmstart-{name}-{self.digest.short}")
        self.tasks.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self.tasks.discard(task)
            if not task.cancelled() and task.exception() is not None and self.error is None:
                self.error = task.exception()
            self.wake.set()

        task.add_done_callback(done)
        return task

    async def run(self, pf: PieceFile) -> None:
        self.pf = pf
        self.answered_at = self.swarm.clock()
        await self._adopt()
        poller: asyncio.Task[None] | None = None
        announcer: asyncio.Task[None] | None = None
        home_seen: str | None = None
        try:
            while not pf.complete:
                if self.error is not None:
                    raise self.error
                self.wake.clear()
                home = self.swarm.ring.home(self.digest)
                if home != home_seen:
                    await cancel_all([t for t in (poller, announcer) if t is not None])
                    poller = announcer = None
                    if home != self.me:
                        poller = self._spawn(self._poll(home), "poll")
                        announcer = self._spawn(self._announce(home), "announce")
                    home_seen = home
                await self._adopt()
                self._plan(home == self.me)
                if pf.complete:
                    break
                await self._sleep()
            self.dirty.set()
        finally:
            await cancel_all(list(self.tasks))
        await self._last_word()

    async def _sleep(self) -> None:
        try:
            async with asyncio.timeout(TICK):
                await self.wake.wait()
        except TimeoutError:
            pass

    async def _adopt(self) -> None:
        """Pieces a dead writer left whose hash is known now and that still verify."""
        pf = self.pf
        if not pf.adoptable:
            return
        for i, h in enumerate(self.tracker.hashes):
            if h is None or i in self.looked_at or i in pf.have or i in self.in_flight:
                continue
            self.looked_at.add(i)  # each piece once: what did not verify is fetched
            if await pf.adopt(i, h):
                self.tracker.poke()
                self.dirty.set()
        if all(h is not None for h in self.tracker.hashes):
            pf.adoptable = 0  # every piece was looked at once

    # -- deciding ----------------------------------------------------------------------

    def _holders(self) -> dict[str, Holder]:
        health = self.swarm.book.health
        return {
            url: h
            for url, h in self.tracker.holders.items()
            if url != self.me and url not in self.gone and not health.is_down(url)
        }

    def _plan(self, is_home: bool) -> None:
        now = self.swarm.clock()
        holders = self._holders()
        unusable = {u for u, until in self.busy_until.items() if until > now}
        settings = self.swarm.settings
        plan = plan_pieces(
            count=self.pieces.count,
            hashed=self.tracker.hashed,
            have=self.pf.have,
            in_flight=self.in_flight,
            holders=holders,
            me=self.me,
            slots=settings.downloads - len(self.in_flight - self._filling),
            loads=self.loads,
            per_peer=settings.per_peer,
            excluded=self.excluded,
            unusable=unusable,
        )
        for fetch in plan.fetches:
            self._fetch(fetch.piece, fetch.peer)
        if self.filler is not None:
            return
        usable = {u: h for u, h in holders.items() if u not in self.excluded}
        if is_home:
            missing = orphans(
                count=self.pieces.count,
                have=self.pf.have,
                in_flight=self.in_flight,
                holders=usable,
            )
            if missing:
                self._fill(runs(missing)[0])
            return
        # Pieces nobody this node can use holds; and, once no tracker has answered for a
        # while (the home died and the node in its place keeps no list), pieces without a
        # hash: asked of the upstream by this node itself after ``stall`` seconds idle.
        silent = now - self.answered_at >= 2 * settings.stall
        lost = sorted(set(plan.stranded) | (set(plan.unhashed) if silent else set()))
        if lost and not self.in_flight:
            if self.stalled_since is None:
                self.stalled_since = now
            elif now - self.stalled_since >= settings.stall:
                # Stays stalled: the next run is asked for as soon as this one is in.
                first, end = runs(lost)[0]
                log.info(
                    "blob %s: no node this node can use holds pieces %d-%d: asking the upstream",
                    self.digest,
                    first,
                    end - 1,
                )
                self._fill((first, end))
        else:
            self.stalled_since = None

    # -- fetching pieces from peers -----------------------------------------------------

    def _fetch(self, index: int, url: str) -> None:
        source = self.peer(url)
        if source is None:
            return
        self.in_flight.add(index)
        self.loads[url] = self.loads.get(url, 0) + 1
        self._spawn(self._fetch_one(index, source), "piece")

    async def _fetch_one(self, index: int, source: PieceSource) -> None:
        url = source.name
        t = self.t
        start, end = self.pieces.span(index)
        expected = self.tracker.hashes[index]
        try:
            sink = self.pf.sink(index, expected)
            stream = await source.open_piece(t.registry, t.repository, t.digest, start, end)
            try:
                async for chunk in stream:
                    await sink.write(chunk)
                    self.swarm.metrics.fetched("peer", len(chunk))
            finally:
                await aclose_quietly(stream)
            sink.close()
            await self.pf.verified(index)
        except PieceCorrupt as e:
            log.warning("blob %s: %s; %s is not asked for this blob again", t.digest, e, url)
            self.excluded.add(url)
            self.swarm.runner.failed(source, SourceCorrupt(str(e)), t.registry)  # type: ignore[arg-type]
        except PieceShort as e:
            self.swarm.runner.failed(source, SourceCorrupt(str(e)), t.registry)  # type: ignore[arg-type]
            self.excluded.add(url)
        except SourceBusy as e:
            self.busy_until[url] = self.swarm.clock() + e.retry_after
        except SourceNotFound:
            self.tracker.drop_piece(url, index)  # it no longer holds it (restarted, evicted)
        except SourceUnreachable as e:
            self.swarm.runner.failed(source, e, t.registry)  # type: ignore[arg-type]
            self.gone.add(url)
            self.dirty.set()
        except SourceError as e:
            # Died mid-piece, stalled: this piece only; it is asked again (maybe of another).
            self.swarm.runner.failed(source, e, t.registry)  # type: ignore[arg-type]
            self.busy_until[url] = self.swarm.clock() + 1.0
        else:
            self.tracker.poke()
            self.dirty.set()
        finally:
            self.in_flight.discard(index)
            self.loads[url] = max(0, self.loads.get(url, 1) - 1)

    # -- filling from the plan's sources (the upstream) ----------------------------------

    def _fill(self, run: tuple[int, int]) -> None:
        first, end = run
        members = set(range(first, end))
        self.in_flight |= members
        self._filling |= members
        self.filler = self._spawn(self._fill_run(first, end), "fill")

    async def _fill_run(self, first: int, end: int) -> None:
        t = self.t
        offset = self.pieces.span(first)[0]
        attempt = Attempt(self.swarm.runner, t, self.fill_steps(), self.failures)
        index = first
        try:
            try:
                await attempt.open_first(offset)
            except Exhausted:
                what = f"blob {t.digest} of {t.registry}/{t.repository}"
                raise self.failures.error(what) from None
            chunks = attempt.blob_source(offset)
            sink = self.pf.sink(index, self.tracker.hashes[index])
            try:
                async for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        take = min(len(view), sink.remaining)
                        await sink.write(bytes(view[:take]))
                        view = view[take:]
                        if sink.remaining:
                            continue
                        hex_ = sink.close()
                        await self.pf.verified(index)
                        self.tracker.set_hash(index, hex_)
                        self.tracker.poke()
                        self.dirty.set()
                        self.wake.set()
                        self.in_flight.discard(index)
                        self._filling.discard(index)
                        index += 1
                        if index >= end:
                            return
                        sink = self.pf.sink(index, self.tracker.hashes[index])
            finally:
                await aclose_quietly(chunks)
            raise SourceCorrupt(f"blob {t.digest}: the source ended at piece {index}")
        except (PieceCorrupt, PieceShort, SourceError) as e:
            # The source's bytes do not match a published hash (or it failed past what the
            # attempt could resume): leave the pieces for the next fill, from the next source.
            self.fill_failures += 1
            log.warning("blob %s: filling pieces %d-%d failed: %s", t.digest, index, end, e)
            if self.fill_failures >= MAX_FILL_ROUNDS:
                raise
        finally:
            await attempt.aclose()
            for i in range(first, end):
                self.in_flight.discard(i)
                self._filling.discard(i)
            self.filler = None

    # -- talking to the tracker ----------------------------------------------------------

    async def _poll(self, home: str) -> None:
        source = self.peer(home)
        if source is None:
            return
        version = -1
        while True:
            wait = self.swarm.settings.poll_wait
            told = set(self.gone)
            request = self.swarm.book.request(
                self.t, self.pieces, self.tracker, wait, gone=told, version=version
            )
            try:
                raw = await source.tracker(self.t.registry, self.digest, request.to_json(), wait)
                answer = PiecesAnswer.parse(raw)
                self.gone -= told  # told once; health skips them meanwhile
            except (SourceError, PiecesInvalid) as e:
                if isinstance(e, SourceUnreachable):
                    self.swarm.runner.failed(source, e, self.t.registry)  # type: ignore[arg-type]
                    self.wake.set()  # the home is down: the next one takes its place
                    return
                log.info("blob %s: tracker %s: %s", self.digest, home, e)
                await asyncio.sleep(self.swarm.settings.poll_wait)
                continue
            if answer.pieces != self.pieces:
                log.warning("blob %s: tracker %s changed its pieces; ignored", self.digest, home)
                await asyncio.sleep(self.swarm.settings.poll_wait)
                continue
            version = answer.version
            self.answered_at = self.swarm.clock()
            self.tracker.learn_hashes(answer.hashes)
            self.tracker.learn_holders(answer.holders, self.me)
            self.wake.set()

    async def _announce(self, home: str) -> None:
        source = self.peer(home)
        if source is None:
            return
        while True:
            await self.dirty.wait()
            self.dirty.clear()
            told = set(self.gone)
            request = self.swarm.book.request(self.t, self.pieces, self.tracker, 0.0, gone=told)
            try:
                await source.tracker(self.t.registry, self.digest, request.to_json(), 0.0)
                self.gone -= told
            except SourceError as e:
                log.debug("blob %s: announcing to %s: %s", self.digest, home, e)

    async def _last_word(self) -> None:
        """Tell the tracker this node holds everything now (best effort)."""
        home = self.swarm.ring.home(self.digest)
        if home == self.me:
            self.tracker.poke()
            return
        source = self.peer(home)
        if source is None:
            return
        request = self.swarm.book.request(self.t, self.pieces, self.tracker, 0.0, gone=self.gone)
        try:
            async with asyncio.timeout(2.0):
                await source.tracker(self.t.registry, self.digest, request.to_json(), 0.0)
        except (SourceError, TimeoutError) as e:
            log.debug("blob %s: last announce to %s: %s", self.digest, home, e)


__all__ = ["PieceSource", "PiecesDeclined", "Swarm", "SwarmSettings"]
