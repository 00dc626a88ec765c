"""In-process single-flight: concurrent requests for one key share one task.

The shared task runs detached from its callers: a caller that is cancelled only leaves; the task
is cancelled when its last caller leaves. Each caller gets progress as deltas of a high-water mark,
so the deltas one caller sees never add up to more than the bytes that exist, even when a write
restarts from zero after a takeover.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

log = logging.getLogger(__name__)


@dataclass
class DeltaReporter:
    """Turns "N bytes so far" into "M new bytes" calls of ``fn`` (never negative)."""

    fn: Callable[[int], None]
    reported: int = 0

    def __call__(self, total: int) -> None:
        if total > self.reported:
            delta, self.reported = total - self.reported, total
            self.fn(delta)


@dataclass(eq=False)
class Flight(Generic[K, V]):
    """One transfer in progress: its task, how far it got, and who listens."""

    key: K
    task: asyncio.Task[V] | None = None
    progress: int = 0  # bytes available so far (written here, or seen growing elsewhere)
    callers: int = 0
    _listeners: list[Callable[[int], None]] = field(default_factory=list)
    _events: set[asyncio.Event] = field(default_factory=set)

    @property
    def done(self) -> bool:
        return self.task is not None and self.task.done()

    def error(self) -> BaseException | None:
        """The task's exception once it has failed (cancellation counts), else None."""
        if self.task is None or not self.task.done():
            return None
        if self.task.cancelled():
            return asyncio.CancelledError()
        return self.task.exception()

    def advance(self, total: int) -> None:
        """Record that ``total`` bytes exist now, and wake everyone who waits for news."""
        self.progress = total
        for listener in list(self._listeners):
            try:
                listener(total)
            except Exception:  # a broken progress callback must not break the transfer
                log.exception("progress callback failed")
        self.notify()

    def notify(self) -> None:
        for event in self._events:
            event.set()

    def add_listener(self, listener: Callable[[int], None]) -> None:
        self._listeners.append(listener)
        if self.progress:
            listener(self.progress)

    def remove_listener(self, listener: Callable[[int], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    async def wait_changed(self, max_wait: float) -> None:
        """Sleep until the next ``advance``/``notify``, or ``max_wait`` seconds."""
        event = asyncio.Event()
        self._events.add(event)
        try:
            async with asyncio.timeout(max_wait):
                await event.wait()
        except TimeoutError:
            pass
        finally:
            self._events.discard(event)


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._flights: dict[K, Flight[K, V]] = {}

    def get(self, key: K) -> Flight[K, V] | None:
        return self._flights.get(key)

    def keys(self) -> set[K]:
        return set(self._flights)

    def flights(self) -> list[Flight[K, V]]:
        return list(self._flights.values())

    async def do(
        self,
        key: K,
        start: Callable[[Flight[K, V]], Awaitable[V]],
        on_progress: Callable[[int], None] | None = None,
    ) -> V:
        """Join the flight of ``key`` (starting it with ``start`` if there is none)."""
        flight = self._flights.get(key)
        if flight is None:
            flight = Flight(key)
            self._flights[key] = flight
            flight.task = asyncio.get_running_loop().create_task(self._run(flight, start))
            flight.task.add_done_callback(functools.partial(_finished, flight))
        assert flight.task is not None
        reporter = DeltaReporter(on_progress) if on_progress is not None else None
        if reporter is not None:
            flight.add_listener(reporter)
        flight.callers += 1
        try:
            return await asyncio.shield(flight.task)
        finally:
            flight.callers -= 1
            if reporter is not None:
                flight.remove_listener(reporter)
            if flight.callers == 0 and not flight.task.done():
                # Everyone left (cancelled): stop the transfer; a new request starts afresh.
                self._forget(flight)
                flight.task.cancel()

    async def _run(self, flight: Flight[K, V], start: Callable[[Flight[K, V]], Awaitable[V]]) -> V:
        try:
            return await start(flight)
        finally:
            self._forget(flight)

    def _forget(self, flight: Flight[K, V]) -> None:
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]


def _finished(flight: Flight[K, V], task: asyncio.Task[V]) -> None:
    if not task.cancelled():
        task.exception()  # mark as retrieved: callers (if any) got it through shield()
    flight.notify()  # followers see ``done`` from now on
