"""The one retry driver of the registry client, for manifests, tokens and blob resumes alike.

A :class:`RequestRetries` counts the failed attempts of one operation:
:meth:`RequestRetries.failed` either raises (the failure is final, attempts ran out, or the
server asked to wait too long) or waits the backoff delay before the next attempt.
:meth:`RequestRetries.run` repeats a whole request; a blob stream calls
:meth:`RequestRetries.failed` itself, telling it when an attempt made progress so that the
backoff starts over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

from warmstart.registry.backoff import BackoffPolicy
from warmstart.registry.errors import RegistryError, UpstreamUnavailable, one_line

T = TypeVar("T")


class Retry(Exception):
    """An attempt failed in a way a later attempt may not (5xx, 429, short read)."""

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no attempt made"
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return one_line(text)


class RequestRetries:
    """The failed attempts of one operation on ``what``, and the waits between them."""

    def __init__(
        self,
        what: str,
        policy: BackoffPolicy,
        *,
        sleep: Callable[[float], Awaitable[object]],
        rand: Callable[[], float],
        is_retryable: Callable[[BaseException], bool],
        wrap: Callable[[BaseException, str], BaseException],
    ) -> None:
        self.what = what
        self.policy = policy
        self.failures = 0
        self._index = 0  # backoff exponent; reset when an attempt made progress
        self._sleep = sleep
        self._rand = rand
        self._is_retryable = is_retryable
        self._wrap = wrap

    async def run(self, once: Callable[[], Awaitable[T]]) -> T:
        """Run ``once`` until it succeeds, fails for good, or attempts run out."""
        while True:
            try:
                return await once()
            except Exception as e:
                await self.failed(e)

    async def failed(self, exc: Exception, *, progressed: bool = False, where: str = "") -> None:
        """Raise unless ``exc`` may pass on a later attempt; then wait before that attempt."""
        if not isinstance(exc, Retry):
            if isinstance(exc, RegistryError) or not self._is_retryable(exc):
                self._final(exc)
        self.failures += 1
        # The registry's Retry-After (429, 503) travels with the error to whoever answers.
        retry_after = exc.retry_after if isinstance(exc, Retry) else None
        if self.failures >= self.policy.max_attempts:
            raise UpstreamUnavailable(
                f"{self.what}: {describe(exc)} (gave up after {self.failures} attempts{where})",
                retry_after=retry_after,
            ) from exc
        if progressed:
            self._index = 0
        delay = self.policy.wait_before(self._index, self._rand, retry_after)
        self._index += 1
        if delay is None:
            raise UpstreamUnavailable(
                f"{self.what}: registry asked to retry after {retry_after:.0f} s; giving up",
                retry_after=retry_after,
            ) from exc
        await self._sleep(delay)

    def _final(self, exc: Exception) -> NoReturn:
        wrapped = self._wrap(exc, self.what)
        if wrapped is exc:
            raise exc
        raise wrapped from exc


__all__ = ["RequestRetries", "Retry", "describe"]
