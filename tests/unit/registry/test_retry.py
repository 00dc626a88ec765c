from __future__ import annotations

import pytest

from warmstart.registry.backoff import BackoffPolicy
from warmstart.registry.errors import NotFound, RegistryError, UpstreamUnavailable
from warmstart.registry.retry import RequestRetries, Retry


def attempts(sleeps: list[float], max_attempts: int = 3) -> RequestRetries:
    async def sleep(delay: float) -> None:
        sleeps.append(delay)

    return RequestRetries(
        "thing",
        BackoffPolicy(base=1.0, cap=100.0, max_attempts=max_attempts, max_retry_after=10.0),
        sleep=sleep,
        rand=lambda: 0.5,
        is_retryable=lambda e: isinstance(e, ConnectionError),
        wrap=lambda e, what: RegistryError(f"{what}: {e}") if isinstance(e, ValueError) else e,
    )


async def test_run_retries_until_success_with_growing_waits() -> None:
    sleeps: list[float] = []
    answers: list[object] = [Retry("503"), ConnectionError("reset"), "ok"]

    async def once() -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert await attempts(sleeps).run(once) == "ok"
    assert sleeps == [0.5, 1.0]


async def test_run_gives_up_after_max_attempts() -> None:
    sleeps: list[float] = []

    async def once() -> None:
        raise Retry("registry answered 503")

    with pytest.raises(UpstreamUnavailable, match="gave up after 3 attempts"):
        await attempts(sleeps).run(once)
    assert len(sleeps) == 2


@pytest.mark.parametrize(
    ("exc", "raised"),
    [(NotFound("gone"), NotFound), (ValueError("bad"), RegistryError), (KeyError("k"), KeyError)],
)
async def test_final_errors_are_not_retried(exc: Exception, raised: type[Exception]) -> None:
    sleeps: list[float] = []
    with pytest.raises(raised):
        await attempts(sleeps).failed(exc)
    assert sleeps == []


async def test_retry_after_replaces_backoff_or_gives_up() -> None:
    sleeps: list[float] = []
    a = attempts(sleeps, max_attempts=5)
    await a.failed(Retry("429", retry_after=3.0))
    assert sleeps == [3.0]
    with pytest.raises(UpstreamUnavailable, match="retry after 60 s"):
        await a.failed(Retry("429", retry_after=60.0))


async def test_progress_resets_the_backoff_but_not_the_count() -> None:
    sleeps: list[float] = []
    a = attempts(sleeps, max_attempts=4)
    await a.failed(Retry("short read"))
    await a.failed(Retry("short read"))
    await a.failed(Retry("short read"), progressed=True)
    assert sleeps == [0.5, 1.0, 0.5]
    with pytest.raises(UpstreamUnavailable, match="4 attempts at byte 9"):
        await a.failed(Retry("short read"), where=" at byte 9")


async def test_giving_up_keeps_the_registrys_retry_after() -> None:
    """An upstream's 429/503 Retry-After travels with the error (the agent passes it on)."""
    sleeps: list[float] = []
    with pytest.raises(UpstreamUnavailable) as too_long:
        await attempts(sleeps).failed(Retry("429", retry_after=120.0))
    assert too_long.value.retry_after == 120.0 and too_long.value.status == 503

    a = attempts(sleeps, max_attempts=2)
    await a.failed(Retry("429", retry_after=2.0))
    with pytest.raises(UpstreamUnavailable, match="gave up after 2 attempts") as exhausted:
        await a.failed(Retry("429", retry_after=2.0))
    assert exhausted.value.retry_after == 2.0
    with pytest.raises(UpstreamUnavailable) as no_hint:
        await attempts(sleeps, max_attempts=1).failed(Retry("503"))
    assert no_hint.value.retry_after is None
