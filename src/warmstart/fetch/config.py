"""Settings of the fetch layer, as plain dataclasses (the agent builds them from its TOML)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from warmstart.fetch.pieces import PIECE_MAX, PIECE_MIN, PIECE_THRESHOLD
from warmstart.registry.credentials import Credentials
from warmstart.registry.endpoints import canonical_registry


@dataclass(frozen=True)
class UpstreamSettings:
    """One registry the agent mirrors, under the name clients use for it (``?ns=``)."""

    url: str | None = None  # where its API is, e.g. "http://127.0.0.1:5000"; None: https://<name>
    credentials: Credentials | None = field(default=None, repr=False)
    ca_file: str | None = None
    insecure: bool = False  # plain HTTP (implied by an http:// url)
    shared: bool = False  # cluster-shared: cached content goes to every client unchecked

    def host(self, registry: str) -> str:
        """The ``host[:port]`` the registry client talks to."""
        if self.url is None:
            return canonical_registry(registry)
        netloc = urlsplit(self.url).netloc
        if not netloc:
            raise ValueError(f"upstream url {self.url!r} has no host")
        return canonical_registry(netloc)

    def is_plain_http(self) -> bool:
        return self.insecure or (self.url is not None and self.url.lower().startswith("http://"))


@dataclass(frozen=True)
class FetcherConfig:
    node_id: str  # sent to peers in X-Warmstart-Peer
    self_url: str  # how peers reach this agent (its advertised URL): part of the home hashing
    upstreams: Mapping[str, UpstreamSettings] = field(default_factory=dict)
    peer_token: str | None = field(default=None, repr=False)
    # Peers: connect timeout (a dead peer costs at most this), time to the answer's headers,
    # and the longest pause while reading a body.
    peer_timeout: float = 1.0
    peer_response_timeout: float = 10.0
    peer_read_timeout: float = 30.0
    peer_retry_after: float = 5.0  # a peer that did not answer is skipped this long
    max_peer_probes: int = 3  # other peers asked (HEAD, in parallel) whether they hold a blob
    tag_ttl: float = 10.0  # a tag -> digest answer is reused this long
    tag_keep_stale: float = 86400.0  # ... and served this much longer when the upstream fails
    privacy_ttl: float = 300.0  # how long "this repository needs credentials" is remembered
    grant_ttl: float = 60.0  # accepted credentials are remembered this long ...
    denial_ttl: float = 10.0  # ... refused ones this long
    upstream_connect_timeout: float = 10.0
    upstream_read_timeout: float = 60.0
    upstream_max_attempts: int = 6
    max_known_sizes: int = 100_000
    # Pieces (warmstart.fetch.pieces): blobs of at least piece_threshold bytes travel between
    # nodes as pieces of piece_min..piece_max bytes when the cluster has three nodes or more;
    # piece_downloads pieces are fetched at once.
    pieces: bool = True
    piece_threshold: int = PIECE_THRESHOLD
    piece_min: int = PIECE_MIN
    piece_max: int = PIECE_MAX
    piece_downloads: int = 4

    def __post_init__(self) -> None:
        canon = {canonical_registry(k): v for k, v in self.upstreams.items()}
        if len(canon) != len(self.upstreams):
            raise ValueError("a registry is configured twice (under two spellings)")
        object.__setattr__(self, "upstreams", canon)
        for name in ("peer_timeout", "peer_response_timeout", "peer_read_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.max_peer_probes < 0 or self.max_known_sizes < 1:
            raise ValueError("max_peer_probes must be >= 0 and max_known_sizes >= 1")
        if self.piece_min < 1 or self.piece_max < self.piece_min or self.piece_downloads < 1:
            raise ValueError("piece sizes must be 1 <= piece_min <= piece_max, downloads >= 1")
        if not self.self_url:
            raise ValueError("self_url (this agent's advertised URL) is required")

    @property
    def registries(self) -> frozenset[str]:
        return frozenset(self.upstreams)

    @property
    def shared(self) -> frozenset[str]:
        return frozenset(k for k, v in self.upstreams.items() if v.shared)


__all__ = ["FetcherConfig", "UpstreamSettings"]
