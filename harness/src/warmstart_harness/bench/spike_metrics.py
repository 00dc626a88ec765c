"""The spike scenario's numbers, computed from request records and a replica timeline (pure).

Conventions: times are seconds since the replay started. A *step series* (the replica timeline,
a demand series) holds each point's value from its ``t_s`` until the next point's; before its
first point the value is 0. Capacity is ``ready replicas x K`` request slots, where ``K`` is how
many requests one replica (one accelerator) serves at once.

Cost is counted in *replica-seconds*: a replica is paid for from the moment the controller
decides to start it (its node is provisioned for it; it is ``starting`` from then on, through
any wait, the pull, the unpack and the model load) until it is stopped (``stopping`` counts), so
the cost is the integral of ``starting + ready + stopping`` over the spike (see
:func:`replica_seconds`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from warmstart_harness.bench.scaleout_types import (
    BASELINE,
    PROVISIONED,
    DemandPoint,
    EndpointLoad,
    RequestRecord,
    SpikeMetrics,
    TimelinePoint,
)

ServiceTime = Callable[[int, int], float]  # (input_tokens, output_tokens) -> seconds
_EPS = 1e-9


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100), linear between closest ranks; None for no values.

    The same definition as numpy's default: rank ``q/100 * (n - 1)`` in the sorted values.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, not {q}")
    if not values:
        return None
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latencies(records: Iterable[RequestRecord]) -> list[float]:
    """Latencies (first send to final answer) of the requests answered 200."""
    return [r.latency_s for r in records if r.latency_s is not None]


def _binned(intervals: Iterable[tuple[float, float]], bin_s: float, end_s: float) -> list[float]:
    """Time-average count of open intervals ``[a, b)`` in each bin of ``[0, end_s)``."""
    bins = [0.0] * max(1, math.ceil(end_s / bin_s - _EPS))
    for a, b in intervals:
        a, b = max(a, 0.0), min(b, end_s)
        if b <= a:
            continue
        first, last = int(a // bin_s), min(int(b // bin_s), len(bins) - 1)
        for k in range(first, last + 1):
            overlap = min(b, (k + 1) * bin_s) - max(a, k * bin_s)
            if overlap > 0:
                bins[k] += overlap / bin_s
    return bins


def _series(bins: list[float], bin_s: float) -> list[DemandPoint]:
    points = [DemandPoint(k * bin_s, v) for k, v in enumerate(bins)]
    points.append(DemandPoint(len(bins) * bin_s, 0.0))  # nothing is demanded after the end
    return points


def offered_demand(
    records: Sequence[RequestRecord], service_s: ServiceTime, bin_s: float = 1.0
) -> list[DemandPoint]:
    """Slots the trace asks for: requests that would be in service if none ever waited.

    A request scheduled at ``a`` with service time ``s`` (from its token counts) occupies one
    slot over ``[a, a + s)``; each point is the time-average over ``[t, t + bin_s)``, i.e. the
    offered load in Erlangs. It depends only on the trace, so it is the same in every mode.
    """
    if bin_s <= 0:
        raise ValueError(f"bin_s must be > 0, not {bin_s}")
    spans = [
        (r.scheduled_s, r.scheduled_s + service_s(r.input_tokens, r.output_tokens)) for r in records
    ]
    end = max((b for _, b in spans), default=0.0)
    return _series(_binned(spans, bin_s, end), bin_s)


def outstanding_demand(records: Sequence[RequestRecord], bin_s: float = 1.0) -> list[DemandPoint]:
    """Requests sent and not yet answered (waiting in a queue or in service), per bin.

    A request that never finished counts until the last time any request finished or was due.
    """
    if bin_s <= 0:
        raise ValueError(f"bin_s must be > 0, not {bin_s}")
    ends = [r.done_s for r in records if r.done_s is not None]
    end = max([*ends, *(r.scheduled_s for r in records), 0.0])
    spans = [
        (r.sent_s, end if r.done_s is None else r.done_s) for r in records if r.sent_s is not None
    ]
    return _series(_binned(spans, bin_s, end), bin_s)


def _step_value(times: Sequence[float], values: Sequence[float], t: float) -> float:
    i = bisect.bisect_right(times, t + _EPS) - 1
    return values[i] if i >= 0 else 0.0


def time_to_capacity(
    demand: Sequence[DemandPoint],
    timeline: Sequence[TimelinePoint],
    slots_per_replica: int,
    burst_start_s: float,
    hold_s: float = 0.0,
    until_s: float | None = None,
) -> float | None:
    """Seconds from the burst's start until ready capacity meets demand and keeps meeting it.

    Capacity ``c(t) = K x ready`` and demand ``d(t)`` are step series (see the module). The
    answer is ``T - burst_start_s`` for the earliest ``T >= burst_start_s`` such that
    ``c(u) >= d(u)`` for every ``u`` in ``[T, T + hold_s)``; if capacity dips below demand
    before the hold is over, the clock restarts at the next instant capacity meets it again.
    The hold must lie within what was observed: up to the last timeline point (or ``until_s``
    if earlier). ``None`` if no such ``T`` exists (capacity never caught up in time).

    Note that demand from :func:`offered_demand` is 0 after the trace ends, so pass
    ``until_s`` (e.g. the burst's end) to not count a burst that simply went away.
    """
    if slots_per_replica < 1:
        raise ValueError(f"slots_per_replica must be >= 1, not {slots_per_replica}")
    if hold_s < 0:
        raise ValueError(f"hold_s must be >= 0, not {hold_s}")
    if not timeline:
        return None
    horizon = timeline[-1].t_s if until_s is None else min(until_s, timeline[-1].t_s)
    if horizon < burst_start_s + hold_s - _EPS:
        return None
    c_times = [p.t_s for p in timeline]
    c_values = [float(p.ready * slots_per_replica) for p in timeline]
    d_times = [p.t_s for p in demand]
    d_values = [p.slots for p in demand]
    edges = sorted(
        {burst_start_s, horizon} | {t for t in (*c_times, *d_times) if burst_start_s < t < horizon}
    )
    run_start: float | None = None
    for t, nxt in pairwise(edges):  # both series are constant on [t, nxt)
        if _step_value(c_times, c_values, t) + _EPS < _step_value(d_times, d_values, t):
            run_start = None
            continue
        run_start = t if run_start is None else run_start
        if nxt - run_start >= hold_s - _EPS:
            return run_start - burst_start_s
    return None


def paid_replicas(load: EndpointLoad) -> int:
    """Replicas paid for at one instant: every replica the controller has decided to start and
    not yet stopped (``starting``, ``ready`` or ``stopping``)."""
    return load.starting + load.ready + load.stopping


def replica_seconds(timeline: Sequence[TimelinePoint], end_s: float, start_s: float = 0.0) -> float:
    """The integral of :func:`paid_replicas` over ``[start_s, end_s)``, in replica-seconds.

    The timeline is a step series (see the module): each point's count holds from its ``t_s``
    until the next point's, the last one's until ``end_s``, and nothing is counted before the
    first point. The timeline is sampled (once a second in the spike), so the answer is exact
    for the series and off from the true integral by at most a sample interval per change of
    the count.
    """
    if end_s < start_s:
        raise ValueError(f"end_s ({end_s}) must be >= start_s ({start_s})")
    for a, b in pairwise(timeline):
        if b.t_s < a.t_s:
            raise ValueError(f"timeline not in time order at t = {b.t_s} (after {a.t_s})")
    if not timeline:
        return 0.0
    total = 0.0
    ends = [p.t_s for p in timeline[1:]] + [end_s]  # where each point's count stops
    for point, until in zip(timeline, ends, strict=True):
        begin, stop = max(point.t_s, start_s), min(until, end_s)
        if stop > begin:
            total += paid_replicas(point) * (stop - begin)
    return total


def spike_metrics(
    records: Sequence[RequestRecord],
    timeline: Sequence[TimelinePoint],
    demand: Sequence[DemandPoint],
    *,
    slots_per_replica: int,
    burst_start_s: float,
    hold_s: float = 0.0,
    until_s: float | None = None,
) -> SpikeMetrics:
    """Latency percentiles, errors, losses, throughput and time to capacity of one replay.

    ``errors`` counts requests that got any non-200 answer or failure (a 503 that a retry then
    got past included); ``lost`` counts requests whose final outcome is not a 200 answer.
    Throughput is 200 answers per second between the first due request and the last answer.
    Replica-seconds are counted over ``[0, until_s)`` (the whole timeline without ``until_s``):
    the same window in every mode when ``until_s`` is the plan's; None without a timeline.
    """
    lat = latencies(records)
    ends = [r.done_s for r in records if r.done_s is not None]
    first = min((r.scheduled_s for r in records), default=0.0)
    duration = max(0.0, max(ends, default=first) - first)
    ok = sum(1 for r in records if r.ok)
    lags = [r.sent_s - r.scheduled_s for r in records if r.sent_s is not None]
    horizon = timeline[-1].t_s if timeline else burst_start_s
    if until_s is not None:
        horizon = min(horizon, until_s)
    cost_window = until_s if until_s is not None else timeline[-1].t_s if timeline else 0.0
    return SpikeMetrics(
        requests=len(records),
        ok=ok,
        errors=sum(1 for r in records if not r.ok or r.retries > 0),
        lost=len(records) - ok,
        retries=sum(r.retries for r in records),
        p50_s=percentile(lat, 50),
        p90_s=percentile(lat, 90),
        p99_s=percentile(lat, 99),
        mean_s=sum(lat) / len(lat) if lat else None,
        throughput_rps=ok / duration if duration > 0 else 0.0,
        duration_s=duration,
        max_send_lag_s=max([*lags, 0.0]),
        slots_per_replica=slots_per_replica,
        burst_start_s=burst_start_s,
        hold_s=hold_s,
        time_to_capacity_s=time_to_capacity(
            demand, timeline, slots_per_replica, burst_start_s, hold_s, until_s
        ),
        observed_s=max(0.0, horizon - burst_start_s),
        replica_seconds=replica_seconds(timeline, cost_window) if timeline else None,
        cost_window_s=cost_window,
    )


def rolling_percentile(
    points: Sequence[tuple[float, float]],
    window_s: float,
    q: float = 50,
    step_s: float | None = None,
) -> list[tuple[float, float]]:
    """``(t, percentile)`` of the values whose time lies in ``[t - window_s/2, t + window_s/2)``.

    ``points`` are ``(time, value)``; ``t`` steps by ``step_s`` (default ``window_s / 4``) from
    the first time to the last; instants with no value in their window are left out.
    """
    if window_s <= 0:
        raise ValueError(f"window_s must be > 0, not {window_s}")
    step = window_s / 4 if step_s is None else step_s
    if step <= 0:
        raise ValueError(f"step_s must be > 0, not {step}")
    ordered = sorted(points)
    times = [t for t, _ in ordered]
    out: list[tuple[float, float]] = []
    if not ordered:
        return out
    k = 0
    while (t := times[0] + k * step) <= times[-1] + _EPS:
        lo = bisect.bisect_left(times, t - window_s / 2)
        hi = bisect.bisect_left(times, t + window_s / 2)
        value = percentile([v for _, v in ordered[lo:hi]], q)
        if value is not None:
            out.append((t, value))
        k += 1
    return out


@dataclass(frozen=True)
class SpikeComparison:
    """One mode against the baseline (higher is better for every field).

    ``*_reduction`` is ``1 - mode / baseline`` (0.6 = 60% lower); ``time_to_capacity_speedup``
    is ``baseline / mode``. When the baseline never reached capacity but the mode did, the
    speedup is a lower bound (``baseline observed span / mode``) and ``ttc_lower_bound`` is set.
    ``None``: not computable (no latencies; the mode never reached capacity).
    """

    mode: str
    p50_reduction: float | None
    p90_reduction: float | None
    p99_reduction: float | None
    time_to_capacity_speedup: float | None
    ttc_lower_bound: bool
    lost: int


def _reduction(base: float | None, ours: float | None) -> float | None:
    if base is None or ours is None or base <= 0:
        return None
    return 1 - ours / base


def _speedup(base: float, ours: float) -> float:
    if ours <= 0:
        return 1.0 if base <= 0 else math.inf
    return base / ours


def compare(baseline: SpikeMetrics, ours: SpikeMetrics, mode: str) -> SpikeComparison:
    """How ``ours`` did against ``baseline``."""
    base_ttc, our_ttc = baseline.time_to_capacity_s, ours.time_to_capacity_s
    lower_bound = False
    speedup: float | None = None
    if our_ttc is not None:
        if base_ttc is not None:
            speedup = _speedup(base_ttc, our_ttc)
        else:
            speedup, lower_bound = _speedup(baseline.observed_s, our_ttc), True
    return SpikeComparison(
        mode=mode,
        p50_reduction=_reduction(baseline.p50_s, ours.p50_s),
        p90_reduction=_reduction(baseline.p90_s, ours.p90_s),
        p99_reduction=_reduction(baseline.p99_s, ours.p99_s),
        time_to_capacity_speedup=speedup,
        ttc_lower_bound=lower_bound,
        lost=ours.lost,
    )


def ratios_vs_baseline(
    metrics: Mapping[str, SpikeMetrics], baseline: str = BASELINE
) -> dict[str, SpikeComparison]:
    """Every mode but the baseline compared with it; empty if the baseline was not run."""
    if baseline not in metrics:
        return {}
    base = metrics[baseline]
    return {mode: compare(base, m, mode) for mode, m in metrics.items() if mode != baseline}


@dataclass(frozen=True)
class CostComparison:
    """One spike run against the provisioned one (max_replicas ready from the start).

    ``cost_fraction`` is ``replica-seconds / provisioned's`` (0.4: 40 % of its cost);
    ``p50_ratio`` and ``p99_ratio`` are ``latency / provisioned's`` (1.2: 20 % above the
    floor). ``None``: not computable (no latencies or replica-seconds, or provisioned's is 0).
    """

    mode: str
    replica_seconds: float | None
    cost_fraction: float | None
    p50_ratio: float | None
    p99_ratio: float | None


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs <= 0:
        return None
    return ours / theirs


def versus_provisioned(
    metrics: Mapping[str, SpikeMetrics], provisioned: str = PROVISIONED
) -> dict[str, CostComparison]:
    """Every run (the provisioned one too) against the provisioned one; empty without it."""
    if provisioned not in metrics:
        return {}
    floor = metrics[provisioned]
    return {
        mode: CostComparison(
            mode=mode,
            replica_seconds=m.replica_seconds,
            cost_fraction=_ratio(m.replica_seconds, floor.replica_seconds),
            p50_ratio=_ratio(m.p50_s, floor.p50_s),
            p99_ratio=_ratio(m.p99_s, floor.p99_s),
        )
        for mode, m in metrics.items()
    }


def demand_replica_seconds(
    demand: Sequence[DemandPoint], slots_per_replica: int, end_s: float, min_replicas: int = 1
) -> float:
    """What the offered load itself asks for over ``[0, end_s)``: in each bin of ``demand``
    (offered slots, :func:`offered_demand`), ``max(min_replicas, ceil(slots / K))`` replicas.

    An autoscaler that never let a request wait for a slot paid at least this (replicas take
    time to start, and are paid while they do); one that pays less made requests queue. The
    spike's cost floor beside provisioned's ``max_replicas x window``.
    """
    if slots_per_replica < 1:
        raise ValueError(f"slots_per_replica must be >= 1, not {slots_per_replica}")
    total = 0.0
    ends = [p.t_s for p in demand[1:]] + [demand[-1].t_s + 1.0] if demand else []
    for point, until in zip(demand, ends, strict=True):
        a, b = max(point.t_s, 0.0), min(until, end_s)
        if b > a:
            needed = math.ceil(point.slots / slots_per_replica - 1e-9)
            total += max(min_replicas, needed) * (b - a)
    covered = ends[-1] if ends else 0.0
    if covered < end_s:  # no demand recorded there: the endpoint's floor still runs
        total += min_replicas * (end_s - max(covered, 0.0))
    return total
