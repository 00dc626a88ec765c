"""The tiered fetcher: local store, then the digest's home peer, then peers that hold the
blob, then the upstream registry — once per cluster.

Blobs
    A local hit is served from its file. On a miss one *transfer* per digest runs in the
    background and writes through :meth:`ContentStore.fetch` (verified against the digest while
    written; nothing bad is kept). Clients stream from the store while it is written
    (``open_stream`` follows the temp file), so a second client joins a transfer in progress.

    Where a transfer reads from, best first (:mod:`warmstart.fetch.plan`; run by
    :mod:`warmstart.fetch.run`):

    * this node is not the digest's home: the home peer (which fetches upstream once for the
      whole cluster and streams while it does), then up to ``max_peer_probes`` other peers
      asked in parallel with HEAD (the first 200 wins), then the upstream;
    * this node is the home: the probed peers (a node that just joined is home to digests the
      previous home still holds), then the upstream;
    * the request came from a peer: the upstream only, and only if this node is the home (a
      peer request is never forwarded to another peer: no loops).

    A source that fails mid-stream is replaced by the next one from the same offset. One that
    sent corrupt bytes is dropped and the transfer starts again without it; clients that were
    streaming the corrupt attempt get an error (they retry and get the good copy).

    A blob of known size of at least ``piece_threshold`` bytes, in a cluster of three nodes or
    more, is fetched as pieces instead (:mod:`warmstart.fetch.swarm`): from the home's tracker
    and several holders at once, or, on the home, from the plan above for the pieces no node
    holds. If the home does not take part (no tracker, another piece size) the transfer falls
    back to the whole-blob path before anything is written. Clients stream it the same way:
    ``open_reader`` follows the verified prefix of the piece file in order.
    :meth:`TieredFetcher.pieces_request` is the tracker route's side and
    :meth:`TieredFetcher.get_piece` serves verified pieces to peers.

Manifests
    By digest: local store, home peer, upstream (verified). By tag: a tag cache with a TTL,
    then the upstream; when the upstream fails, the tag as this node or a peer last saw it
    (:mod:`warmstart.fetch.tags`).

Access
    See :mod:`warmstart.fetch.access`. Peer requests skip the per-client check only with the
    right peer token; without a configured token they are checked like anonymous clients.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from warmstart.aio import cancel_all
from warmstart.fetch.access import AccessControl, peer_token_ok
from warmstart.fetch.api import (
    BlobResult,
    ClientIdentity,
    ConflictError,
    DeniedError,
    FetchError,
    ManifestResult,
    NotFoundError,
    PieceBusyError,
    UnauthorizedError,
    UnavailableError,
)
from warmstart.fetch.cache import LRUMap, TTLCache
from warmstart.fetch.config import FetcherConfig
from warmstart.fetch.images import ImageTracker, PendingImage
from warmstart.fetch.local import LocalSource
from warmstart.fetch.metrics import FetchMetrics, NullMetrics
from warmstart.fetch.peer_ring import PeerHealth, PeerList, PeerRing, PeerView
from warmstart.fetch.pieces import piece_size_for, use_pieces
from warmstart.fetch.plan import NotHere, Step, What, plan_sources
from warmstart.fetch.run import Attempt, Exhausted, Failures, PlanRunner, Transfer
from warmstart.fetch.source import (
    AccessChecker,
    Probe,
    Source,
    SourceCorrupt,
    SourceError,
    SourceManifest,
    SourceNotManifest,
    aclose_quietly,
)
from warmstart.fetch.swarm import PiecesDeclined, PieceSource, Swarm, SwarmSettings
from warmstart.fetch.tags import TagResolver
from warmstart.fetch.tracker import PiecesInvalid, PiecesRequest
from warmstart.oci import (
    MAX_MANIFEST_BYTES,
    Digest,
    ImageIndex,
    ImageManifest,
    OCIError,
    is_digest,
    parse_manifest,
)
from warmstart.oci import mediatypes as mt
from warmstart.registry.endpoints import canonical_registry
from warmstart.store import ContentStore, StoreDigestMismatch, StoreError, StoreSizeMismatch
from warmstart.store.piece_geometry import Pieces
from warmstart.store.singleflight import Flight, SingleFlight

log = logging.getLogger(__name__)

MAX_ROUNDS = 4  # transfer restarts after corrupt sources (each drops at least one source)


@dataclass(frozen=True)
class TransferStatus:
    digest: str
    registry: str
    repository: str
    source: str | None  # the peer URL or "upstream"; None while choosing
    size: int | None
    seconds: float


@dataclass(frozen=True)
class FetcherStatus:
    node_id: str
    self_url: str
    peers: tuple[str, ...]
    peers_down: tuple[str, ...]
    transfers: tuple[TransferStatus, ...]


def _retrieve(fut: asyncio.Future[tuple[int, str]]) -> None:
    if not fut.cancelled():
        fut.exception()  # nobody may be waiting: mark the error as seen


class TieredFetcher:
    """Implements :class:`warmstart.fetch.api.Fetcher` over a store, an upstream and peers.

    ``upstream`` is a :class:`Source` that is also an :class:`AccessChecker` (or pass
    ``access``); ``peer_source(url)`` gives the Source of one peer (None: no peers);
    ``peers`` is the live peer list (the agent's ``PeerSet``); ``on_close`` callbacks run in
    :meth:`aclose` (to close clients the fetcher was built with).
    """

    def __init__(
        self,
        store: ContentStore,
        config: FetcherConfig,
        upstream: Source,
        *,
        peers: PeerView | None = None,
        peer_source: Callable[[str], Source] | None = None,
        access: AccessChecker | None = None,
        metrics: FetchMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_close: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        checker = access if access is not None else upstream
        if not isinstance(checker, AccessChecker):
            raise TypeError("upstream is no AccessChecker: pass access=")
        self.config = config
        self._store = store
        self._upstream = upstream
        self._clock = clock
        self.peers: PeerView = peers if peers is not None else PeerList(config.self_url)
        self.health = PeerHealth(config.peer_retry_after, clock)
        self.ring = PeerRing(self.peers, config.self_url, self.health)
        self.access = AccessControl(
            checker,
            shared=config.shared,
            privacy_ttl=config.privacy_ttl,
            grant_ttl=config.grant_ttl,
            denial_ttl=config.denial_ttl,
            clock=clock,
        )
        self._metrics: FetchMetrics = metrics if metrics is not None else NullMetrics()
        self._runner = PlanRunner(upstream, peer_source, self.health, self._metrics)
        self.swarm = Swarm(
            store,
            self.ring,
            self.health,
            self._runner,
            self._metrics,
            settings=SwarmSettings(downloads=config.piece_downloads),
            clock=clock,
        )
        self._local = LocalSource(store)
        self._sizes: LRUMap[Digest, int] = LRUMap(config.max_known_sizes)
        self._images = ImageTracker()
        self._transfers: dict[Digest, Transfer] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._manifest_flights: SingleFlight[tuple[object, ...], ManifestResult] = SingleFlight()
        self._tags = TagResolver(
            store,
            upstream,
            self._runner,
            self.peers,
            self.health,
            TTLCache(config.tag_ttl, keep_stale=config.tag_keep_stale, clock=clock),
            self._manifest_flights,
            keep=self._keep_manifest,
            serve=self._served,
        )
        self._on_close = list(on_close)
        self._closed = False
        # For the agent's own work (pre-warm authorised by the peer token): skips the
        # per-client check. Recognised by identity, so no request can pass for it.
        self.agent_identity = ClientIdentity()

    # -- Fetcher protocol ------------------------------------------------------------------

    async def get_manifest(
        self,
        registry: str,
        repository: str,
        reference: str,
        accept: Sequence[str],
        client: ClientIdentity,
    ) -> ManifestResult:
        registry = self._registry(registry)
        await self._admit(registry, repository, client, Probe("manifest", reference))
        wanted = mt.manifest_accept(tuple(accept))
        if is_digest(reference):
            digest = Digest.parse(reference)
            return await self._manifest_by_digest(
                registry, repository, digest, wanted, from_peer=client.peer is not None
            )
        return await self._tags.manifest(
            registry, repository, reference, wanted, from_peer=client.peer is not None
        )

    async def get_blob(
        self, registry: str, repository: str, digest: Digest, client: ClientIdentity
    ) -> BlobResult:
        registry = self._registry(registry)
        await self._admit(registry, repository, client, Probe("blob", str(digest)))
        result, _ = await self._blob(
            registry, repository, digest, from_peer=client.peer is not None
        )
        return result

    async def stat_blob(
        self, registry: str, repository: str, digest: Digest, client: ClientIdentity
    ) -> int:
        registry = self._registry(registry)
        await self._admit(registry, repository, client, Probe("blob", str(digest)))
        from_peer = client.peer is not None
        local = self._local_blob(digest)
        if local is not None:
            return local.size
        home = self.ring.is_home(digest)
        t = self._transfers.get(digest)
        # A peer asking a non-home node is probing for holders: a transfer that may itself read
        # from a peer does not count (it could read from the asker).
        if t is not None and (not from_peer or home or t.source_kind == "upstream"):
            size, _ = await asyncio.shield(t.ready)
            return size
        if not from_peer:
            known = self._sizes.get(digest)
            if known is not None:
                return known
        steps = self._steps("stat", digest, from_peer=from_peer)
        _, size = await self._runner.run(
            steps,
            f"blob {digest}",
            registry,
            repository,
            digest,
            lambda source: source.stat_blob(registry, repository, digest),
        )
        self._sizes.put(digest, size)
        return size

    # -- more for the agent ----------------------------------------------------------------

    async def ensure_blob(
        self,
        registry: str,
        repository: str,
        digest: Digest,
        client: ClientIdentity | None = None,
    ) -> Path:
        """Fetch the blob into the store through the tiers (pre-warming) and return its path."""
        client = client or ClientIdentity()
        registry = self._registry(registry)
        await self._admit(registry, repository, client, Probe("blob", str(digest)))
        result, t = await self._blob(
            registry, repository, digest, from_peer=client.peer is not None
        )
        if result.path is not None:
            return result.path
        assert t is not None
        await t.finished.wait()
        local = self._local_blob(digest)
        if local is None or local.path is None:
            raise t.error or UnavailableError(f"blob {digest} vanished from the store")
        return local.path

    def remember_size(self, digest: Digest, size: int) -> None:
        """Tell the fetcher a blob's size (from a manifest read elsewhere, e.g. pre-warm)."""
        self._sizes.put(digest, size)

    def status(self) -> FetcherStatus:
        now = self._clock()
        transfers = tuple(
            TransferStatus(
                str(t.digest), t.registry, t.repository, t.source_name, t.size, now - t.started
            )
            for t in self._transfers.values()
        )
        return FetcherStatus(
            self.config.node_id,
            self.ring.self_url,
            tuple(self.peers.others()),
            tuple(self.health.down()),
            transfers,
        )

    async def wait_idle(self) -> None:
        """Wait until the transfers running now (and any they make way for) have ended."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await cancel_all(self._tasks)
        for close in self._on_close:
            try:
                await close()
            except Exception:
                log.exception("closing a fetcher client failed")

    # -- admission -------------------------------------------------------------------------

    def _registry(self, registry: str) -> str:
        name = canonical_registry(registry)
        if name not in self.config.registries:
            raise DeniedError(f"registry {name} is not mirrored by this agent")
        return name

    async def _admit(
        self, registry: str, repository: str, client: ClientIdentity, probe: Probe
    ) -> None:
        if client is self.agent_identity:
            return
        if client.peer is not None and self.config.peer_token is not None:
            if not peer_token_ok(self.config.peer_token, client.peer_token):
                raise UnauthorizedError("peer request without the right peer token")
            return  # a trusted peer checked its own client
        await self.access.admit(registry, repository, client.authorization, probe)

    # -- blobs -----------------------------------------------------------------------------

    def _local_blob(self, digest: Digest) -> BlobResult | None:
        if not self._store.has(digest):
            return None
        size = self._store.blob_size(digest)
        if size is None:
            return None
        return BlobResult(digest, size, "local", path=self._store.blob_path(digest))

    def _steps(
        self,
        what: What,
        digest: Digest,
        *,
        from_peer: bool,
        excluded: Iterable[str] = (),
        as_home: bool = False,
    ) -> tuple[Step, ...]:
        """Where to look for ``digest`` (:func:`plan_sources`), from the peer ring and health
        as they are now (``as_home``: plan as the digest's home, whatever the ring says now)."""
        home_url = self.ring.home(digest)
        excluded = set(excluded)
        return plan_sources(
            what,
            from_peer=from_peer,
            home=None if as_home or home_url == self.ring.self_url else home_url,
            peers=self.ring.candidates(digest, (), len(self.ring.nodes())),
            max_probes=self.config.max_peer_probes,
            excluded=excluded,
            upstream=self._upstream.name not in excluded,
        )

    async def _blob(
        self, registry: str, repository: str, digest: Digest, *, from_peer: bool
    ) -> tuple[BlobResult, Transfer | None]:
        local = self._local_blob(digest)
        if local is not None:
            return local, None
        t = self._transfers.get(digest)
        if t is None:
            if from_peer and self._steps("blob", digest, from_peer=True) == (NotHere(),):
                raise NotFoundError(f"blob {digest} is not on this node")
            t = self._start(registry, repository, digest, from_peer)
        size, kind = await asyncio.shield(t.ready)
        if t.finished.is_set() and self._store.has(digest):
            # Done already: serve the file, but say where this request's bytes came from.
            return BlobResult(digest, size, kind, path=self._store.blob_path(digest)), t
        joined = t
        return BlobResult(
            digest, size, kind, open_stream=lambda start: self._stream(joined, start)
        ), t

    def _start(self, registry: str, repository: str, digest: Digest, from_peer: bool) -> Transfer:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[tuple[int, str]] = loop.create_future()
        ready.add_done_callback(_retrieve)
        known = self._sizes.get(digest)
        t = Transfer(registry, repository, digest, known, from_peer, ready, self._clock())
        self._transfers[digest] = t
        task = loop.create_task(self._run(t), name=f"warmstart-transfer-{digest.short}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return t

    async def _run(self, t: Transfer) -> None:
        what = f"blob {t.digest} of {t.registry}/{t.repository}"
        excluded: set[str] = set()
        failures = Failures()
        try:
            pieces = self._pieces_of(t.known_size)
            if pieces is not None:
                try:
                    await self._run_pieces(t, pieces)
                except PiecesDeclined as e:
                    log.info("%s travels whole: %s", what, e)
                else:
                    self._stored(t)
                    return
            for _round in range(MAX_ROUNDS):
                # A peer's transfer was let in because this node was the home: it stays so.
                steps = self._steps(
                    "blob", t.digest, from_peer=t.from_peer, excluded=excluded, as_home=t.from_peer
                )
                attempt = Attempt(self._runner, t, steps, failures)
                try:
                    try:
                        source, first = await attempt.open_first(self._resume_offset(t))
                    except Exhausted:
                        raise failures.error(what) from None
                    size = t.known_size if t.known_size is not None else first.size
                    t.size, t.source_kind, t.source_name = size, source.kind, source.name
                    if not t.ready.done():
                        t.ready.set_result((size, source.kind))
                    t.attempt_open.set()
                    try:
                        with self._metrics.transfer(source.kind):
                            # Registers the store's flight before it first waits, so readers
                            # woken by ``attempt_open`` find the write in progress.
                            await self._store.fetch(t.digest, size, attempt.blob_source)
                    except Exhausted:
                        raise failures.error(what) from None
                    except (StoreDigestMismatch, StoreSizeMismatch) as e:
                        bad = attempt.contributors or {source.name}
                        log.warning("%s: %s sent corrupt data (%s); dropping it", what, bad, e)
                        for name in sorted(bad):
                            self._corrupt(name, t, e, failures)
                        excluded |= bad
                        t.generation += 1
                        t.attempt_open.clear()
                        t.abandoned.set()
                        t.abandoned = asyncio.Event()
                        continue
                finally:
                    await attempt.aclose()
                self._stored(t)
                return
            raise failures.error(what)
        except FetchError as e:
            t.error = e
        except StoreError as e:
            t.error = UnavailableError(f"{what}: {e}")
        except asyncio.CancelledError:
            t.error = UnavailableError(f"{what}: the transfer was cancelled")
            raise
        except Exception as e:
            log.exception("%s: transfer failed", what)
            t.error = UnavailableError(f"{what}: {e}")
        finally:
            if not t.ready.done():
                t.ready.set_exception(t.error or UnavailableError(f"{what}: transfer failed"))
            t.attempt_open.set()
            t.finished.set()
            if self._transfers.get(t.digest) is t:
                del self._transfers[t.digest]

    # -- pieces ----------------------------------------------------------------------------

    def _pieces_of(self, size: int | None) -> Pieces | None:
        """How a blob of ``size`` bytes is cut into pieces here; None: it travels whole."""
        c = self.config
        if not c.pieces or not use_pieces(
            size, len(self.ring.nodes()), threshold=c.piece_threshold
        ):
            return None
        assert size is not None
        return Pieces(size, piece_size_for(size, smallest=c.piece_min, largest=c.piece_max))

    def _piece_peer(self, url: str) -> PieceSource | None:
        peer = self._runner.peer(url)
        return peer if isinstance(peer, PieceSource) else None

    async def _run_pieces(self, t: Transfer, pieces: Pieces) -> None:
        def on_open(kind: str, name: str) -> None:
            t.size, t.source_kind, t.source_name = pieces.size, kind, name
            if not t.ready.done():
                t.ready.set_result((pieces.size, kind))
            t.attempt_open.set()

        def fill_steps() -> tuple[Step, ...]:
            return self._steps("blob", t.digest, from_peer=t.from_peer, as_home=True)

        kind = "upstream" if self.ring.is_home(t.digest) else "peer"
        with self._metrics.transfer(kind):
            await self.swarm.run(t, pieces, fill_steps, self._piece_peer, on_open)
        if not t.ready.done():
            # Another process on this store wrote it meanwhile: it is there, final.
            on_open("local", "local")

    async def pieces_request(
        self, registry: str, digest: Digest, body: object, client: ClientIdentity
    ) -> dict[str, object]:
        registry = self._registry(registry)
        try:
            req = PiecesRequest.parse(body)
        except PiecesInvalid as e:
            raise ValueError(str(e)) from None
        await self._admit(registry, req.repository, client, Probe("blob", str(digest)))
        pieces = self._pieces_of(req.pieces.size)
        if pieces != req.pieces:
            raise ConflictError(
                f"blob {digest} travels {'as ' + str(pieces) if pieces else 'whole'} here"
            )
        tracker = self.swarm.trackers.get(digest)
        if tracker is None or tracker.pieces != pieces:
            size = self._store.blob_size(digest) if self._store.has(digest) else None
            if size is not None:
                if size != pieces.size:
                    raise ConflictError(f"blob {digest} has {size} bytes here")
                tracker = await self.swarm.tracker_of_file(digest, pieces)
            elif self.ring.is_home(digest):
                if digest in self._transfers:
                    raise ConflictError(f"blob {digest} is on its way here whole")
                tracker = self.swarm.tracker(digest, pieces)
                self._sizes.put(digest, pieces.size)
                self._start(registry, req.repository, digest, True)
            else:
                raise NotFoundError(f"blob {digest}: this node keeps no piece list of it")
        if req.hashes is not None:
            have = self.swarm.have(digest, pieces)
            tracker.learn_hashes([None if i in have else h for i, h in enumerate(req.hashes)])
        me = self.ring.self_url
        if req.url != me:
            tracker.announce(req.url, req.have, req.served)
        tracker.forget(g for g in req.gone if g != me)
        await tracker.wait(req.version, req.wait)
        return self.swarm.answer(digest, tracker).to_json()

    async def get_piece(
        self,
        registry: str,
        repository: str,
        digest: Digest,
        start: int,
        end: int,
        client: ClientIdentity,
    ) -> BlobResult:
        registry = self._registry(registry)
        await self._admit(registry, repository, client, Probe("blob", str(digest)))
        if not self.swarm.may_send(digest, start):
            raise PieceBusyError(f"blob {digest}: the piece at {start} is held elsewhere")
        local = self._local_blob(digest)
        if local is not None:
            return local
        pf = self._store.piece_file(digest)
        if pf is None or not pf.covered(start, end):
            raise NotFoundError(f"blob {digest}: bytes {start}-{end} are not verified here")
        # The piece file has the blob's size from the start, and accepted pieces are never
        # written again: the server may send the range from it like a stored blob (sendfile).
        return BlobResult(digest, pf.pieces.size, "local", path=pf.path)

    def piece_sent(self, digest: Digest, start: int) -> None:
        self.swarm.piece_sent(digest, start)

    def _resume_offset(self, t: Transfer) -> int:
        """Where the store will resume the blob from (a partial a dead agent left), so the
        first request already asks for the rest; 0 if nothing is there, if it is too long, or
        if the blob's size is unknown (an offset past the end would read as a corrupt source)."""
        known = t.known_size
        if known is None:
            return 0
        offset = self._store.partial_size(t.digest)
        return offset if offset <= known else 0

    def _corrupt(self, name: str, t: Transfer, error: Exception, failures: Failures) -> None:
        source: Source = self._upstream
        if name != self._upstream.name:
            source = self._runner.peer(name) or self._upstream
        self._runner.failed(source, SourceCorrupt(str(error)), t.registry, failures)

    def _stored(self, t: Transfer) -> None:
        if t.size is not None:
            self._sizes.put(t.digest, t.size)
        if t.source_kind == "upstream":
            self.access.note_members(t.registry, t.repository, [t.digest])
        self._record(self._images.complete(self._store.has, blob=t.digest))

    async def _stream(self, t: Transfer, start: int) -> AsyncGenerator[bytes, None]:
        """The blob from ``start`` while the transfer writes it; raises as soon as the attempt
        it follows turns out corrupt (its bytes so far were wrong: the client must retry)."""
        while True:
            generation, abandoned = t.generation, t.abandoned
            await t.attempt_open.wait()
            if t.finished.is_set() and t.error is not None and not self._store.has(t.digest):
                raise t.error
            if generation == t.generation:
                break
        corrupt = UnavailableError(
            f"blob {t.digest}: a source sent corrupt data; ask again for a good copy"
        )
        size = t.size
        pos = start
        held = b""  # the blob's last byte, sent only once the whole blob is verified
        reader = self._store.open_reader(t.digest, start).__aiter__()
        stop = asyncio.ensure_future(abandoned.wait())
        try:
            while True:
                # Race each read against the attempt being abandoned: a reader waiting for bytes
                # of the next attempt must not wait (it could never use them).
                step = asyncio.ensure_future(reader.__anext__())
                await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    step.cancel()
                    await asyncio.gather(step, return_exceptions=True)
                    raise corrupt
                try:
                    chunk = step.result()
                except StopAsyncIteration:
                    # The reader stops only at the verified, renamed file: safe to finish.
                    if held:
                        yield held
                    return
                if t.generation != generation:
                    raise corrupt
                pos += len(chunk)
                if size is not None and pos >= size and chunk:
                    # Until the digest is checked, a client must not get a complete body:
                    # if the check fails, the connection is cut one byte short.
                    chunk, held = chunk[:-1], held + chunk[-1:]
                if chunk:
                    yield chunk
        except StoreError as e:
            if t.error is not None:
                raise t.error from e
            raise UnavailableError(f"blob {t.digest}: the transfer failed: {e}") from e
        finally:
            stop.cancel()
            await aclose_quietly(reader)

    # -- manifests -------------------------------------------------------------------------

    async def _manifest_by_digest(
        self,
        registry: str,
        repository: str,
        digest: Digest,
        accept: tuple[str, ...],
        *,
        from_peer: bool,
    ) -> ManifestResult:
        known = self._sizes.get(digest)
        if known is not None and known > MAX_MANIFEST_BYTES:
            # A blob of a manifest served here: no need to ask anyone what it is.
            raise NotFoundError(
                f"{digest} is a blob of {known} bytes, not a manifest "
                f"(the limit is {MAX_MANIFEST_BYTES})"
            )
        if self._store.has(digest):
            try:
                local = await self._local.get_manifest(registry, repository, str(digest), accept)
            except SourceNotManifest as e:
                raise NotFoundError(str(e)) from None
            except SourceError:
                pass  # corrupt (and removed by the store) or just evicted: fetch it again
            else:
                return self._served(registry, repository, local, "local")

        async def verified(source: Source) -> SourceManifest:
            got = await source.get_manifest(registry, repository, str(digest), accept)
            if Digest.of(got.body, digest.algorithm) != digest:
                raise SourceCorrupt(f"manifest content does not hash to {digest}")
            return SourceManifest(digest, got.media_type, got.body)

        async def fetch(_flight: Flight[tuple[object, ...], ManifestResult]) -> ManifestResult:
            steps = self._steps("manifest", digest, from_peer=from_peer)
            source, got = await self._runner.run(
                steps, f"manifest {digest}", registry, repository, digest, verified
            )
            self._keep_manifest(got)
            return self._served(registry, repository, got, source.kind)

        key = ("digest", registry, repository, digest, accept, from_peer)
        return await self._manifest_flights.do(key, fetch)

    def _keep_manifest(self, got: SourceManifest) -> None:
        try:
            self._store.put_bytes(got.digest, got.body, got.media_type)
        except (StoreError, OSError, sqlite3.Error) as e:
            log.warning("could not keep manifest %s in the store: %s", got.digest, e)

    def _served(
        self,
        registry: str,
        repository: str,
        got: SourceManifest,
        source: str,
        *,
        tag: str | None = None,
    ) -> ManifestResult:
        """Learn from a manifest on its way out: blob sizes, membership, pending images."""
        try:
            parsed = parse_manifest(got.body, got.media_type)
        except OCIError:
            parsed = None
        media_type = got.media_type or (parsed.media_type if parsed else mt.OCI_MANIFEST)
        members: list[Digest] = [got.digest]
        entry = (got.digest, len(got.body), media_type)
        tag_reference = f"{registry}/{repository}:{tag}" if tag is not None else None
        if isinstance(parsed, ImageIndex):
            for d in parsed.manifests:
                self._sizes.put(d.digest, d.size)
                members.append(d.digest)
            if tag_reference is not None:
                self._images.saw_index(registry, repository, tag_reference, parsed, entry)
        elif isinstance(parsed, ImageManifest):
            for d in parsed.blobs:
                self._sizes.put(d.digest, d.size)
                members.append(d.digest)
            self._images.saw_image(registry, repository, parsed, entry, tag_reference)
            self._record(self._images.complete(self._store.has, blob=got.digest))
        self.access.note_members(registry, repository, members)
        return ManifestResult(got.digest, media_type, got.body, source)

    def _record(self, images: list[PendingImage]) -> None:
        for image in images:
            try:
                self._store.record_image(
                    image.reference, image.top, list(image.entries), image.platform
                )
            except (StoreError, sqlite3.Error, ValueError) as e:
                log.warning("could not record image %s: %s", image.reference, e)


__all__ = ["FetcherStatus", "TieredFetcher", "TransferStatus"]
