"""Who the peers are, which are down, and which node is a digest's home. Pure (clock injected).

The list of peers belongs to the agent (``warmstart.agent.peer_set.PeerSet``, replaced by
``PUT /peers``); the fetcher only reads it through :class:`PeerView`. :class:`PeerList` is a
minimal implementation for tests and embedding.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Protocol

from warmstart.fetch import rendezvous
from warmstart.oci import Digest


class PeerView(Protocol):
    """What the fetcher reads of the peer list: this node's URL and the other nodes' URLs."""

    @property
    def self_url(self) -> str | None: ...

    def others(self) -> tuple[str, ...]: ...


class PeerList:
    """A replaceable list of peer URLs (``self_url`` may be listed; :meth:`others` skips it)."""

    def __init__(self, self_url: str, urls: Iterable[str] = ()) -> None:
        self._self_url = rendezvous.node_key(self_url)
        self._urls: tuple[str, ...] = ()
        self.replace(urls)

    @property
    def self_url(self) -> str:
        return self._self_url

    @property
    def urls(self) -> tuple[str, ...]:
        return self._urls

    def replace(self, urls: Iterable[str]) -> None:
        seen: list[str] = []
        for url in urls:
            key = rendezvous.node_key(url)
            if key and key not in seen:
                seen.append(key)
        self._urls = tuple(seen)

    def others(self) -> tuple[str, ...]:
        return tuple(u for u in self._urls if u != self._self_url)


class PeerHealth:
    """Peers that failed to answer are skipped for ``retry_after`` seconds."""

    def __init__(self, retry_after: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.retry_after = retry_after
        self._clock = clock
        self._down_until: dict[str, float] = {}

    def mark_down(self, url: str) -> None:
        self._down_until[rendezvous.node_key(url)] = self._clock() + self.retry_after

    def mark_up(self, url: str) -> None:
        self._down_until.pop(rendezvous.node_key(url), None)

    def is_down(self, url: str) -> bool:
        key = rendezvous.node_key(url)
        until = self._down_until.get(key)
        if until is None:
            return False
        if self._clock() >= until:
            del self._down_until[key]
            return False
        return True

    def down(self) -> list[str]:
        return sorted(u for u in list(self._down_until) if self.is_down(u))


class PeerRing:
    """Home nodes and fallback order of digests over the current peers plus this node."""

    def __init__(self, peers: PeerView, self_url: str, health: PeerHealth) -> None:
        self._peers = peers
        self.self_url = rendezvous.node_key(peers.self_url or self_url)
        self.health = health

    def nodes(self) -> list[str]:
        keys = {rendezvous.node_key(u) for u in self._peers.others()}
        keys.add(self.self_url)
        return sorted(keys)

    def ranked(self, digest: Digest) -> list[str]:
        """Every node (this one included), best home first."""
        return rendezvous.rank(str(digest), self.nodes())

    def nominal_home(self, digest: Digest) -> str:
        return rendezvous.home(str(digest), self.nodes())

    def home(self, digest: Digest) -> str:
        """The best-ranked node that is not marked down (this node is never down)."""
        for node in self.ranked(digest):
            if node == self.self_url or not self.health.is_down(node):
                return node
        return self.self_url

    def is_home(self, digest: Digest) -> bool:
        """This node is the digest's home, or stands in for a home that is down."""
        ranked = self.ranked(digest)
        if ranked[0] == self.self_url:
            return True
        for node in ranked:
            if node == self.self_url:
                return True
            if not self.health.is_down(node):
                return False
        return True

    def candidates(self, digest: Digest, exclude: Iterable[str], limit: int) -> list[str]:
        """Up to ``limit`` other live peers in rank order, leaving out ``exclude``."""
        skip = {rendezvous.node_key(u) for u in exclude} | {self.self_url}
        out: list[str] = []
        for node in self.ranked(digest):
            if len(out) >= limit:
                break
            if node in skip or self.health.is_down(node):
                continue
            out.append(node)
        return out


__all__ = ["PeerHealth", "PeerList", "PeerRing", "PeerView"]
