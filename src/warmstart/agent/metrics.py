"""Prometheus metrics of one agent, in a registry of its own (never the global default).

The HTTP layer counts requests, bytes served and cache hits; the Fetcher is handed the same
:class:`AgentMetrics` and counts what only it sees (upstream and peer errors, transfers in flight,
bytes fetched). Cache hits are counted once, by the server, from each answer's ``source``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

SOURCES = ("local", "peer", "upstream")
HIT_SOURCES = frozenset({"local", "cache"})

M = TypeVar("M", Counter, Gauge)


def _declare(
    kind: type[M], registry: CollectorRegistry, name: str, doc: str, labels: Sequence[str] = ()
) -> M:
    """A ``kind`` metric with label names ``labels``, in ``registry``."""
    return kind(name, doc, labels, registry=registry)


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        counter = partial(_declare, Counter, self.registry)
        gauge = partial(_declare, Gauge, self.registry)
        self.requests = counter(
            "warmstart_agent_requests",
            "HTTP requests answered, by route, method and status",
            ("route", "method", "status"),
        )
        self.served_bytes = counter(
            "warmstart_agent_served_bytes",
            "Blob and manifest bytes sent to clients, by where they came from",
            ("source",),
        )
        self.peer_served_bytes = counter(
            "warmstart_agent_peer_served_bytes",
            "Blob bytes sent to peer agents, by kind (blob: a whole-blob request, also a resumed "
            "one; piece: a piece request)",
            ("kind",),
        )
        self.piece_uploads_refused = counter(
            "warmstart_agent_piece_uploads_refused",
            "Piece requests answered 503: every upload slot was busy, or (the home) the piece "
            "was sent already and another node holds it",
        )
        self.fetched_bytes = counter(
            "warmstart_agent_fetched_bytes",
            "Bytes this node fetched from other places (peer, upstream)",
            ("source",),
        )
        self.cache_hits = counter(
            "warmstart_agent_cache_hits",
            "Requests answered from this node's store, by kind (manifest, blob)",
            ("kind",),
        )
        self.cache_misses = counter(
            "warmstart_agent_cache_misses",
            "Requests that needed a peer or the upstream, by kind (manifest, blob)",
            ("kind",),
        )
        self.cache_hit_ratio = gauge(
            "warmstart_agent_cache_hit_ratio",
            "Hits / (hits + misses) since start (0 before any request)",
        )
        self.cache_hit_ratio.set_function(self._ratio)
        self.transfers_in_flight = gauge(
            "warmstart_agent_transfers_in_flight",
            "Transfers (fetches from peers or upstream) running now, by source",
            ("source",),
        )
        self.responses_in_flight = gauge(
            "warmstart_agent_responses_in_flight", "Blob bodies being sent to clients now"
        )
        self.store_usage = gauge(
            "warmstart_agent_store_usage_bytes", "Bytes of complete blobs in the store"
        )
        self.store_shared = gauge(
            "warmstart_agent_store_shared_bytes",
            "Bytes of stored blobs that containerd's content store links too (one copy on disk;"
            " not counted against the budget)",
        )
        self.store_budget = gauge(
            "warmstart_agent_store_budget_bytes", "Disk budget of the store (0: unlimited)"
        )
        self.upstream_errors = counter(
            "warmstart_agent_upstream_errors",
            "Failed requests to upstream registries, by registry and kind",
            ("registry", "kind"),
        )
        self.peer_errors = counter(
            "warmstart_agent_peer_errors", "Failed requests to peer agents, by kind", ("kind",)
        )
        self.aborted_responses = counter(
            "warmstart_agent_aborted_responses",
            "Responses cut short because a transfer failed after the headers were sent",
        )
        self.linked_blobs = counter(
            "warmstart_agent_linked_blobs",
            "Blobs placed in containerd's content store without a transfer, by outcome "
            "(linked, copied)",
            ("outcome",),
        )
        self.linked_bytes = counter(
            "warmstart_agent_linked_bytes",
            "Bytes of the blobs placed in containerd's content store without a transfer",
        )
        self.models_materialised = counter(
            "warmstart_agent_models_materialised",
            "Hot model pre-warms, by outcome (built: the directory was made now; present: it "
            "was there)",
            ("outcome",),
        )
        self.model_bytes = counter(
            "warmstart_agent_model_bytes",
            "Bytes of models materialised, by how (linked: hard links to stored blobs, no copy; "
            "extracted: files written from tar layers)",
            ("how",),
        )
        self.store_model_extracted = gauge(
            "warmstart_agent_store_model_extracted_bytes",
            "Bytes of files extracted from tar layers into model directories (counted against "
            "the budget beside the blobs)",
        )
        self.peers = gauge(
            "warmstart_peers", "Peer agents this agent uses now (itself not counted)"
        )
        self.peers_changed = gauge(
            "warmstart_peers_changed_timestamp_seconds",
            "When the peer list last changed (seconds since the epoch; 0: never since start)",
        )
        self.peers_from_kubernetes = gauge(
            "warmstart_peers_from_kubernetes",
            "1 when the peer list follows the agents' EndpointSlices in Kubernetes, else 0",
        )
        self._hits = 0
        self._misses = 0
        for kind in ("blob", "piece"):
            self.peer_served_bytes.labels(kind)
        for source in SOURCES:  # export zeros, so rates work from the first scrape
            self.served_bytes.labels(source)
            self.transfers_in_flight.labels(source)
        for outcome in ("built", "present"):
            self.models_materialised.labels(outcome)
        for how in ("linked", "extracted"):
            self.model_bytes.labels(how)
        for kind in ("manifest", "blob"):
            self.cache_hits.labels(kind)
            self.cache_misses.labels(kind)

    # -- what the server records -----------------------------------------------------------

    def _ratio(self) -> float:
        total = self._hits + self._misses
        return self._hits / total if total else 0.0

    def request(self, route: str, method: str, status: int | str) -> None:
        self.requests.labels(route, method, str(status)).inc()

    def served(self, source: str, nbytes: int) -> None:
        if nbytes > 0:
            self.served_bytes.labels(source).inc(nbytes)

    def peer_served(self, kind: str, nbytes: int) -> None:
        if nbytes > 0:
            self.peer_served_bytes.labels(kind).inc(nbytes)

    def lookup(self, kind: str, source: str) -> None:
        """One manifest or blob answered from ``source``: a hit if that is this node."""
        if source in HIT_SOURCES:
            self._hits += 1
            self.cache_hits.labels(kind).inc()
        else:
            self._misses += 1
            self.cache_misses.labels(kind).inc()

    def set_store(
        self, usage: int, budget: int | None, shared: int = 0, model_extracted: int = 0
    ) -> None:
        self.store_usage.set(usage)
        self.store_shared.set(shared)
        self.store_budget.set(budget or 0)
        self.store_model_extracted.set(model_extracted)

    def materialised(self, built: bool, linked_bytes: int, extracted_bytes: int) -> None:
        """One hot pre-warm of a model: its directory built now, or found."""
        self.models_materialised.labels("built" if built else "present").inc()
        if built:
            self.model_bytes.labels("linked").inc(linked_bytes)
            self.model_bytes.labels("extracted").inc(extracted_bytes)

    def set_peers(self, count: int, changed_at: float | None) -> None:
        self.peers.set(count)
        self.peers_changed.set(changed_at or 0)

    def linked(self, outcome: str, nbytes: int) -> None:
        """One blob placed in containerd's content store (a hard link or a copy)."""
        if outcome != "present":
            self.linked_blobs.labels(str(outcome)).inc()
            self.linked_bytes.inc(nbytes)

    # -- what the Fetcher records ----------------------------------------------------------

    def fetched(self, source: str, nbytes: int) -> None:
        if nbytes > 0:
            self.fetched_bytes.labels(source).inc(nbytes)

    def upstream_error(self, registry: str, kind: str) -> None:
        """``kind``: a short fixed word such as ``auth``, ``not_found``, ``5xx``, ``network``."""
        self.upstream_errors.labels(registry, kind).inc()

    def peer_error(self, kind: str) -> None:
        self.peer_errors.labels(kind).inc()

    @contextmanager
    def transfer(self, source: str) -> Iterator[None]:
        """``with metrics.transfer("upstream"): ...`` counts a transfer in flight."""
        gauge = self.transfers_in_flight.labels(source)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    # -- exposition ------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
