"""The router's pure choice: least outstanding requests, ties broken round-robin.

No clock, no I/O: the router passes what it knows about its ready replicas and the order of the
replica it chose last; the chooser answers which replica gets the next request (or none, when every
candidate is at the per-replica concurrency cap).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    """A ready replica as the chooser sees it.

    ``order`` is a number fixed when the replica was registered (unique, increasing); it gives the
    round-robin its ring, which stays stable while replicas come and go.
    """

    replica_id: str
    order: int
    in_flight: int


def has_capacity(candidate: Candidate, cap: int | None) -> bool:
    """True when ``candidate`` may take one more request under the per-replica ``cap``."""
    return cap is None or candidate.in_flight < cap


def choose(
    candidates: Sequence[Candidate], *, last_order: int | None = None, cap: int | None = None
) -> Candidate | None:
    """The candidate with the fewest outstanding requests, or None if none has capacity.

    Among candidates tied on the fewest outstanding requests, the one whose ``order`` follows
    ``last_order`` (the previous choice) on the ring of orders wins, so equal replicas take turns.
    """
    eligible = [c for c in candidates if has_capacity(c, cap)]
    if not eligible:
        return None
    fewest = min(c.in_flight for c in eligible)
    tied = sorted((c for c in eligible if c.in_flight == fewest), key=lambda c: c.order)
    if last_order is not None:
        for candidate in tied:
            if candidate.order > last_order:
                return candidate
    return tied[0]
