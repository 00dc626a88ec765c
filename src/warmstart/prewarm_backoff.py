"""When ``warmstart serve`` and ``warmstart operator`` pre-warm a node again (pure).

A node pre-warmed recently is left alone for :data:`PREWARM_MEMORY_SECONDS`; one whose pre-warm
failed is tried again only after a backoff that doubles from :data:`PREWARM_RETRY_MIN_SECONDS`
to :data:`PREWARM_RETRY_MAX_SECONDS`. The operator keeps the same backoff per node and image.
"""

from __future__ import annotations

from dataclasses import dataclass

from warmstart.backoff import Backoff

# A node pre-warmed this recently is not pre-warmed again (its tier may not show it yet).
PREWARM_MEMORY_SECONDS = 300.0
# A node whose pre-warm failed is tried again after 10 s, 20 s, 40 s, ... at most 5 min apart.
PREWARM_RETRY_MIN_SECONDS = 10.0
PREWARM_RETRY_MAX_SECONDS = 300.0


@dataclass(frozen=True)
class PrewarmFailure:
    """A node's pre-warms that failed in a row: how many, and when the last one ended."""

    count: int
    at: float


def prewarm_retry_delay(failures: int) -> float:
    """Seconds to wait before pre-warming a node again after ``failures`` failures in a row:
    0 for none, then doubling from the minimum, capped at the maximum."""
    if failures <= 0:
        return 0.0
    return Backoff(PREWARM_RETRY_MIN_SECONDS, PREWARM_RETRY_MAX_SECONDS).ceiling(failures - 1)


def prewarm_failed(previous: PrewarmFailure | None, at: float) -> PrewarmFailure:
    """The record after one more failure ending at ``at``."""
    return PrewarmFailure((previous.count if previous else 0) + 1, at)


def prewarm_due(
    now: float, succeeded_at: float | None = None, failure: PrewarmFailure | None = None
) -> bool:
    """Whether a node may be pre-warmed at ``now``: not within :data:`PREWARM_MEMORY_SECONDS`
    of a pre-warm that succeeded, nor within the retry delay of the last failure."""
    if succeeded_at is not None and now - succeeded_at < PREWARM_MEMORY_SECONDS:
        return False
    return failure is None or now - failure.at >= prewarm_retry_delay(failure.count)


__all__ = [
    "PREWARM_MEMORY_SECONDS",
    "PREWARM_RETRY_MAX_SECONDS",
    "PREWARM_RETRY_MIN_SECONDS",
    "PrewarmFailure",
    "prewarm_due",
    "prewarm_failed",
    "prewarm_retry_delay",
]
