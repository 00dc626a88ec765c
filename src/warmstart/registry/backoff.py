"""When to retry a registry request, and how long to wait first.

Exponential backoff with full jitter (AWS architecture blog): before retry ``n`` (0-based) wait a
uniformly random time in ``[0, min(cap, base * 2**n))``. A ``Retry-After`` from the server
(429, 503) replaces the jittered delay; one longer than ``max_retry_after`` means "give up now"
rather than stall a pull for minutes. The random source is injectable.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from dataclasses import dataclass

# Errors worth retrying that need no HTTP library to recognise; the client adds its own.
RETRYABLE_BUILTIN_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError)


@dataclass(frozen=True)
class BackoffPolicy:
    base: float = 0.2
    cap: float = 10.0
    max_attempts: int = 6
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0 or self.max_retry_after < 0:
            raise ValueError("backoff delays must not be negative")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def ceiling(self, retry: int) -> float:
        """The largest delay before retry number ``retry`` (0-based)."""
        if retry >= 64:  # 2**64 * base overflows nothing but is far past any cap
            return self.cap
        doubling: int = 2 ** max(retry, 0)
        return min(self.cap, self.base * doubling)

    def delay(self, retry: int, rand: Callable[[], float]) -> float:
        """Full jitter: uniform in ``[0, ceiling(retry))`` with ``rand()`` in ``[0, 1)``."""
        return rand() * self.ceiling(retry)

    def wait_before(
        self, retry: int, rand: Callable[[], float], retry_after: float | None = None
    ) -> float | None:
        """Seconds to wait before retry ``retry``; None if the server asked for too long."""
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return None
            return max(retry_after, 0.0)
        return self.delay(retry, rand)


def is_retryable_status(status: int) -> bool:
    """429 and every 5xx except 501 (Not Implemented will not change on a retry)."""
    return status == 429 or (500 <= status <= 599 and status != 501)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now`` (epoch): delta-seconds or an HTTP-date."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(min(int(text), 1 << 31))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(when.timestamp() - now, 0.0)


__all__ = [
    "RETRYABLE_BUILTIN_ERRORS",
    "BackoffPolicy",
    "is_retryable_status",
    "parse_retry_after",
]
