"""What the fetcher reports. ``warmstart.agent.metrics.AgentMetrics`` fits this protocol."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Protocol


class FetchMetrics(Protocol):
    def fetched(self, source: str, nbytes: int) -> None:
        """``nbytes`` more arrived from ``source`` ("peer" or "upstream") into the store."""
        ...

    def upstream_error(self, registry: str, kind: str) -> None:
        """A request to an upstream failed; ``kind`` as in :class:`~.source.SourceError`."""
        ...

    def peer_error(self, kind: str) -> None: ...

    def transfer(self, source: str) -> AbstractContextManager[None]:
        """Held while a transfer from ``source`` runs (a gauge of transfers in flight)."""
        ...


class NullMetrics:
    def fetched(self, source: str, nbytes: int) -> None:
        pass

    def upstream_error(self, registry: str, kind: str) -> None:
        pass

    def peer_error(self, kind: str) -> None:
        pass

    @contextlib.contextmanager
    def transfer(self, source: str) -> Iterator[None]:
        yield


__all__ = ["FetchMetrics", "NullMetrics"]
