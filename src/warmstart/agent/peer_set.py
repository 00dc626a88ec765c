"""The cluster's peer agents, replaceable at run time (``PUT /peers``).

One :class:`PeerSet` is shared by the HTTP layer (which replaces the list) and the Fetcher
(which reads it for every request to pick a digest's home node). Reads are plain attribute
reads of an immutable tuple, so a reader never sees a half-updated list.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from warmstart.agent.config import normalize_peers

Listener = Callable[[tuple[str, ...]], None]


class PeerSet:
    """Peer agent base URLs (``http://host:port``), normalised, without duplicates.

    ``self_url`` is this agent's own advertised URL: it may appear in the list (every node can
    be given the same list); :meth:`others` leaves it out.
    """

    def __init__(self, urls: Iterable[str] = (), *, self_url: str | None = None) -> None:
        self.self_url = self_url.rstrip("/") if self_url else None
        self._urls: tuple[str, ...] = normalize_peers(list(urls))
        self._version = 0
        self.changed_at: float | None = None  # when replace() last ran (epoch seconds)
        self._listeners: list[Listener] = []

    @property
    def urls(self) -> tuple[str, ...]:
        """All peers, as configured (may include ``self_url``)."""
        return self._urls

    @property
    def version(self) -> int:
        """Incremented by every :meth:`replace` (cheap change detection for caches)."""
        return self._version

    def others(self) -> tuple[str, ...]:
        """The peers other than this agent."""
        return tuple(u for u in self._urls if u != self.self_url)

    def replace(self, urls: Iterable[str]) -> tuple[str, ...]:
        """Validate and install a new list; raise ValueError (list unchanged) if one is bad."""
        new = normalize_peers(list(urls))
        self._urls = new
        self._version += 1
        self.changed_at = time.time()
        for listener in list(self._listeners):
            listener(new)
        return new

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(urls)`` after every replace; returns an unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def __iter__(self) -> Iterator[str]:
        return iter(self._urls)

    def __len__(self) -> int:
        return len(self._urls)

    def __contains__(self, url: object) -> bool:
        return isinstance(url, str) and url.rstrip("/") in self._urls

    def __repr__(self) -> str:
        return f"PeerSet({list(self._urls)!r}, self_url={self.self_url!r})"
