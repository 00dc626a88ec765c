from __future__ import annotations

import asyncio

import pytest

from warmstart.store.singleflight import DeltaReporter, Flight, SingleFlight


def test_delta_reporter_reports_only_growth() -> None:
    seen: list[int] = []
    r = DeltaReporter(seen.append)
    for total in (10, 10, 25, 5, 30):  # 5: a restart after a takeover
        r(total)
    assert seen == [10, 15, 5]


async def test_concurrent_calls_share_one_run() -> None:
    sf: SingleFlight[str, int] = SingleFlight()
    runs = 0

    async def start(flight: Flight[str, int]) -> int:
        nonlocal runs
        runs += 1
        flight.advance(5)
        await asyncio.sleep(0.01)
        flight.advance(9)
        return 42

    seen: list[list[int]] = [[] for _ in range(5)]
    results = await asyncio.gather(*(sf.do("k", start, seen[i].append) for i in range(5)))
    assert results == [42] * 5
    assert runs == 1
    assert all(sum(s) == 9 for s in seen)
    assert sf.get("k") is None


async def test_errors_reach_every_caller() -> None:
    sf: SingleFlight[str, int] = SingleFlight()

    async def start(flight: Flight[str, int]) -> int:
        await asyncio.sleep(0)
        raise ValueError("boom")

    results = await asyncio.gather(*(sf.do("k", start) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)


async def test_last_caller_leaving_cancels_the_run() -> None:
    sf: SingleFlight[str, int] = SingleFlight()
    cancelled = asyncio.Event()

    async def start(flight: Flight[str, int]) -> int:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1

    a = asyncio.create_task(sf.do("k", start))
    b = asyncio.create_task(sf.do("k", start))
    await asyncio.sleep(0.01)
    a.cancel()
    await asyncio.sleep(0.01)
    assert not cancelled.is_set()
    b.cancel()
    with pytest.raises(asyncio.CancelledError):
        await b
    await asyncio.wait_for(cancelled.wait(), 1)
    assert sf.get("k") is None


async def test_broken_progress_callback_does_not_break_the_run() -> None:
    sf: SingleFlight[str, int] = SingleFlight()

    async def start(flight: Flight[str, int]) -> int:
        flight.advance(1)
        return 7

    def broken(n: int) -> None:
        raise RuntimeError("bad callback")

    assert await sf.do("k", start, broken) == 7
