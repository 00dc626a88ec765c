"""Rendezvous (highest-random-weight) hashing: which node is a digest's home.

Every node scores ``hash(node, key)`` and the highest score wins. All agents compute the same
answer from the same node list, with no coordination. When a node joins, it takes over only the
keys it now scores highest on; when one leaves, only its keys move, each to the node that scored
second for it. The ranking beyond the winner is the fallback order (the previous home of a key
that moved to a new node is ranked right after it).

Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from urllib.parse import urlsplit


def node_key(url: str) -> str:
    """The form of a node URL that takes part in hashing: ``HTTP://Host:5050/`` ->
    ``http://host:5050``. Every node must name the others the same way."""
    text = url.strip()
    parts = urlsplit(text)
    if parts.scheme and parts.netloc:
        return f"{parts.scheme.lower()}://{parts.netloc.lower()}"
    return text.rstrip("/").lower()


def score(node: str, key: str) -> int:
    """The weight of ``node`` for ``key``: the first 8 bytes of sha256(node NUL key)."""
    h = hashlib.sha256(node.encode() + b"\0" + key.encode()).digest()
    return int.from_bytes(h[:8], "big")


def rank(key: str, nodes: Iterable[str]) -> list[str]:
    """``nodes`` (deduplicated) best first for ``key``; ties (practically never) by name."""
    unique = set(nodes)
    return sorted(unique, key=lambda n: (-score(n, key), n))


def home(key: str, nodes: Iterable[str]) -> str:
    """The node with the highest weight for ``key``; ValueError if there are no nodes."""
    best: tuple[int, str] | None = None
    for node in nodes:
        candidate = (score(node, key), node)
        if best is None or candidate[0] > best[0] or (candidate[0] == best[0] and node < best[1]):
            best = candidate
    if best is None:
        raise ValueError("no nodes to choose a home from")
    return best[1]


__all__ = ["home", "node_key", "rank", "score"]
