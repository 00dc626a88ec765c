"""The rows of the scale-out benchmark's summary table, and the helpers every scenario's rows
use (medians by key, ratios shown as ``2.0x``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from statistics import median
from typing import Any

# The baseline's start a ratio is taken against when it has no result for a tier.
STARTUP_REFERENCE_TIER = "cold"


def finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


@dataclass(frozen=True)
class Row:
    """One line of the table: a metric per mode, warmstart vs the baseline, and its target.

    ``met`` is None when the row has no target (``target == ""``) or it could not be judged.
    """

    scenario: str
    metric: str
    unit: str  # "s", "count", "req/s", "x image"
    values: dict[str, float | None]
    ratio: str = ""
    ratio_value: float | None = None
    target: str = ""
    met: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "values": {k: finite(v) for k, v in self.values.items()},
            "ratio_value": finite(self.ratio_value),
        }


def pct(x: float | None) -> str:
    return "" if x is None else f"{-x * 100:+.0f}%"


def times(x: float | None, lower_bound: bool = False) -> str:
    if x is None:
        return ""
    shown = "inf" if math.isinf(x) else f"{x:.1f}x" if x < 100 else f"{x:.0f}x"
    return (">= " if lower_bound else "") + shown


def medians(
    items: Iterable[Any], key: Callable[[Any], tuple[str, Any]], value: Callable[[Any], float]
) -> dict[tuple[str, Any], float]:
    groups: dict[tuple[str, Any], list[float]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(value(item))
    return {k: float(median(v)) for k, v in groups.items()}
