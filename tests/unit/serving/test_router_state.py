"""Router state without HTTP: leases, the wait queue, readiness, drain, snapshots."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from warmstart.serving.router import (
    QueueFull,
    QueueTimeout,
    Router,
    RouterConfig,
    RouterSnapshot,
)


def _router(**kw: object) -> Router:
    return Router(RouterConfig(**kw))  # type: ignore[arg-type]


async def _until(cond: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``cond`` every few milliseconds; fail after ``within`` seconds."""
    step = 0.002
    for _ in range(int(within / step)):
        if cond():
            return
        await asyncio.sleep(step)
    raise AssertionError("condition not reached in time")


async def test_least_outstanding_then_round_robin() -> None:
    router = _router()
    for name in ("a", "b", "c"):
        router.add_replica(name, f"http://127.0.0.1:1/{name}", ready=True)
    picks = [(await router.acquire()).replica_id for _ in range(6)]
    assert picks == ["a", "b", "c", "a", "b", "c"]
    router.release("b")
    router.release("b")
    assert (await router.acquire()).replica_id == "b"
    snap = router.snapshot()
    assert [r.in_flight for r in snap.replicas] == [2, 1, 2]
    assert snap.concurrency == 5


async def test_url_is_normalised_and_duplicates_rejected() -> None:
    router = _router()
    router.add_replica("a", "http://127.0.0.1:9/", ready=True)
    assert (await router.acquire()).url == "http://127.0.0.1:9"
    with pytest.raises(ValueError):
        router.add_replica("a", "http://127.0.0.1:10")


async def test_waits_until_a_replica_is_ready_fifo() -> None:
    router = _router(queue_timeout=5)
    router.add_replica("a", "http://x")
    tasks = [asyncio.create_task(router.acquire()) for _ in range(3)]
    await _until(lambda: router.snapshot().queue_length == 3)
    assert router.snapshot().concurrency == 3
    assert not any(t.done() for t in tasks)
    router.set_ready("a", True)
    leases = await asyncio.gather(*tasks)
    assert {lease.replica_id for lease in leases} == {"a"}
    snap = router.snapshot()
    assert snap.queue_length == 0 and snap.replicas[0].in_flight == 3


async def test_queue_full_rejects_and_counts() -> None:
    router = _router(queue_size=2, queue_timeout=5)
    tasks = [asyncio.create_task(router.acquire()) for _ in range(2)]
    await _until(lambda: router.snapshot().queue_length == 2)
    with pytest.raises(QueueFull):
        await router.acquire()
    assert router.snapshot().totals.rejections == 1
    router.add_replica("a", "http://x", ready=True)
    await asyncio.gather(*tasks)


async def test_queue_timeout_counts_and_leaves_queue_empty() -> None:
    router = _router(queue_timeout=0.05)
    with pytest.raises(QueueTimeout, match=r"0\.05"):
        await router.acquire()
    snap = router.snapshot()
    assert snap.totals.queue_timeouts == 1 and snap.queue_length == 0


async def test_cap_queues_until_release() -> None:
    router = _router(max_concurrency_per_replica=1, queue_timeout=5)
    router.add_replica("a", "http://x", ready=True)
    await router.acquire()
    waiting = asyncio.create_task(router.acquire())
    await _until(lambda: router.snapshot().queue_length == 1)
    router.release("a")
    assert (await waiting).replica_id == "a"
    assert router.snapshot().replica("a").in_flight == 1  # type: ignore[union-attr]


async def test_new_requests_do_not_overtake_the_queue() -> None:
    router = _router(max_concurrency_per_replica=1, queue_timeout=5)
    router.add_replica("a", "http://x", ready=True)
    await router.acquire()
    first = asyncio.create_task(router.acquire())
    await _until(lambda: router.snapshot().queue_length == 1)
    second = asyncio.create_task(router.acquire())
    await _until(lambda: router.snapshot().queue_length == 2)
    router.release("a")
    await first
    assert not second.done()
    router.release("a")
    await second


async def test_retry_goes_first_past_the_bound_and_avoids_excluded() -> None:
    router = _router(queue_size=1, queue_timeout=5)
    router.add_replica("a", "http://a", ready=True)
    router.add_replica("b", "http://b")
    plain = asyncio.create_task(router.acquire(exclude=frozenset({"a", "b"})))
    await _until(lambda: router.snapshot().queue_length == 1)
    retry = asyncio.create_task(router.acquire(exclude=frozenset({"a"}), retry=True))
    await _until(lambda: router.snapshot().queue_length == 2)
    router.set_ready("b", True)
    assert (await retry).replica_id == "b"
    assert not plain.done()
    plain.cancel()
    with pytest.raises(asyncio.CancelledError):
        await plain
    assert router.snapshot().queue_length == 0


async def test_cancelled_waiter_leaves_the_queue() -> None:
    router = _router(queue_timeout=5)
    task = asyncio.create_task(router.acquire())
    await _until(lambda: router.snapshot().queue_length == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert router.snapshot().queue_length == 0


async def test_connect_failure_marks_not_ready() -> None:
    router = _router()
    router.add_replica("a", "http://a", ready=True)
    router.connect_failed("a")
    snap = router.snapshot()
    assert snap.replica("a").state == "not_ready"  # type: ignore[union-attr]
    assert snap.replica("a").errors == 1  # type: ignore[union-attr]
    assert snap.ready_replicas == 0


async def test_not_ready_gets_no_new_leases_but_keeps_its_in_flight() -> None:
    router = _router(queue_timeout=5)
    router.add_replica("a", "http://a", ready=True)
    router.add_replica("b", "http://b", ready=True)
    assert (await router.acquire()).replica_id == "a"
    router.set_ready("a", False)
    assert [(await router.acquire()).replica_id for _ in range(3)] == ["b"] * 3
    assert router.snapshot().replica("a").in_flight == 1  # type: ignore[union-attr]
    with pytest.raises(KeyError):
        router.set_ready("missing", True)


async def test_remove_with_drain_waits_for_in_flight() -> None:
    router = _router(queue_timeout=5)
    router.add_replica("a", "http://a", ready=True)
    router.add_replica("b", "http://b", ready=True)
    await router.acquire()  # a
    removing = asyncio.create_task(router.remove_replica("a"))
    await asyncio.sleep(0.01)
    assert not removing.done()
    assert router.snapshot().replica("a").state == "draining"  # type: ignore[union-attr]
    assert (await router.acquire()).replica_id == "b"  # draining gets nothing new
    router.release("a")
    assert await removing is True
    assert router.replica_ids() == ["b"]


async def test_remove_drain_timeout_and_without_drain() -> None:
    router = _router(drain_timeout=0.02)
    router.add_replica("a", "http://a", ready=True)
    router.add_replica("b", "http://b", ready=True)
    await router.acquire()
    await router.acquire()
    assert await router.remove_replica("a") is False
    assert await router.remove_replica("b", drain=False) is True
    assert await router.remove_replica("missing") is True
    router.release("a")  # late releases of forgotten replicas are harmless
    router.release("b")
    assert router.snapshot().replicas == ()


def test_snapshot_dict() -> None:
    router = _router()
    router.add_replica("a", "http://a", ready=True)
    router.count("requests", 3)
    data = router.snapshot().to_dict()
    assert data["ready_replicas"] == 1 and data["totals"]["requests"] == 3
    assert data["replicas"][0]["state"] == "ready"
    assert isinstance(router.snapshot(), RouterSnapshot)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        RouterConfig(queue_size=-1)
    with pytest.raises(ValueError):
        RouterConfig(queue_timeout=0)
    with pytest.raises(ValueError):
        RouterConfig(max_concurrency_per_replica=0)
