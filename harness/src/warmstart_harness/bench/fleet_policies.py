"""The two ways a fleet shares a blob, as schedulers over :mod:`warmstart_harness.bench.fleet_sim`.

Every node wants every blob at time 0; each blob has a *home* node (chosen with the seed, as
rendezvous hashing over digests spreads them) that fetches it from the upstream registry once,
hashing it as it streams (one core: at most ``hash_rate``).

``one-home`` (what warmstart does today): every other node asks the blob's home (one request,
``request_latency``) and downloads the whole blob from it; the home relays the bytes while they
arrive (a follower never gets ahead of its leader's bytes). The home's uplink carries N-1 copies.

``pieces`` (the fleet design, issue 17): a blob of at least ``threshold`` bytes travels as
pieces of :meth:`PieceParams.size_for` bytes. The home publishes the piece list and each piece
becomes servable at the home as soon as its last byte has streamed in and been hashed. Every
other node keeps ``requests`` piece requests in flight; each asks the home's tracker who holds
what (``tracker_latency``, and a queue if the home answers at most ``tracker_rps``) and then the
chosen peer (``request_latency``) before bytes move. The piece chosen is the least served (fewest
copies held or on their way, by powers of two) the node lacks and is not fetching, among those
some holder can serve now; the peer is the least served holder (fewest uploads in flight) with a
free upload slot. With ``home_seeds_once`` a home that still streams the blob sends each piece
out only once (super-seeding); a piece that has left it is fetched from the nodes that have it. A
node serves every piece it holds, with ``upload_slots_downloading`` uploads at most while it still
lacks pieces and ``upload_slots`` once it has them all. A node that can find nothing waits; the
tracker matches it as soon as a holder of a piece it lacks has a free slot (a new piece, a
finished upload). With ``verify_blob_digest`` a node also checks the blob's own digest: one core
hashing the blob in order as its pieces become contiguous (and every byte is hashed twice). Blobs
under the threshold go as in ``one-home``.

Not modelled: failures and retries, endgame duplicates, TCP slow start, the piece list's own
transfer, choking games; all nodes are alike.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from warmstart_harness.bench.fleet_flows import Flow
from warmstart_harness.bench.fleet_hardware import Fleet, FleetParams, MiB
from warmstart_harness.bench.fleet_sim import FlowSim

ONE_HOME = "one-home"
PIECES = "pieces"
POLICIES: tuple[str, ...] = (ONE_HOME, PIECES)  # the old one, then the new one


@dataclass(frozen=True)
class PieceParams:
    """The piece policy's knobs, named after what the implementation will set."""

    threshold: int = 64 * MiB  # blobs this big or bigger travel as pieces
    target_pieces: int = 128  # the piece size aims at this many pieces per blob ...
    min_piece: int = 8 * MiB  # ... within these bounds (whole MiB)
    max_piece: int = 64 * MiB
    piece_size: int | None = None  # a fixed piece size instead
    requests: int = 4  # piece requests in flight per downloading node
    upload_slots: int = 8  # uploads in flight per node that holds every piece
    upload_slots_downloading: int = 4  # ... and per node that still lacks some
    verify_blob_digest: bool = True
    # While a home still streams a blob from the upstream it sends each piece out once (to the
    # first node that asks); the swarm copies it on. Its uplink then carries only new pieces.
    home_seeds_once: bool = True
    tracker_rps: float | None = None  # tracker answers per second at a home (None: no queue)

    def __post_init__(self) -> None:
        if min(self.requests, self.upload_slots, self.upload_slots_downloading) < 1:
            raise ValueError("requests and upload slots must be at least 1")
        if not 0 < self.min_piece <= self.max_piece or self.target_pieces < 1:
            raise ValueError("piece bounds must satisfy 0 < min_piece <= max_piece")
        if self.piece_size is not None and self.piece_size <= 0:
            raise ValueError("piece_size must be positive")
        if self.tracker_rps is not None and not self.tracker_rps > 0:
            raise ValueError("tracker_rps must be positive or None")

    def size_for(self, blob_size: int) -> int | None:
        """Piece size for a blob, or None when it travels whole (under the threshold)."""
        if blob_size < self.threshold:
            return None
        if self.piece_size is not None:
            return self.piece_size
        raw = blob_size // self.target_pieces
        return max(self.min_piece, min(self.max_piece, raw // MiB * MiB))


@dataclass(frozen=True)
class RunResult:
    """One policy over one fleet: when each node held (and had verified) every blob."""

    policy: str
    params: FleetParams
    completions_s: tuple[float, ...]  # by node
    uploads: tuple[int, ...]  # bytes each node sent to other nodes
    upstream_bytes: int
    homes: tuple[int, ...]  # by blob
    piece_sizes: tuple[int | None, ...]  # by blob; None: whole
    pieces: int  # over all blobs
    requests: int  # GETs to peers (whole blobs or pieces)
    events: int
    reallocations: int
    refilled: int
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def largest_upload(self) -> int:
        return max(self.uploads)


def pick(mask: int, nbits: int, rng: random.Random) -> int:
    """A set bit of ``mask`` (not 0): the first at or after a random position, cyclically."""
    r = int(rng.random() * nbits)
    hi = mask >> r
    if hi:
        return r + (hi & -hi).bit_length() - 1
    return (mask & -mask).bit_length() - 1


class _Run:
    """State shared by both policies: completions, uploads, whole-blob transfers."""

    def __init__(self, sim: FlowSim, params: FleetParams, hash_passes: int) -> None:
        self.sim = sim
        self.p = params
        self.fleet = Fleet(params, hash_passes=hash_passes)
        self.rng = random.Random(params.seed)
        n, nb = params.nodes, len(params.blob_sizes)
        self.homes = tuple(self.rng.randrange(n) for _ in range(nb))
        self.blobs_left = [nb] * n
        self.completions: list[float | None] = [None] * n
        self.uploads = [0] * n
        self.upstream_bytes = 0
        self.requests = 0
        self._leader: list[Flow | None] = [None] * nb
        self._asked: list[list[int]] = [[] for _ in range(nb)]

    def blob_done(self, node: int, t: float) -> None:
        left = self.blobs_left[node] - 1
        self.blobs_left[node] = left
        if left == 0:
            self.completions[node] = t

    def from_upstream(
        self,
        blob: int,
        *,
        on_done: Callable[[Flow], None] | None = None,
        milestones: Sequence[float] = (),
        on_milestone: Callable[[Flow, int], None] | None = None,
    ) -> Flow:
        home = self.homes[blob]
        links, weights = self.fleet.from_upstream(home)
        size = self.p.blob_sizes[blob]
        self.upstream_bytes += size
        return self.sim.start_flow(
            links,
            size,
            cap=self.p.hash_rate,
            weights=weights,
            on_done=on_done,
            milestones=milestones,
            on_milestone=on_milestone,
            tag=(home, blob),
        )

    # -- one-home ---------------------------------------------------------------------------

    def start_whole(self, blob: int) -> None:
        home = self.homes[blob]
        self.sim.at(self.p.upstream_latency, self._home_fetch, blob)
        for node in range(self.p.nodes):
            if node != home:
                self.sim.at(self.p.request_latency, self._ask_home, node, blob)

    def _home_fetch(self, blob: int) -> None:
        self._leader[blob] = self.from_upstream(blob, on_done=self._whole_home_done)
        for node in self._asked[blob]:
            self._serve_whole(node, blob)
        self._asked[blob] = []

    def _whole_home_done(self, flow: Flow) -> None:
        self.blob_done(flow.tag[0], self.sim.now)

    def _ask_home(self, node: int, blob: int) -> None:
        self.requests += 1
        if self._leader[blob] is None:  # the home's own fetch has not begun: it will serve
            self._asked[blob].append(node)
        else:
            self._serve_whole(node, blob)

    def _serve_whole(self, node: int, blob: int) -> None:
        home = self.homes[blob]
        links, weights = self.fleet.between(home, node)
        self.sim.start_flow(
            links,
            self.p.blob_sizes[blob],
            cap=self.p.hash_rate,
            weights=weights,
            leader=self._leader[blob],
            on_done=self._whole_done,
            tag=(home, node),
        )

    def _whole_done(self, flow: Flow) -> None:
        home, node = flow.tag
        self.uploads[home] += int(flow.size)
        self.blob_done(node, self.sim.now)


class _Swarm:
    """Every pieced blob's pieces, who holds and wants them, and the tracker's matching.

    Sets of pieces and of nodes are Python ints used as bitmasks: a node's pieces, a piece's
    holders, the nodes with a free upload slot at each load level. Rarity tiers group pieces
    by the power of two of their copies held or on their way."""

    def __init__(self, run: _Run, pp: PieceParams, blobs: list[int], sizes: list[int]) -> None:
        self.run = run
        self.sim = run.sim
        self.pp = pp
        p = run.p
        self.n = n = p.nodes
        self.rng = run.rng
        self.blob_of: list[int] = []
        self.length: list[int] = []
        self.first: dict[int, int] = {}
        self.count_in: dict[int, int] = {}
        ends: dict[int, list[int]] = {}
        for blob, psize in zip(blobs, sizes, strict=True):
            total = p.blob_sizes[blob]
            self.first[blob] = len(self.length)
            offsets = [*range(psize, total, psize), total]
            ends[blob] = offsets
            self.count_in[blob] = len(offsets)
            prev = 0
            for end in offsets:
                self.blob_of.append(blob)
                self.length.append(end - prev)
                prev = end
        self.ends = ends
        self.npieces = npieces = len(self.length)
        self.full = (1 << npieces) - 1
        all_nodes = (1 << n) - 1
        self.piece_home = [run.homes[b] for b in self.blob_of]
        self.held = [0] * n
        self.inflight = [0] * n
        self.home_mask = [0] * n
        for blob in blobs:
            lo, k = self.first[blob], self.count_in[blob]
            self.home_mask[run.homes[blob]] |= ((1 << k) - 1) << lo
        self.holders = [0] * npieces
        self.served = [0] * npieces  # copies held or on their way: the rarity
        self.fresh = 0  # pieces still only at their streaming home, none on their way
        self.seeding = [0] * n  # pieces a streaming home sends out only once (home_seeds_once)
        self.want = [all_nodes & ~(1 << run.homes[b]) for b in self.blob_of]
        self.avail = 0
        self.tiers = [0] * max(1, n.bit_length())
        self.free_req = [pp.requests] * n
        self.active_up = [0] * n
        self.limit = [pp.upload_slots_downloading] * n  # until a node holds every piece
        self.nlevels = max(pp.upload_slots, pp.upload_slots_downloading)
        self.levels = [0] * self.nlevels
        self.levels[0] = all_nodes
        self.free = all_nodes  # nodes with a free upload slot
        self.waiting = 0  # nodes with a free request slot that found nothing to fetch
        self.union = 0  # a superset of the pieces waiting nodes lack
        self.tracker_free_at = dict.fromkeys(blobs, 0.0)
        self.hashed_k = {(i, b): 0 for i in range(n) for b in blobs}  # in-order digest cursor
        self.hashed_t = dict.fromkeys(self.hashed_k, 0.0)
        self.left = {(i, b): self.count_in[b] for i in range(n) for b in blobs}
        self.tracker_wait = 0.0
        if pp.home_seeds_once:
            for blob in blobs:
                self.seeding[run.homes[blob]] |= self._blob_mask(blob)

    def _blob_mask(self, blob: int) -> int:
        return ((1 << self.count_in[blob]) - 1) << self.first[blob]

    # -- start -------------------------------------------------------------------------------

    def start(self) -> None:
        run = self.run
        for blob in self.first:
            run.sim.at(run.p.upstream_latency, self._home_fetch, blob)
        for node in range(self.n):
            if self.home_mask[node] != self.full:
                self.sim.at(0.0, self.fill, node)

    def _home_fetch(self, blob: int) -> None:
        self.run.from_upstream(
            blob,
            on_done=self._home_done,
            milestones=self.ends[blob],
            on_milestone=self._home_piece,
        )

    def _home_piece(self, flow: Flow, index: int) -> None:
        home, blob = flow.tag
        self.gain(home, self.first[blob] + index, from_upstream=True)

    def _home_done(self, flow: Flow) -> None:
        home, blob = flow.tag
        self.seeding[home] &= ~self._blob_mask(blob)
        self.run.blob_done(home, self.sim.now)
        self.offer(home)

    # -- bookkeeping ---------------------------------------------------------------------------

    def _set_active(self, node: int, new: int) -> None:
        old, lim, bit = self.active_up[node], self.limit[node], 1 << node
        if old < lim:
            self.levels[old] &= ~bit
        self.active_up[node] = new
        if new < lim:
            self.levels[new] |= bit
            self.free |= bit
        else:
            self.free &= ~bit

    def _set_limit(self, node: int, lim: int) -> None:
        a, bit = self.active_up[node], 1 << node
        if a < self.limit[node]:
            self.levels[a] &= ~bit
        self.limit[node] = lim
        if a < lim:
            self.levels[a] |= bit
            self.free |= bit

    def _serve_one_more(self, piece: int) -> None:
        """One more copy of ``piece`` held or on its way: move it up the rarity tiers."""
        bit = 1 << piece
        c = self.served[piece] + 1
        self.served[piece] = c
        if c == 1:
            self.tiers[0] |= bit
        elif c & (c - 1) == 0:
            j = c.bit_length() - 1
            self.tiers[j - 1] &= ~bit
            self.tiers[j] |= bit

    def gain(self, node: int, piece: int, *, from_upstream: bool = False) -> None:
        """``node`` now holds ``piece`` (verified): count it, then offer it."""
        bit = 1 << piece
        self.held[node] |= bit
        self.holders[piece] |= 1 << node
        if from_upstream:  # a peer's copy was counted when it was asked for
            self.avail |= bit
            self.fresh |= bit
            self._serve_one_more(piece)
        if self.held[node] == self.full and self.limit[node] != self.pp.upload_slots:
            self._set_limit(node, self.pp.upload_slots)
        self.offer(node)

    def _downloaded(self, node: int, piece: int) -> None:
        """A peer's piece landed at ``node``: the blob's in-order digest and completion."""
        blob = self.blob_of[piece]
        key = (node, blob)
        now = self.sim.now
        if self.pp.verify_blob_digest:
            k, t = self.hashed_k[key], self.hashed_t[key]
            lo, held, hr = self.first[blob], self.held[node], self.run.p.hash_rate
            end = self.count_in[blob]
            if k < end and held >> (lo + k) & 1:
                t = max(t, now)
                while k < end and held >> (lo + k) & 1:
                    t += self.length[lo + k] / hr
                    k += 1
                self.hashed_k[key], self.hashed_t[key] = k, t
        left = self.left[key] - 1
        self.left[key] = left
        if left == 0:
            self.run.blob_done(node, self.hashed_t[key] if self.pp.verify_blob_digest else now)

    # -- the tracker's matching ----------------------------------------------------------------

    def _choose(self, node: int) -> tuple[int, int] | None:
        """The least served piece ``node`` can fetch now and its least served free holder."""
        cand = self.avail & ~self.held[node] & ~self.inflight[node] & ~self.home_mask[node]
        if not cand:
            return None
        free, fresh, seeding, holders = self.free, self.fresh, self.seeding, self.holders
        home_of = self.piece_home
        for c in self._tier_order(cand):
            while c:
                low = c & -c
                c ^= low
                piece = low.bit_length() - 1
                h = holders[piece] & free
                if h and not fresh & low:  # it has left its home: not from there while streaming
                    home = home_of[piece]
                    if seeding[home] & low:
                        h &= ~(1 << home)
                if h:
                    for level in self.levels:
                        x = h & level
                        if x:
                            return piece, pick(x, self.n, self.rng)
        return None

    def _tier_order(self, mask: int) -> list[int]:
        """``mask`` split by rarity tier, rarest first; each tier starting at a random piece
        (the parts to walk lowest bit first)."""
        r = int(self.rng.random() * self.npieces)
        parts = []
        for tier in self.tiers:
            c = mask & tier
            if c:
                hi = c >> r << r
                parts.append(hi)
                parts.append(c ^ hi)
        return parts

    def fill(self, node: int) -> None:
        """Use ``node``'s free request slots; with nothing to fetch now, wait for the tracker."""
        bit = 1 << node
        while self.free_req[node] > 0:
            choice = self._choose(node)
            if choice is None:
                need = self.full & ~self.held[node] & ~self.inflight[node] & ~self.home_mask[node]
                if need:
                    self.waiting |= bit
                    self.union |= need
                else:
                    self.waiting &= ~bit
                return
            self._assign(node, *choice)

    def offer(self, node: int) -> None:
        """Fill ``node``'s free upload slots with waiting nodes that lack a piece it holds."""
        while self.active_up[node] < self.limit[node] and self.waiting:
            x = self.held[node] & self.union & (~self.seeding[node] | self.fresh)
            assigned = False
            for c in self._tier_order(x):
                while c:
                    low = c & -c
                    c ^= low
                    piece = low.bit_length() - 1
                    d = self.want[piece] & self.waiting
                    if d:
                        self._assign(pick(d, self.n, self.rng), piece, node)
                        assigned = True
                        break
                    self.union &= ~low  # no waiting node lacks it
                if assigned:
                    break
            if not assigned:
                return

    def _assign(self, node: int, piece: int, src: int) -> None:
        bit = 1 << piece
        self.inflight[node] |= bit
        self.want[piece] &= ~(1 << node)
        self.fresh &= ~bit
        self._serve_one_more(piece)
        left = self.free_req[node] - 1
        self.free_req[node] = left
        if left == 0:
            self.waiting &= ~(1 << node)
        self._set_active(src, self.active_up[src] + 1)
        run, now = self.run, self.sim.now
        delay = run.p.tracker_latency + run.p.request_latency
        if self.pp.tracker_rps is not None:
            blob = self.blob_of[piece]
            start = max(now, self.tracker_free_at[blob])
            self.tracker_free_at[blob] = start + 1 / self.pp.tracker_rps
            self.tracker_wait += start - now
            delay += start - now
        run.requests += 1
        self.sim.at(now + delay, self._start_piece, node, piece, src)

    def _start_piece(self, node: int, piece: int, src: int) -> None:
        links, weights = self.run.fleet.between(src, node)
        self.sim.start_flow(
            links,
            self.length[piece],
            cap=self.run.p.hash_rate,
            weights=weights,
            on_done=self._piece_done,
            tag=(node, piece, src),
        )

    def _piece_done(self, flow: Flow) -> None:
        node, piece, src = flow.tag
        self.run.uploads[src] += self.length[piece]
        self._set_active(src, self.active_up[src] - 1)
        self.inflight[node] &= ~(1 << piece)
        self.free_req[node] += 1
        self.gain(node, piece)  # offers it
        self._downloaded(node, piece)
        self.fill(node)
        self.offer(src)


def simulate(
    params: FleetParams,
    policy: str,
    pieces: PieceParams | None = None,
    *,
    exact: bool = False,
    tolerance: float = 1e-3,
) -> RunResult:
    """Run one policy over one fleet to the end; RuntimeError if a node never completes."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
    pp = pieces or PieceParams()
    sizes = [pp.size_for(s) if policy == PIECES else None for s in params.blob_sizes]
    pieced = [b for b, s in enumerate(sizes) if s is not None]
    hash_passes = 2 if pieced and pp.verify_blob_digest else 1
    sim = FlowSim(tolerance=tolerance, exact=exact)
    run = _Run(sim, params, hash_passes)
    for blob, psize in enumerate(sizes):
        if psize is None:
            run.start_whole(blob)
    swarm = None
    if pieced:
        swarm = _Swarm(run, pp, pieced, [s for s in sizes if s is not None])
        swarm.start()
    sim.run()
    missing = [i for i, t in enumerate(run.completions) if t is None]
    if missing:
        raise RuntimeError(
            f"{policy}: {len(missing)} of {params.nodes} nodes never completed "
            f"(first: node {missing[0]}); the simulation stalled"
        )
    extra = {"tracker_wait_s": swarm.tracker_wait} if swarm is not None else {}
    return RunResult(
        policy=policy,
        params=params,
        completions_s=tuple(t for t in run.completions if t is not None),
        uploads=tuple(run.uploads),
        upstream_bytes=run.upstream_bytes,
        homes=run.homes,
        piece_sizes=tuple(sizes),
        pieces=swarm.npieces if swarm is not None else 0,
        requests=run.requests,
        events=sim.events,
        reallocations=sim.reallocations,
        refilled=sim.refilled,
        extra=extra,
    )
