from __future__ import annotations

import math
import statistics
from dataclasses import replace

import pytest

from warmstart_harness.bench.scaleout_types import DemandPoint, EndpointLoad, TimelinePoint
from warmstart_harness.bench.spike_metrics import (
    compare,
    latencies,
    offered_demand,
    outstanding_demand,
    paid_replicas,
    percentile,
    ratios_vs_baseline,
    replica_seconds,
    rolling_percentile,
    spike_metrics,
    time_to_capacity,
    versus_provisioned,
)

from .helpers import metrics, record, timeline


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 50, 5.0),
        ([1.0, 2.0], 50, 1.5),
        ([4.0, 1.0, 3.0, 2.0], 90, 3.7),
        ([4.0, 1.0, 3.0, 2.0], 0, 1.0),
        ([4.0, 1.0, 3.0, 2.0], 100, 4.0),
        (list(range(1, 101)), 99, 99.01),
        ([], 50, None),
    ],
)
def test_percentile(values, q, expected):
    assert percentile(values, q) == (None if expected is None else pytest.approx(expected))


def test_percentile_matches_the_inclusive_method():
    values = [0.3, 9.1, 2.2, 7.5, 1.1, 4.4, 8.8]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    assert [percentile(values, q) for q in (50, 90, 99)] == pytest.approx(
        [cuts[49], cuts[89], cuts[98]]
    )
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_latencies_only_of_200_answers():
    recs = [
        record(0, 0.1, 1.1),
        record(1, 1.0, 4.0, retries=1),
        record(2, 2.0, 3.0, 503),
        record(3, 3.0, None, None),
    ]
    assert latencies(recs) == pytest.approx([1.0, 3.0])


def test_offered_demand_integrates_service_times_per_bin():
    recs = [record(0, tokens=(1, 0)), record(1, tokens=(0, 1))]  # 2.5 s and 0.5 s of service
    service = {(1, 0): 2.5, (0, 1): 0.5}
    got = offered_demand(recs, lambda i, o: service[(i, o)])
    assert [p.t_s for p in got] == [0, 1, 2, 3]
    assert [p.slots for p in got] == pytest.approx([1.0, 1.5, 0.5, 0.0])
    half = offered_demand(recs, lambda i, o: service[(i, o)], bin_s=0.5)
    assert [p.slots for p in half][:3] == pytest.approx([1.0, 1.0, 2.0])


def test_outstanding_demand_counts_unanswered_requests_to_the_end():
    recs = [record(0, 0, 1.5), record(0.5, 0.5, None, None)]
    got = outstanding_demand(recs)
    assert [p.t_s for p in got] == [0, 1, 2]
    assert [p.slots for p in got] == pytest.approx([1.5, 1.0, 0.0])


FLAT_4 = [DemandPoint(0, 4.0)]  # 4 slots from t=0 on


@pytest.mark.parametrize(
    ("demand", "points", "burst", "hold", "until", "expected"),
    [
        # K=2: 1 replica = 2 slots, 2 replicas meet 4 slots
        (FLAT_4, [(0, 1), (10, 2), (30, 2)], 0, 0, None, 10.0),
        (FLAT_4, [(0, 1), (10, 1), (30, 1)], 0, 0, None, None),  # never meets
        (FLAT_4, [(0, 1), (10, 2), (12, 1), (15, 2), (30, 2)], 0, 0, None, 10.0),
        (FLAT_4, [(0, 1), (10, 2), (12, 1), (15, 2), (30, 2)], 0, 5, None, 15.0),  # dip
        (FLAT_4, [(0, 1), (10, 2), (12, 1), (15, 2), (18, 2)], 0, 5, None, None),  # hold unseen
        (FLAT_4, [(0, 2), (30, 2)], 5, 3, None, 0.0),  # already enough at the burst
        (FLAT_4, [(3, 2), (30, 2)], 0, 0, None, 3.0),  # nothing ready before the first point
        (
            [DemandPoint(0, 2), DemandPoint(10, 6), DemandPoint(20, 2)],
            [(0, 1), (15, 3), (40, 3)],
            10,
            2,
            None,
            5.0,
        ),
        # the trace ended at 20: demand 0 after it is met trivially unless until_s cuts it off
        ([DemandPoint(0, 4), DemandPoint(20, 0)], [(0, 1), (40, 1)], 0, 1, None, 20.0),
        ([DemandPoint(0, 4), DemandPoint(20, 0)], [(0, 1), (40, 1)], 0, 1, 20, None),
        (FLAT_4, [], 0, 0, None, None),
    ],
)
def test_time_to_capacity(demand, points, burst, hold, until, expected):
    got = time_to_capacity(demand, timeline(*points), 2, burst, hold, until)
    assert got == (None if expected is None else pytest.approx(expected))


def test_time_to_capacity_rejects_bad_parameters():
    with pytest.raises(ValueError):
        time_to_capacity(FLAT_4, timeline((0, 1)), 0, 0)
    with pytest.raises(ValueError):
        time_to_capacity(FLAT_4, timeline((0, 1)), 1, 0, hold_s=-1)


def test_spike_metrics_counts_and_percentiles():
    recs = [
        record(0, 0.0, 1.0, index=0),
        record(1, 1.2, 3.2, index=1),  # sent 0.2 s late
        record(2, 2.0, 6.0, retries=2, index=2),  # got past two 503s
        record(3, 3.0, 4.0, 503, retries=1, index=3),  # lost after a retry
        record(4, 4.0, 9.0, None, error="timeout after 5 s", index=4),  # lost
        replace(record(5, None, None, None, error="never sent", index=5), sent_s=None),
    ]
    m = spike_metrics(
        recs,
        timeline((0, 1), (5, 2), (12, 2)),
        FLAT_4,
        slots_per_replica=2,
        burst_start_s=1.0,
        hold_s=2.0,
    )
    assert (m.requests, m.ok, m.errors, m.lost, m.retries) == (6, 3, 4, 3, 3)
    assert (m.p50_s, m.p99_s, m.mean_s) == pytest.approx((2.0, 3.96, 7 / 3))
    assert m.duration_s == pytest.approx(9.0)
    assert m.throughput_rps == pytest.approx(3 / 9)
    assert m.max_send_lag_s == pytest.approx(0.2)
    assert (m.time_to_capacity_s, m.observed_s) == pytest.approx((4.0, 11.0))
    # no until_s: the cost is counted over the whole timeline, 1 x 5 s + 2 x 7 s
    assert (m.replica_seconds, m.cost_window_s) == pytest.approx((19.0, 12.0))
    cut = spike_metrics(
        recs,
        timeline((0, 1), (5, 2), (12, 2)),
        FLAT_4,
        slots_per_replica=2,
        burst_start_s=1.0,
        until_s=8.0,
    )
    assert (cut.replica_seconds, cut.cost_window_s) == pytest.approx((11.0, 8.0))


def test_spike_metrics_of_nothing_answered():
    m = spike_metrics([record(0, 0, 1, 503)], [], FLAT_4, slots_per_replica=1, burst_start_s=0)
    assert (m.ok, m.lost, m.p50_s, m.throughput_rps, m.time_to_capacity_s) == (
        0, 1, None, 0.0, None
    )  # fmt: skip
    assert m.replica_seconds is None  # no timeline: nothing observed, not "free"


def test_paid_replicas_are_every_replica_not_yet_stopped():
    assert paid_replicas(EndpointLoad(ready=2, starting=3, queue_length=9, in_flight=7)) == 5
    assert paid_replicas(TimelinePoint(1.0, ready=1, starting=0, stopping=1)) == 2


def points(*rows: tuple[float, int, int, int]) -> list[TimelinePoint]:
    """``(t, ready, starting, stopping)`` rows."""
    return [TimelinePoint(t, ready, starting, stopping=stop) for t, ready, starting, stop in rows]


@pytest.mark.parametrize(
    ("rows", "start", "end", "expected"),
    [
        # one replica for 10 s
        ([(0, 1, 0, 0)], 0, 10, 10.0),
        # starting counts from the decision: 1 ready, then +1 starting for 4 s, then 2 ready
        ([(0, 1, 0, 0), (2, 1, 1, 0), (6, 2, 0, 0)], 0, 10, 2 * 1 + 4 * 2 + 4 * 2),
        # a stopping replica is paid for until it is gone
        ([(0, 2, 0, 0), (5, 1, 0, 1), (7, 1, 0, 0)], 0, 10, 5 * 2 + 2 * 2 + 3 * 1),
        # nothing before the first point; the last point holds until the end
        ([(3, 2, 0, 0), (4, 4, 0, 0)], 0, 10, 1 * 2 + 6 * 4),
        # the window cuts both ends
        ([(0, 1, 0, 0), (2, 3, 0, 0), (8, 1, 0, 0)], 1, 9, 1 * 1 + 6 * 3 + 1 * 1),
        # points after the window's end do not count
        ([(0, 1, 0, 0), (12, 8, 0, 0)], 0, 10, 10.0),
        # an empty window, an empty timeline
        ([(0, 4, 0, 0)], 5, 5, 0.0),
        ([], 0, 10, 0.0),
        # max_replicas = 4 ready all along: 4 x the window
        ([(0.0, 4, 0, 0), (1.0, 4, 0, 0), (2.0, 4, 0, 0)], 0, 15, 60.0),
    ],
)
def test_replica_seconds(rows, start, end, expected):
    assert replica_seconds(points(*rows), end, start) == pytest.approx(expected)


def test_replica_seconds_rejects_bad_input():
    with pytest.raises(ValueError):
        replica_seconds(points((0, 1, 0, 0)), 1.0, 2.0)
    with pytest.raises(ValueError):
        replica_seconds(points((5, 1, 0, 0), (3, 1, 0, 0)), 10.0)


def test_rolling_percentile():
    points = [(0, 1.0), (1, 3.0), (2, 5.0), (10, 7.0)]
    got = rolling_percentile(points, window_s=2, q=50, step_s=1)
    assert got == [(0, 1.0), (1, 2.0), (2, 4.0), (3, 5.0), (10, 7.0)]
    assert rolling_percentile([], 1) == []
    with pytest.raises(ValueError):
        rolling_percentile(points, 0)


@pytest.mark.parametrize(
    ("base", "ours", "p50_reduction", "speedup", "lower_bound"),
    [
        (metrics(), metrics(p50_s=3.0, time_to_capacity_s=15.0), 0.7, 4.0, False),
        (metrics(), metrics(p50_s=12.0, time_to_capacity_s=None), -0.2, None, False),
        (
            metrics(time_to_capacity_s=None, observed_s=100.0),
            metrics(time_to_capacity_s=20.0),
            0.0,
            5.0,
            True,
        ),
        (metrics(p50_s=None), metrics(time_to_capacity_s=0.0), None, math.inf, False),
    ],
)
def test_compare_with_baseline(base, ours, p50_reduction, speedup, lower_bound):
    c = compare(base, ours, "warmstart")
    assert c.p50_reduction == (None if p50_reduction is None else pytest.approx(p50_reduction))
    assert c.time_to_capacity_speedup == (None if speedup is None else pytest.approx(speedup))
    assert c.ttc_lower_bound is lower_bound


def test_ratios_vs_baseline_for_a_set_of_modes():
    got = ratios_vs_baseline(
        {
            "baseline": metrics(),
            "registry-proxy": metrics(p50_s=8.0),
            "warmstart": metrics(p50_s=2.0),
        }
    )
    assert set(got) == {"registry-proxy", "warmstart"}
    assert got["warmstart"].p50_reduction == pytest.approx(0.8)
    assert got["registry-proxy"].p50_reduction == pytest.approx(0.2)
    assert ratios_vs_baseline({"warmstart": metrics()}) == {}


def test_versus_provisioned():
    got = versus_provisioned(
        {
            "provisioned": metrics(p50_s=2.0, p99_s=4.0, replica_seconds=400.0),
            "warmstart": metrics(p50_s=2.5, p99_s=10.0, replica_seconds=100.0),
            "baseline": metrics(p50_s=None, p99_s=None, replica_seconds=None),
        }
    )
    assert set(got) == {"provisioned", "warmstart", "baseline"}
    floor, ours, base = got["provisioned"], got["warmstart"], got["baseline"]
    assert (floor.cost_fraction, floor.p50_ratio, floor.p99_ratio) == (1.0, 1.0, 1.0)
    assert (ours.replica_seconds, ours.cost_fraction) == pytest.approx((100.0, 0.25))
    assert (ours.p50_ratio, ours.p99_ratio) == pytest.approx((1.25, 2.5))
    assert (base.cost_fraction, base.p50_ratio, base.p99_ratio) == (None, None, None)
    assert versus_provisioned({"warmstart": metrics(replica_seconds=1.0)}) == {}
    zero = versus_provisioned({"provisioned": metrics(replica_seconds=0.0), "w": metrics()})
    assert zero["w"].cost_fraction is None


def test_demand_replica_seconds_is_what_the_offered_load_needs():
    from warmstart_harness.bench.spike_metrics import demand_replica_seconds

    demand = [DemandPoint(0.0, 0.5), DemandPoint(1.0, 4.0), DemandPoint(2.0, 4.01),
              DemandPoint(3.0, 0.0)]  # fmt: skip
    # K = 4: 1 (at least one), 1, 2 (4.01 slots), 1 (idle: still one) and 1 for the second
    # after the last point; the window's end cuts the rest
    assert demand_replica_seconds(demand, 4, 5.0) == 1 + 1 + 2 + 1 + 1
    assert demand_replica_seconds(demand, 4, 2.5) == 1 + 1 + 1
    assert demand_replica_seconds(demand, 2, 4.0) == 1 + 2 + 3 + 1
    assert demand_replica_seconds(demand, 4, 4.0, min_replicas=0) == 1 + 1 + 2 + 0
    assert demand_replica_seconds([], 4, 10.0) == 10.0
    with pytest.raises(ValueError):
        demand_replica_seconds(demand, 0, 1.0)
