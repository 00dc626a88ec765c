"""The backoff of a node's failed pre-warms, shared by ``warmstart serve``'s controller and
``warmstart operator`` (pure): 10 s after the first failure, doubling up to 5 min.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    # min() before the power would overflow on absurd counts; 2 ** 30 is far past the cap.
    return min(PREWARM_RETRY_MAX_SECONDS, PREWARM_RETRY_MIN_SECONDS * 2.0 ** min(failures - 1, 30))


def prewarm_failed(previous: PrewarmFailure | None, at: float) -> PrewarmFailure:
    """The record after one more failure ending at ``at``."""
    return PrewarmFailure((previous.count if previous else 0) + 1, at)
