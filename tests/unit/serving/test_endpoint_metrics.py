"""The endpoint's Prometheus metrics from a router snapshot and the controller's replicas."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from warmstart.serving.metrics import EndpointMetrics
from warmstart.serving.router import ReplicaSnapshot, RouterSnapshot, RouterTotals


def samples(metrics: EndpointMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def snapshot(*in_flight: tuple[str, int], queue: int = 0) -> RouterSnapshot:
    return RouterSnapshot(
        tuple(ReplicaSnapshot(rid, f"http://x/{rid}", "ready", n, 10, 0) for rid, n in in_flight),
        queue,
        RouterTotals(requests=42, errors=1, queue_timeouts=0, rejections=2, retries=3),
    )


def test_gauges_follow_the_latest_snapshot() -> None:
    m = EndpointMetrics("embed")
    m.update(
        snapshot(("embed-1", 4), ("embed-2", 1), queue=7),
        [("embed-1", "a", "ready"), ("embed-2", "b", "ready"), ("embed-3", "b", "starting")],
        desired=3,
    )
    got = samples(m)
    e = ("endpoint", "embed")
    assert (
        got[("warmstart_endpoint_replica_in_flight", (e, ("node", "a"), ("replica", "embed-1")))]
        == 4
    )
    assert (
        got[("warmstart_endpoint_replica_in_flight", (e, ("node", "b"), ("replica", "embed-2")))]
        == 1
    )
    assert got[("warmstart_endpoint_queue_length", (e,))] == 7
    assert got[("warmstart_endpoint_replicas", (e, ("state", "ready")))] == 2
    assert got[("warmstart_endpoint_replicas", (e, ("state", "starting")))] == 1
    assert got[("warmstart_endpoint_desired_replicas", (e,))] == 3
    assert got[("warmstart_endpoint_router_total", (e, ("kind", "rejections")))] == 2

    # A replica that left the router leaves the in-flight gauge too.
    m.update(snapshot(("embed-2", 0)), [("embed-2", "b", "ready")], desired=1)
    got = samples(m)
    assert not any(k[0].endswith("in_flight") and ("replica", "embed-1") in k[1] for k in got)
    assert got[("warmstart_endpoint_replicas", (e, ("state", "starting")))] == 0
