"""Wire a :class:`TieredFetcher` to the real network: the upstream registries and peers."""

from __future__ import annotations

from warmstart.fetch.config import FetcherConfig
from warmstart.fetch.metrics import FetchMetrics
from warmstart.fetch.peer_ring import PeerView
from warmstart.fetch.peer_source import PeerClient
from warmstart.fetch.tiered import TieredFetcher
from warmstart.fetch.upstream import UpstreamSource
from warmstart.store import ContentStore


def build_fetcher(
    config: FetcherConfig,
    store: ContentStore,
    *,
    peers: PeerView | None = None,
    metrics: FetchMetrics | None = None,
    peer_ca_file: str | None = None,
) -> TieredFetcher:
    """A fetcher over ``config.upstreams`` and the peers in ``peers`` (read on every request,
    so replacing that list at run time takes effect at once). ``await fetcher.aclose()``
    closes the HTTP clients it made; the store stays open."""
    upstream = UpstreamSource(
        config.upstreams,
        connect_timeout=config.upstream_connect_timeout,
        read_timeout=config.upstream_read_timeout,
        max_attempts=config.upstream_max_attempts,
    )
    peer_client = PeerClient(
        node_id=config.node_id,
        token=config.peer_token,
        connect_timeout=config.peer_timeout,
        response_timeout=config.peer_response_timeout,
        read_timeout=config.peer_read_timeout,
        ca_file=peer_ca_file,
    )
    return TieredFetcher(
        store,
        config,
        upstream,
        peers=peers,
        peer_source=peer_client.source,
        metrics=metrics,
        on_close=[upstream.aclose, peer_client.aclose],
    )


__all__ = ["build_fetcher"]
