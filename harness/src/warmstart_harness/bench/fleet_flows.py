"""The simulator's links and flows, and their max-min fair rates by progressive filling (pure;
:mod:`warmstart_harness.bench.fleet_sim` describes the model and runs the events)."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from typing import Any

INF = math.inf
# A flow this close to its end (relative to its size) is done: float sums of rate x time.
DONE_EPS = 1e-9


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


def progressive_fill(
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
    rates, _ = progressive_fill(
        [[(index[link], w) for link, w in f.wlinks] for f in flows],
        limits,
        range(nl),
        [link.capacity for link in links.values()],
        [0.0] * nl,
        [0.0] * nl,
        [[] for _ in range(nl)],
    )
    return rates
