"""What the agent's handlers share: its parts, built in one phase before it serves
(:class:`AgentParts`), and the bookkeeping of the requests it answers (:class:`AgentState`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from warmstart.agent.api import NodeSetup, PeerDiscovery
from warmstart.agent.config import AgentConfig
from warmstart.agent.hooks import HotImages, Prewarmer
from warmstart.agent.import_grants import IMPORT_HEADER, ImportGrants
from warmstart.agent.linking import ImageLinker
from warmstart.agent.metrics import AgentMetrics
from warmstart.agent.peer_set import PeerSet
from warmstart.containerd.content_link import LinkSetup
from warmstart.fetch.interfaces import (
    PEER_HEADER,
    PEER_TOKEN_HEADER,
    ClientIdentity,
    Fetcher,
    PieceServer,
)
from warmstart.fetch.pieces import UploadSlots
from warmstart.store import ContentStore
from warmstart.store.pins import Pin


@dataclass(frozen=True)
class AgentParts:
    """What the agent is made of, all built before it serves (``warmstart.agent.app``).

    The optional parts are features this node may not have: no ``prewarmer`` (``/prewarm``
    answers 501), no ``hot`` (no containerd to ask), no ``linker`` (blobs are not linked into
    containerd), no ``node_setup`` (hosts.toml not managed), no ``peer_source`` (the peer list
    is static)."""

    config: AgentConfig
    peers: PeerSet
    metrics: AgentMetrics
    store: ContentStore
    fetcher: Fetcher
    grants: ImportGrants = field(default_factory=ImportGrants)
    prewarmer: Prewarmer | None = None
    hot: HotImages | None = None
    linker: ImageLinker | None = None  # links blobs into containerd's content store
    link_setup: LinkSetup | None = None
    node_setup: NodeSetup | None = None  # hosts.toml files and containerd's config_path
    # Where the peer list comes from: the running Kubernetes follower reports it.
    peer_source: Callable[[float | None], PeerDiscovery] | None = None

    def piece_server(self) -> PieceServer | None:
        """The fetcher's piece side, if it has one (the tiered fetcher does)."""
        return self.fetcher if isinstance(self.fetcher, PieceServer) else None


@dataclass(frozen=True)
class AgentState:
    """Everything the handlers share; one per application (no module-level state)."""

    parts: AgentParts
    # Piece requests served at once (more are answered 503 + Retry-After).
    uploads: UploadSlots
    # The tasks answering requests right now: a graceful stop waits for them, then cuts
    # those still running when the grace period ends.
    in_flight: set[asyncio.Task[Any]] = field(default_factory=set)
    # Pins taken by ``"pin": true`` pre-warms, by reference; released by POST /unpin.
    pins: dict[tuple[str, str], Pin] = field(default_factory=dict)  # (reference, holder)

    def cut_in_flight(self) -> int:
        """Cancel every request still being answered; how many there were."""
        tasks = [t for t in self.in_flight if not t.done()]
        for task in tasks:
            task.cancel()
        return len(tasks)


STATE = web.AppKey("warmstart_agent_state", AgentState)
# Which route answered, for the requests counter (a RequestKey where aiohttp has them).
_REQUEST_KEY = getattr(web, "RequestKey", None)
ROUTE: Any = _REQUEST_KEY("warmstart_route", str) if _REQUEST_KEY else "warmstart_route"


def state_of(request: web.Request) -> AgentState:
    return request.app[STATE]


def route_of(request: web.Request) -> str:
    """Which route answers ``request`` (what the handler set, else the route's name)."""
    route = request.get(ROUTE)
    if route is None:
        route = request.match_info.route.name or "other"
    return str(route)


def client_identity(request: web.Request) -> ClientIdentity:
    """Who asks: the identity an import grant stands for, else what the request presents."""
    h = request.headers
    granted = state_of(request).parts.grants.identity(h.get(IMPORT_HEADER))
    if granted is not None:
        return granted
    return ClientIdentity(
        authorization=h.get("Authorization"),
        peer=h.get(PEER_HEADER),
        peer_token=h.get(PEER_TOKEN_HEADER),
    )
