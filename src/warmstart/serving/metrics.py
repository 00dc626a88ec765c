"""Prometheus metrics of one endpoint, refreshed every second by ``warmstart serve``.

``GET /metrics`` on the router: in-flight requests per replica, the queue, replicas per state,
the desired count, the router's running totals (requests, errors, queue timeouts,
rejections, retries), and a histogram of request latency at the router (arrival to last byte,
queueing included) by status class.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from warmstart.serving.router import RouterSnapshot

REPLICA_STATES = ("starting", "ready", "stopping")
# seconds: an inference answer takes milliseconds; a request queued behind a cold start, minutes
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class EndpointMetrics:
    def __init__(self, endpoint: str) -> None:
        self.registry = CollectorRegistry()
        self.endpoint = endpoint
        self.in_flight = self._gauge(
            "warmstart_endpoint_replica_in_flight",
            "Requests in flight on a replica.",
            "replica",
            "node",
        )
        self.queue_length = self._gauge(
            "warmstart_endpoint_queue_length", "Requests waiting in the router for a replica."
        )
        self.replicas = self._gauge(
            "warmstart_endpoint_replicas", "Replicas by state (starting, ready, stopping).", "state"
        )
        self.desired = self._gauge(
            "warmstart_endpoint_desired_replicas", "The autoscaler's last decision."
        )
        self.totals = self._gauge(
            "warmstart_endpoint_router_total",
            "The router's running totals (requests, errors, queue_timeouts, rejections, retries).",
            "kind",
        )
        self.latency = Histogram(
            "warmstart_endpoint_request_seconds",
            "Requests through the router, arrival to last byte (queueing included), by status "
            "class (2xx, 4xx, 5xx).",
            ["endpoint", "code"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def _gauge(self, name: str, doc: str, *labels: str) -> Gauge:
        """A gauge labelled by endpoint and then ``labels``, in this endpoint's registry."""
        return Gauge(name, doc, ["endpoint", *labels], registry=self.registry)

    def observe_request(self, seconds: float, status: int) -> None:
        """The router's ``on_request_done``."""
        self.latency.labels(self.endpoint, f"{status // 100}xx").observe(seconds)

    def update(
        self,
        snapshot: RouterSnapshot,
        replica_states: Iterable[tuple[str, str, str]],
        desired: int,
    ) -> None:
        """``replica_states``: (replica id, node, state) of every replica the controller has."""
        e = self.endpoint
        self.in_flight.clear()
        states = list(replica_states)
        nodes: Mapping[str, str] = {rid: node for rid, node, _ in states}
        for r in snapshot.replicas:
            self.in_flight.labels(e, r.replica_id, nodes.get(r.replica_id, "")).set(r.in_flight)
        self.queue_length.labels(e).set(snapshot.queue_length)
        for state in REPLICA_STATES:
            self.replicas.labels(e, state).set(sum(1 for *_, s in states if s == state))
        self.desired.labels(e).set(desired)
        for kind, value in vars(snapshot.totals).items():
            self.totals.labels(e, kind).set(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)
