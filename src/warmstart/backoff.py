"""Exponential backoff: how long to wait before the next try (pure).

One :class:`Backoff` holds a scheme: the first delay ``base``, multiplied by ``factor`` after
each try, never above ``cap``. :meth:`Backoff.ceiling` is the delay before retry ``n``
(0-based); :meth:`Backoff.jittered` draws a full-jitter delay below it from a random source the
caller passes (deterministic in tests); :meth:`Backoff.delays` yields the delays one after the
other for a loop that waits, retries and starts over with a fresh iterator after a success.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# Past this many doublings every delay in use is at its cap; the exponent stops here so that
# an absurd retry count never overflows a float.
_MAX_EXPONENT = 64


@dataclass(frozen=True)
class Backoff:
    base: float
    cap: float = math.inf
    factor: float = 2.0

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0:
            raise ValueError("backoff delays must not be negative")
        if self.factor < 1:
            raise ValueError("a backoff factor below 1 would shrink the delays")

    def ceiling(self, retry: int) -> float:
        """The delay before retry ``retry`` (0-based): ``base * factor**retry``, at most
        ``cap``."""
        exponent = min(max(retry, 0), _MAX_EXPONENT)
        return min(self.cap, self.base * self.factor**exponent)

    def jittered(self, retry: int, rand: Callable[[], float]) -> float:
        """Full jitter: uniform in ``[0, ceiling(retry))`` with ``rand()`` in ``[0, 1)``."""
        return rand() * self.ceiling(retry)

    def delays(self) -> Iterator[float]:
        """The delays before retry 0, 1, 2, ... without end (the last ones all ``cap``)."""
        retry = 0
        while True:
            yield self.ceiling(retry)
            retry += 1


__all__ = ["Backoff"]
