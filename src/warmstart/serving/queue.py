"""The router's bounded FIFO of requests waiting for a replica.

A waiter is a future the router resolves with the lease of the replica it chose for the request. The
queue only keeps the order and the bound; timeouts and the choice of replica belong to the router.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


class QueueFull(Exception):
    """The wait queue already holds ``queue_size`` requests."""


class QueueTimeout(Exception):
    """A request waited ``queue_timeout`` seconds without a replica becoming free."""

    def __init__(self, waited: float) -> None:
        super().__init__(f"no replica became available within {waited:g}s")
        self.waited = waited


@dataclass(eq=False)
class Waiter(Generic[T]):
    """One queued request: resolved with a lease, or failed with :class:`QueueTimeout`."""

    future: asyncio.Future[T]
    exclude: frozenset[str] = field(default_factory=frozenset)


class WaitQueue(Generic[T]):
    """FIFO of waiters with a bound; retries may go to the front and past the bound."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 0:
            raise ValueError("queue size must be >= 0")
        self.maxsize = maxsize
        self._waiters: list[Waiter[T]] = []

    def __len__(self) -> int:
        return len(self._waiters)

    def __iter__(self) -> Iterator[Waiter[T]]:
        return iter(list(self._waiters))

    def push(
        self,
        future: asyncio.Future[T],
        *,
        exclude: frozenset[str] = frozenset(),
        urgent: bool = False,
    ) -> Waiter[T]:
        """Append a waiter; an ``urgent`` one (a retry) goes first and ignores the bound."""
        waiter = Waiter(future=future, exclude=exclude)
        if urgent:
            self._waiters.insert(0, waiter)
            return waiter
        if len(self._waiters) >= self.maxsize:
            raise QueueFull(f"wait queue is full ({self.maxsize} requests)")
        self._waiters.append(waiter)
        return waiter

    def discard(self, waiter: Waiter[T]) -> None:
        """Remove ``waiter`` if it is still queued."""
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass
