"""Prometheus metrics of one endpoint, refreshed every second by ``warmstart serve``.

``GET /metrics`` on the router: in-flight requests per replica, the queue, replicas per state,
the desired count, and the router's running totals (requests, errors, queue timeouts,
rejections, retries).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from warmstart.serving.router import RouterSnapshot

REPLICA_STATES = ("starting", "ready", "stopping")
CONTENT_TYPE = CONTENT_TYPE_LATEST


class EndpointMetrics:
    def __init__(self, endpoint: str) -> None:
        self.registry = CollectorRegistry()
        self.endpoint = endpoint
        labels = ["endpoint"]
        self.in_flight = Gauge(
            "warmstart_endpoint_replica_in_flight",
            "Requests in flight on a replica.",
            [*labels, "replica", "node"],
            registry=self.registry,
        )
        self.queue_length = Gauge(
            "warmstart_endpoint_queue_length",
            "Requests waiting in the router for a replica.",
            labels,
            registry=self.registry,
        )
        self.replicas = Gauge(
            "warmstart_endpoint_replicas",
            "Replicas by state (starting, ready, stopping).",
            [*labels, "state"],
            registry=self.registry,
        )
        self.desired = Gauge(
            "warmstart_endpoint_desired_replicas",
            "The autoscaler's last decision.",
            labels,
            registry=self.registry,
        )
        self.totals = Gauge(
            "warmstart_endpoint_router_total",
            "The router's running totals (requests, errors, queue_timeouts, rejections, retries).",
            [*labels, "kind"],
            registry=self.registry,
        )

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
