"""Pure helpers for benchmark numbers: medians, rates, ratios, round ordering."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def rate_mb_s(nbytes: int, seconds: float) -> float:
    """Decimal megabytes per second (as network and disk vendors count)."""
    return nbytes / seconds / 1e6 if seconds > 0 else float("inf")


def rotated(items: Sequence[str], round_index: int) -> list[str]:
    """The order of contenders in one round: rotate so none always goes first (warm caches)."""
    if not items:
        return []
    k = round_index % len(items)
    return [*items[k:], *items[:k]]
