"""A flow-level discrete-event simulator of bytes moving through a fleet's links (pure).

Nothing here does I/O or reads a clock: time is the simulation's own, in seconds, and a run
with the same inputs gives the same numbers.

The model
---------
- A :class:`Link` is a capacity in bytes per second: a node's NIC uplink, its downlink (merged
  with what it can ingest: disk writes and sha256 on its cores), the upstream registry's uplink,
  or, for the network-namespace test bed, the CPU that every node on the machine shares (a
  *weighted* link: a flow uses ``weight`` of it per byte per second, e.g. CPU-seconds per byte).
- A :class:`Flow` moves ``size`` bytes across a tuple of links, at most ``cap`` bytes/s on its
  own (one stream is hashed on one core). A flow may *follow* a leader (a node that relays a
  blob while it arrives): it never gets ahead of the leader's bytes; once it has caught up its
  cap is the leader's rate.
- Rates are **max-min fair** (progressive filling): every flow's rate grows at the same pace
  until a link it crosses is full or it reaches its cap; those flows freeze, the rest go on.
- Events: a flow's completion, its crossing of a byte offset (``milestones``: a piece fully
  received and hashed), a follower catching up, and timers (per-request latencies). Events at
  the same instant are handled together, then rates are recomputed once.
- **Incremental recomputation.** Adding or removing a flow marks its links *dirty*; they are the
  first *region*. The flows of the region's links are refilled against what the flows outside
  leave of the other links they cross (a link crossed by one refilled flow only is just a limit
  on it). Then every link outside where a refilled flow slowed down, or that held one down, is
  checked: max-min fair means that a link holding a flow down is full and that flow is among its
  fastest. A link that fails joins the region and the larger region is refilled, until none
  fails (the region only grows, so this ends; at worst it is every flow). Rates are applied
  once, at the end. ``exact=True`` refills every flow on every change; the tests compare the
  two after every event.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

INF = math.inf
# A flow this close to its end (relative to its size) is done: float sums of rate x time.
_DONE_EPS = 1e-9
_TIMER, _WAKE = 0, 1


class Link:
    """A capacity (bytes/s; for a weighted link, whatever its weights are per byte)."""

    __slots__ = ("capacity", "flows", "lid", "name")

    def __init__(self, name: str, capacity: float) -> None:
        if not capacity > 0:
            raise ValueError(f"link {name}: capacity must be positive, not {capacity!r}")
        self.name = name
        self.capacity = float(capacity)
        self.flows: dict[int, Flow] = {}  # insertion-ordered: runs are deterministic
        self.lid = -1  # its index in the simulator's per-link arrays, once it carries a flow

    def __repr__(self) -> str:
        return f"Link({self.name!r}, {self.capacity:g})"


class Flow:
    """Bytes in motion; read ``rate``, ``done_at(t)``, ``size``; ``tag`` is the caller's."""

    __slots__ = (
        "_mi",
        "_next_kind",
        "bcap",
        "bneck",
        "cap",
        "done",
        "fid",
        "finished",
        "followers",
        "leader",
        "links",
        "milestones",
        "on_done",
        "on_milestone",
        "rate",
        "size",
        "t0",
        "tag",
        "tailing",
        "ver",
        "weights",
        "wids",
        "wlinks",
    )

    def __init__(
        self,
        fid: int,
        links: tuple[Link, ...],
        weights: tuple[float, ...] | None,
        size: float,
        cap: float,
        now: float,
    ) -> None:
        self.fid = fid
        self.links = links
        self.weights = weights  # None: 1 per byte on every link
        self.wlinks = tuple(zip(links, weights or (1.0,) * len(links), strict=True))
        self.bcap = min((link.capacity for link in links), default=INF)
        self.wids: tuple[tuple[int, float], ...] = ()  # (link id, weight), set by the simulator
        self.size = float(size)
        self.cap = cap
        self.done = 0.0  # bytes moved by ``t0``
        self.t0 = now
        self.rate = 0.0
        self.bneck: Link | None = None  # the link that held it down at the last refill
        self.ver = 0
        self.finished = False
        self.tag: Any = None
        self.on_done: Callable[[Flow], None] | None = None
        self.on_milestone: Callable[[Flow, int], None] | None = None
        self.milestones: Sequence[float] = ()
        self._mi = 0  # next milestone's index
        self._next_kind = ""
        self.leader: Flow | None = None
        self.followers: list[Flow] = []
        self.tailing = False

    def done_at(self, t: float) -> float:
        return self.size if self.finished else min(self.size, self.done + self.rate * (t - self.t0))

    def limit(self) -> float:
        """The flow's own bound on its rate now: its cap, and its leader's rate when tailing."""
        if self.tailing and self.leader is not None and not self.leader.finished:
            return min(self.cap, self.leader.rate)
        return self.cap

    def __repr__(self) -> str:
        return f"Flow({self.fid}, {self.done:.0f}/{self.size:.0f} B at {self.rate:.4g} B/s)"


def _fill(
    paths: Sequence[Sequence[tuple[int, float]]],
    limits: list[float],
    live: Sequence[int],
    residual: list[float],
    weight: list[float],
    load: list[float],
    members: list[list[int]],
) -> tuple[list[float], list[int]]:
    """Progressive filling: flow ``i`` crosses the links ``paths[i]`` (``(link id, weight)``
    pairs, ids among ``live``) whose ``residual[id]`` is what other flows leave, and goes at
    most ``limits[i]``. All rates rise together; a link that fills freezes its flows, a flow
    that reaches its limit freezes alone. ``weight``, ``load`` and ``members`` are scratch
    arrays indexed by link id (overwritten at the live ids). Returns the rates, and for each
    flow the id of the link that froze it (-1: its limit)."""
    n = len(paths)
    rates = [0.0] * n
    froze = [-1] * n
    for j in live:
        weight[j] = 0.0  # of the flows not frozen yet
        load[j] = 0.0  # of the frozen flows
        members[j] = []
    for i, path in enumerate(paths):
        for j, w in path:
            weight[j] += w
            members[j].append(i)
    order = sorted(range(n), key=limits.__getitem__)
    li = 0
    frozen = [False] * n
    left = n
    heap: list[tuple[float, int]] | None = None
    if len(live) > 8:  # many shared links: a heap of their levels (they only grow)
        heap = [(max(0.0, residual[j]) / weight[j], j) for j in live if weight[j] > 0.0]
        heapq.heapify(heap)
    while left:
        best, bj = INF, -1
        if heap is None:
            for j in live:
                w = weight[j]
                if w > 1e-12:
                    level = (residual[j] - load[j]) / w
                    if level < best:
                        best, bj = level, j
        else:
            while heap:
                level, j = heap[0]
                w = weight[j]
                if w <= 1e-12:
                    heapq.heappop(heap)
                    continue
                current = (residual[j] - load[j]) / w
                if current > level * (1 + 1e-12) + 1e-12:
                    heapq.heapreplace(heap, (current, j))
                    continue
                best, bj = current, j
                break
        if best < 0.0:
            best = 0.0
        while li < n and frozen[order[li]]:
            li += 1
        if li < n and limits[order[li]] <= best:
            i = order[li]
            level = limits[i]
            if level == INF:
                raise ValueError("a flow crosses no finite link and has no cap")
            frozen[i] = True
            left -= 1
            rates[i] = level
            for j, w in paths[i]:
                weight[j] -= w
                load[j] += w * level
            continue
        if bj < 0:
            raise ValueError("a flow crosses no finite link and has no cap")
        if heap is not None:
            heapq.heappop(heap)
        for i in members[bj]:
            if not frozen[i]:
                frozen[i] = True
                left -= 1
                rates[i] = best
                froze[i] = bj
                for j, w in paths[i]:
                    weight[j] -= w
                    load[j] += w * best
        weight[bj] = 0.0
    return rates, froze


def max_min_rates(
    paths: Sequence[Sequence[str]],
    capacities: dict[str, float],
    caps: Sequence[float] | None = None,
    weights: Sequence[Sequence[float]] | None = None,
) -> list[float]:
    """The max-min fair rates of flows given by the names of the links they cross.

    ``caps`` bounds each flow on its own (default none); ``weights`` is what a flow uses of each
    of its links per byte/s (default 1). The reference the simulator's incremental
    recomputation is tested against."""
    links = {name: Link(name, cap) for name, cap in capacities.items()}
    flows = []
    for i, path in enumerate(paths):
        w = tuple(weights[i]) if weights is not None else None
        flows.append(Flow(i, tuple(links[p] for p in path), w, 1.0, INF, 0.0))
    index = {link: j for j, link in enumerate(links.values())}
    nl = len(index)
    limits = list(caps) if caps is not None else [INF] * len(flows)
    rates, _ = _fill(
        [[(index[link], w) for link, w in f.wlinks] for f in flows],
        limits,
        range(nl),
        [link.capacity for link in links.values()],
        [0.0] * nl,
        [0.0] * nl,
        [[] for _ in range(nl)],
    )
    return rates


class FlowSim:
    """The event loop and the bandwidth allocator; policies drive it through :meth:`at`,
    :meth:`start_flow` and the flows' callbacks."""

    def __init__(self, *, tolerance: float = 1e-3, exact: bool = False) -> None:
        self.now = 0.0
        self.tolerance = tolerance
        self.exact = exact
        self._heap: list[tuple[float, int, int, Any, Any]] = []
        self._seq = itertools.count()
        self._fids = itertools.count()
        self._dirty: dict[Link, None] = {}
        self._active: dict[int, Flow] = {}
        # Per link, by id: the link, its capacity, the load of its flows (weight x rate, kept
        # up to date), and scratch for the refills (a stamp marks what one refill touched).
        self._links: list[Link] = []
        self._cap: list[float] = []
        self._load: list[float] = []
        self._stamp = 0
        self._seen: list[int] = []
        self._in_region: list[int] = []
        self._cross: list[int] = []
        self._old_load: list[float] = []
        self._resid: list[float] = []
        self._weight: list[float] = []
        self._frozen_load: list[float] = []
        self._members: list[list[int]] = []
        self.events = 0  # events handled
        self.reallocations = 0  # rate recomputations (each after a batch of events)
        self.refilled = 0  # flows refilled over all recomputations (the work done)

    # -- what policies call ----------------------------------------------------------------

    def at(self, t: float, fn: Callable[..., None], *args: Any) -> None:
        """Call ``fn(*args)`` at time ``t`` (not before now)."""
        heapq.heappush(self._heap, (max(t, self.now), next(self._seq), _TIMER, fn, args))

    def start_flow(
        self,
        links: Sequence[Link],
        size: float,
        *,
        cap: float = INF,
        weights: Sequence[float] | None = None,
        on_done: Callable[[Flow], None] | None = None,
        leader: Flow | None = None,
        milestones: Sequence[float] = (),
        on_milestone: Callable[[Flow, int], None] | None = None,
        tag: Any = None,
    ) -> Flow:
        """Start moving ``size`` bytes now. ``leader``: never get ahead of its bytes;
        ``milestones``: ascending byte offsets at which ``on_milestone(flow, index)`` runs."""
        f = Flow(
            next(self._fids),
            tuple(links),
            tuple(weights) if weights is not None else None,
            size,
            cap,
            self.now,
        )
        f.on_done, f.on_milestone, f.milestones, f.tag = on_done, on_milestone, milestones, tag
        if not links:
            raise ValueError("a flow crosses at least one link")
        if leader is not None and not leader.finished:
            f.leader = leader
            leader.followers.append(f)
            f.tailing = leader.done_at(self.now) <= self._eps(f)
        if size <= 0:
            self.at(self.now, self._finish, f)
            return f
        f.wids = tuple((self._register(link), w) for link, w in f.wlinks)
        self._active[f.fid] = f
        for link in f.links:
            link.flows[f.fid] = f
            self._dirty[link] = None
        return f

    def _register(self, link: Link) -> int:
        if link.lid < 0:
            link.lid = len(self._links)
            self._links.append(link)
            self._cap.append(link.capacity)
            self._load.append(0.0)
            for ints in (self._seen, self._in_region, self._cross):
                ints.append(0)
            for floats in (self._old_load, self._resid, self._weight, self._frozen_load):
                floats.append(0.0)
            self._members.append([])
        elif link.lid >= len(self._links) or self._links[link.lid] is not link:
            raise ValueError(f"{link!r} belongs to another simulation")
        return link.lid

    def run(self, until: float = INF) -> None:
        """Handle events until none is left (or the next is after ``until``)."""
        heap = self._heap
        self._reallocate()  # flows started before the run
        while heap:
            t = heap[0][0]
            if t > until:
                break
            # Everything due within a nanosecond is one batch: one recomputation for all.
            while heap and heap[0][0] <= t + 1e-9:
                self.now, _, kind, a, b = heapq.heappop(heap)
                if kind == _TIMER:
                    self.events += 1
                    a(*b)
                elif a.ver == b and not a.finished:
                    self.events += 1
                    self._wake(a)
            self._reallocate()

    @property
    def active_flows(self) -> int:
        return len(self._active)

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _eps(f: Flow) -> float:
        return _DONE_EPS * f.size + 1e-6

    def _settle(self, f: Flow) -> None:
        now = self.now
        if now != f.t0:
            f.done = min(f.size, f.done + f.rate * (now - f.t0))
            f.t0 = now
            lead = f.leader
            if lead is not None and not lead.finished:
                ahead = lead.done_at(now)
                if f.done > ahead:  # rounding: a follower never passes its leader
                    f.done = ahead
                elif f.tailing and ahead - f.done > self._eps(f):
                    f.tailing = False  # it fell behind: free to catch up again

    def _schedule(self, f: Flow) -> None:
        """One wake-up per flow: the earliest of its end, next milestone and catch-up."""
        f.ver += 1
        r = f.rate
        if r <= 0:
            return
        t, kind = self.now + (f.size - f.done) / r, "done"
        if f._mi < len(f.milestones):
            tm = self.now + max(0.0, f.milestones[f._mi] - f.done) / r
            if tm < t:
                t, kind = tm, "milestone"
        lead = f.leader
        if lead is not None and not lead.finished and not f.tailing and r > lead.rate:
            gap = max(0.0, lead.done_at(self.now) - f.done)
            tc = self.now + gap / (r - lead.rate)
            if tc < t:
                t, kind = tc, "catchup"
        f._next_kind = kind
        heapq.heappush(self._heap, (t, next(self._seq), _WAKE, f, f.ver))

    def _wake(self, f: Flow) -> None:
        self._settle(f)
        kind = f._next_kind
        if kind == "done":
            f.done = f.size
            self._finish(f)
            return
        if kind == "milestone":
            eps = self._eps(f)
            while f._mi < len(f.milestones) and f.milestones[f._mi] <= f.done + eps:
                f._mi += 1
                if f.on_milestone is not None:
                    f.on_milestone(f, f._mi - 1)
        elif kind == "catchup":
            f.tailing = True
            for link in f.links:
                self._dirty[link] = None
        self._schedule(f)

    def _finish(self, f: Flow) -> None:
        self._settle(f)
        f.finished = True
        f.ver += 1
        if self._active.pop(f.fid, None) is not None:
            load = self._load
            for link, (j, w) in zip(f.links, f.wids, strict=True):
                del link.flows[f.fid]
                load[j] = load[j] - w * f.rate if link.flows else 0.0
                self._dirty[link] = None
        eps = self._eps(f)
        while f._mi < len(f.milestones) and f.milestones[f._mi] <= f.size + eps:
            f._mi += 1
            if f.on_milestone is not None:
                f.on_milestone(f, f._mi - 1)
        for g in f.followers:  # free to go at their own pace now
            if not g.finished:
                self._settle(g)
                g.tailing = False
                g.leader = None
                for link in g.links:
                    self._dirty[link] = None
                self._schedule(g)
        f.followers = []
        if f.on_done is not None:
            f.on_done(f)

    def _reallocate(self) -> None:
        if not self._dirty:
            return
        self.reallocations += 1
        if self.exact:
            for _ in range(len(self._active) + 2):  # followers' limits follow their leaders
                self._dirty = {}
                flows = list(self._active.values())
                rates, froze, _ = self._rates(flows, None)
                if not self._apply(flows, rates, froze):
                    break
            self._dirty = {}
            return
        while self._dirty:  # again only when a leader moved (its followers' limits did)
            region, self._dirty = self._dirty, {}
            while True:
                flows = list({fid: f for link in region for fid, f in link.flows.items()}.values())
                rates, froze, grow = self._rates(flows, region)
                if not grow:
                    break
                region.update(grow)
            self._apply(flows, rates, froze)

    def _rates(
        self, flows: list[Flow], region: dict[Link, None] | None
    ) -> tuple[list[float], list[Link | None], dict[Link, None]]:
        """Max-min rates of ``flows`` (all the flows of the ``region``'s links; every active
        flow when None) against what the flows outside leave of the links they cross; the link
        that held each one down; and the links outside the region that must join it (see
        below)."""
        self.refilled += len(flows)
        self._stamp += 1
        stamp = self._stamp
        seen, cross, old = self._seen, self._cross, self._old_load
        # The links the flows cross, how many of the flows cross each, and their old load.
        touched: list[int] = []
        limits: list[float] = []
        for f in flows:
            r = f.rate
            for j, w in f.wids:
                if seen[j] != stamp:
                    seen[j] = stamp
                    touched.append(j)
                    cross[j] = 1
                    old[j] = w * r
                else:
                    cross[j] += 1
                    old[j] += w * r
            limits.append(f.limit() if f.tailing else f.cap)
        resid, cap, links = self._resid, self._cap, self._links
        scratch = (self._weight, self._frozen_load, self._members)
        if region is None:
            for j in touched:
                resid[j] = cap[j]
            rates, froze_j = _fill([f.wids for f in flows], limits, touched, resid, *scratch)
            return rates, [links[j] if j >= 0 else None for j in froze_j], {}
        # What the flows outside leave of each link. A link outside the region crossed by one
        # refilled flow only is a limit on that flow; the others are filled over.
        in_region = self._in_region
        for link in region:
            in_region[link.lid] = stamp
        loads = self._load
        shared: list[int] = []
        for j in touched:
            if in_region[j] == stamp:
                resid[j] = cap[j]
                shared.append(j)
            else:
                resid[j] = cap[j] - loads[j] + old[j]
                if cross[j] > 1:
                    shared.append(j)
        paths: list[Sequence[tuple[int, float]]] = []
        limited_by: list[int] = []
        for i, f in enumerate(flows):
            limit_j = -1
            folded = False
            for j, w in f.wids:
                if cross[j] == 1 and in_region[j] != stamp:
                    folded = True
                    free = resid[j] / w
                    if free < 0.0:
                        free = 0.0
                    if free < limits[i]:
                        limits[i] = free
                        limit_j = j
            if folded:
                paths.append([(j, w) for j, w in f.wids if cross[j] > 1 or in_region[j] == stamp])
            else:
                paths.append(f.wids)
            limited_by.append(limit_j)
        rates, froze_j = _fill(paths, limits, shared, resid, *scratch)
        froze: list[Link | None] = []
        for i, j in enumerate(froze_j):
            if j < 0 and limited_by[i] >= 0 and rates[i] >= limits[i]:
                j = limited_by[i]
            froze.append(links[j] if j >= 0 else None)
        # The links outside that a refilled flow slowed down on, or that held one down, must
        # still be max-min fair: full if a flow is held down there, and then that flow among
        # the fastest on it. Where not, the link joins the region. (A flow that sped up on a
        # link that did not hold it down only used capacity nobody there was held short of.)
        tol = self.tolerance
        check: dict[Link, None] = {}
        for f, r, by in zip(flows, rates, froze, strict=True):
            if f.rate - r > tol * f.bcap:
                for link in f.links:
                    if link not in region:
                        check[link] = None
            if by is not None and by not in region:
                check[by] = None
        grow: dict[Link, None] = {}
        if not check:
            return rates, froze, grow
        new = {f.fid: (r, by) for f, r, by in zip(flows, rates, froze, strict=True)}
        for link in check:
            capacity = link.capacity
            used = capacity - resid[link.lid]  # by the flows outside
            top, low = 0.0, INF  # the fastest flow; the slowest it holds down
            for g in link.flows.values():
                x = new.get(g.fid)
                if x is None:
                    rate, by = g.rate, g.bneck
                else:
                    rate, by = x
                    used += rate * (1.0 if g.weights is None else g.weights[g.links.index(link)])
                if rate > top:
                    top = rate
                if by is link and rate < low:
                    low = rate
            slack = tol * capacity
            if low < INF and (used < capacity - slack or low < top - slack):
                grow[link] = None
        return rates, froze, grow

    def _apply(self, flows: list[Flow], rates: list[float], froze: list[Link | None]) -> bool:
        """Give ``flows`` their new ``rates`` (and bottlenecks); True if a leader's rate moved
        (its tailing followers are then marked for another recomputation)."""
        leaders_moved = False
        load = self._load
        for f, r, by in zip(flows, rates, froze, strict=True):
            f.bneck = by
            old = f.rate
            if r == old:
                continue
            self._settle(f)
            f.rate = r
            for j, w in f.wids:
                load[j] += w * (r - old)
            self._schedule(f)
            if f.followers:
                leaders_moved = True
                for g in f.followers:
                    if not g.finished:
                        self._settle(g)
                        self._schedule(g)  # its catch-up time moved
                        if g.tailing:
                            for link in g.links:
                                self._dirty[link] = None
        return leaders_moved


# -- the fleet's hardware --------------------------------------------------------------------

MiB = 1 << 20
SHA_NI_HASH_RATE = 1.7e9  # sha256 on one core with SHA extensions (B/s)
PLAIN_HASH_RATE = 390e6  # without them (this project's 2-core VM before SHA-NI, openssl speed)


@dataclass(frozen=True)
class FleetParams:
    """The nodes, their links and costs, and the blobs every node wants at time 0.

    Rates are bytes/s; ``None`` means unlimited. ``nic_rate`` is each node's NIC, the same up
    and down. What a node can take in is also bounded by ``disk_rate`` and by ``hash_cores``
    cores hashing at ``hash_rate`` each, and one stream (a whole blob, or one piece) is hashed on
    one core: at most ``hash_rate``. Traffic from the upstream crosses the node's NIC, unless
    ``wan_rate`` gives every node a separate path from the upstream (the network-namespace test
    bed: a shaped uplink per node, the LAN apart). ``upstream_rate`` bounds what the upstream
    registry sends in all. ``shared_cpus`` (test bed: every node on one machine) adds one CPU
    link of that many cores that every transfer uses, ``cpu_recv_per_byte`` (the receiver) plus
    ``cpu_send_per_byte`` (the sender) core-seconds per byte.

    Per-request costs (seconds before the first byte moves): ``request_latency`` for a GET to
    a peer, ``tracker_latency`` for asking the home who holds what, ``upstream_latency`` for the
    home's first byte from the registry (token, redirect, first byte).
    """

    nodes: int
    blob_sizes: tuple[int, ...]
    nic_rate: float | None
    upstream_rate: float | None = None
    wan_rate: float | None = None
    hash_rate: float = SHA_NI_HASH_RATE
    hash_cores: int = 4
    disk_rate: float | None = 4e9
    request_latency: float = 0.002
    tracker_latency: float = 0.002
    upstream_latency: float = 0.1
    shared_cpus: float | None = None
    cpu_recv_per_byte: float = 0.0
    cpu_send_per_byte: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError("a fleet needs at least one node")
        if not self.blob_sizes or any(s <= 0 for s in self.blob_sizes):
            raise ValueError("every blob needs a positive size")
        for name in ("nic_rate", "upstream_rate", "wan_rate", "disk_rate", "shared_cpus"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None")
        if not self.hash_rate > 0 or self.hash_cores < 1:
            raise ValueError("hash_rate must be positive and hash_cores at least 1")
        if min(self.request_latency, self.tracker_latency, self.upstream_latency) < 0:
            raise ValueError("latencies cannot be negative")

    @property
    def size(self) -> int:
        return sum(self.blob_sizes)

    @property
    def ingest_rate(self) -> float:
        """What one node can take in, NIC aside: disk writes and hashing on all its cores."""
        return min(self.disk_rate or INF, self.hash_cores * self.hash_rate)

    @property
    def floor_s(self) -> float:
        """No node can hold every byte sooner: the size over the slowest of the first hop's
        rates (upstream, the node's link from it, its ingest, one core's hash per blob)."""
        first_hop = min(
            self.upstream_rate or INF,
            self.wan_rate or self.nic_rate or INF,
            self.ingest_rate,
        )
        per_blob = max(s / min(first_hop, self.hash_rate) for s in self.blob_sizes)
        return max(self.size / first_hop, per_blob)


class Fleet:
    """The links of :class:`FleetParams`' nodes and the paths a transfer takes over them."""

    def __init__(self, params: FleetParams, hash_passes: int = 1) -> None:
        """``hash_passes``: how many times a node hashes each byte it takes in (2: pieces
        against the piece list, and the whole blob against its digest)."""
        p = params
        self.params = p
        n = p.nodes
        nic = p.nic_rate or INF
        self.upstream = Link("upstream", p.upstream_rate) if p.upstream_rate else None
        self.cpu = Link("cpu", p.shared_cpus) if p.shared_cpus else None
        self.up: list[Link | None] = [Link(f"up{i}", nic) if nic < INF else None for i in range(n)]
        ingest = min(p.disk_rate or INF, p.hash_cores * p.hash_rate / hash_passes)
        if p.wan_rate is None:  # upstream and LAN traffic share the NIC: one inbound link
            rx = min(nic, ingest)
            self.rx: list[Link | None] = [
                Link(f"rx{i}", rx) if rx < INF else None for i in range(n)
            ]
            self.lan_rx: list[Link | None] = [None] * n
            self.wan: list[Link | None] = [None] * n
        else:
            self.rx = [Link(f"ingest{i}", ingest) if ingest < INF else None for i in range(n)]
            self.lan_rx = [Link(f"lan{i}", nic) if nic < INF else None for i in range(n)]
            self.wan = [Link(f"wan{i}", p.wan_rate) for i in range(n)]

    def _path(
        self, links: Sequence[Link | None], send_cost: float
    ) -> tuple[tuple[Link, ...], tuple[float, ...] | None]:
        kept = tuple(link for link in links if link is not None)
        if self.cpu is None:
            return kept, None
        return (*kept, self.cpu), (*([1.0] * len(kept)), self.params.cpu_recv_per_byte + send_cost)

    def from_upstream(self, node: int) -> tuple[tuple[Link, ...], tuple[float, ...] | None]:
        """Links (and weights) of a transfer from the upstream registry to ``node``."""
        # The registry's sending is on the same machine in the test bed: it costs as a peer's.
        return self._path(
            (self.upstream, self.wan[node], self.rx[node]), self.params.cpu_send_per_byte
        )

    def between(self, src: int, dst: int) -> tuple[tuple[Link, ...], tuple[float, ...] | None]:
        """Links (and weights) of a transfer from node ``src`` to node ``dst``."""
        return self._path(
            (self.up[src], self.lan_rx[dst], self.rx[dst]), self.params.cpu_send_per_byte
        )
