"""Small in-memory caches with an injected clock: a TTL cache (that can keep stale entries
for stale-if-error answers) and a bounded LRU map. Pure: no I/O, no global state."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class Cached(Generic[V]):
    value: V
    age: float  # seconds since it was stored
    fresh: bool  # younger than its TTL


class TTLCache(Generic[K, V]):
    """Entries live ``ttl`` seconds (per entry if given to :meth:`put`); an expired entry is
    still returned by :meth:`get` (``fresh=False``) for ``keep_stale`` more seconds, then
    dropped. At most ``max_entries``, the least recently used go first."""

    def __init__(
        self,
        ttl: float,
        *,
        keep_stale: float = 0.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl < 0 or keep_stale < 0 or max_entries < 1:
            raise ValueError("ttl and keep_stale must be >= 0 and max_entries >= 1")
        self.ttl = ttl
        self.keep_stale = keep_stale
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, tuple[V, float, float]] = OrderedDict()

    def get(self, key: K) -> Cached[V] | None:
        """The entry, fresh or stale (within ``keep_stale``), or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, stored, ttl = entry
        age = self._clock() - stored
        if age > ttl + self.keep_stale:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return Cached(value, age, age <= ttl)

    def get_fresh(self, key: K) -> V | None:
        hit = self.get(key)
        return hit.value if hit is not None and hit.fresh else None

    def put(self, key: K, value: V, ttl: float | None = None) -> None:
        self._entries[key] = (value, self._clock(), self.ttl if ttl is None else ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def pop(self, key: K) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries


class LRUMap(Generic[K, V]):
    """A dict that forgets its least recently used entries beyond ``max_entries``."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def pop(self, key: K) -> V | None:
        return self._entries.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def values(self) -> list[V]:
        return list(self._entries.values())


__all__ = ["Cached", "LRUMap", "TTLCache"]
