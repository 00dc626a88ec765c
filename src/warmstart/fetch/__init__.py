"""Where bytes come from: local store, peers, upstream; single-flight across the cluster.

``interfaces`` is the contract with the agent's HTTP layer; ``tiered.TieredFetcher`` implements it
over ``Source``s (``local``, ``peer``, ``upstream``; in-memory ones in ``memory``), asking
them in the order ``plan.plan_sources`` gives (run by ``run.PlanRunner``);
``build.build_fetcher`` wires one to the network from a :class:`FetcherConfig`. Big blobs
travel between nodes as pieces: ``pieces`` (the rules and the planner, pure), ``tracker``
(who holds what, and the wire format of ``POST /pieces``), ``swarm`` (one piece transfer).
Only ``peer_source``, ``upstream`` and ``build`` use aiohttp; the rest is logic tested with
tables.
"""

from __future__ import annotations

from warmstart.fetch.config import FetcherConfig, UpstreamSettings
from warmstart.fetch.metrics import FetchMetrics, NullMetrics
from warmstart.fetch.peer_ring import PeerHealth, PeerList, PeerRing, PeerView
from warmstart.fetch.tiered import FetcherStatus, TieredFetcher, TransferStatus

__all__ = [
    "FetchMetrics",
    "FetcherConfig",
    "FetcherStatus",
    "NullMetrics",
    "PeerHealth",
    "PeerList",
    "PeerRing",
    "PeerView",
    "TieredFetcher",
    "TransferStatus",
    "UpstreamSettings",
]
