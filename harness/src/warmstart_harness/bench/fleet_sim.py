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
from collections.abc import Callable, Sequence
from typing import Any

from warmstart_harness.bench.fleet_flows import (
    DONE_EPS,
    INF,
    Flow,
    Link,
    progressive_fill,
)

_TIMER, _WAKE = 0, 1


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
        return DONE_EPS * f.size + 1e-6

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
            rates, froze_j = progressive_fill(
                [f.wids for f in flows], limits, touched, resid, *scratch
            )
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
        rates, froze_j = progressive_fill(paths, limits, shared, resid, *scratch)
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
