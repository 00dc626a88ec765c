"""The in-memory runtime: the lifecycle the controller relies on, and injected failures."""

from __future__ import annotations

import asyncio

import pytest

from warmstart.runtime import (
    ImageNotPresent,
    ImagePullError,
    Mount,
    PullTiming,
    ReplicaError,
    ReplicaExists,
    ReplicaNotFound,
    ReplicaSpec,
    ReplicaState,
    ReplicaTimings,
    Runtime,
)
from warmstart.runtime.memory import MemoryRuntime, PhaseDurations

IMAGE = "r.io/team/model:v1"


def _runtime(**kwargs: object) -> MemoryRuntime:
    return MemoryRuntime(
        durations=PhaseDurations(fetch=3.0, unpack=2.0, create=0.5, start=0.25), **kwargs
    )  # type: ignore[arg-type]


async def test_lifecycle_with_timings() -> None:
    runtime: Runtime = _runtime()
    pulled = await runtime.pull(IMAGE)
    assert (pulled.fetch_seconds, pulled.unpack_seconds, pulled.total_seconds) == (3.0, 2.0, 5.0)
    replica = await runtime.create(ReplicaSpec("a", IMAGE, env={"X": "1"}), pull=pulled)
    assert (await runtime.status(replica)).state is ReplicaState.CREATED
    replica = await runtime.start(replica)
    assert replica.timings.start_path_seconds == 5.75
    status = await runtime.status(replica)
    assert status.running and status.pid is not None
    assert [r.id for r in await runtime.list()] == ["a"]
    stopped = await runtime.stop(replica, grace=1)
    assert (stopped.state, stopped.exit_code) == (ReplicaState.EXITED, 143)
    await runtime.delete(replica)
    assert await runtime.list() == []
    with pytest.raises(ReplicaNotFound):
        await runtime.status(replica)
    await runtime.delete(replica)  # idempotent


async def test_mounts_are_recorded_with_the_spec() -> None:
    runtime = _runtime()
    await runtime.pull(IMAGE)
    model = Mount("/store/models/sha256/ab", "/opt/ml/model")
    assert model.read_only  # read-only unless said otherwise
    replica = await runtime.start(await runtime.create(ReplicaSpec("a", IMAGE, mounts=(model,))))
    assert runtime.replicas["a"].spec.mounts == (model,)
    assert [r.spec.mounts for r in await runtime.list()] == [(model,)]
    assert replica.spec.mounts == (model,)


def test_the_model_fetch_overlaps_the_pull_in_the_start_path() -> None:
    pulled = PullTiming("r.io/a:1", None, 3.0, 2.0, 5.0)
    plain = ReplicaTimings(pull=pulled, create_seconds=0.5, start_seconds=0.25)
    assert plain.model_seconds is None and plain.start_path_seconds == 5.75
    shorter = ReplicaTimings(pull=pulled, create_seconds=0.5, start_seconds=0.25, model_seconds=4)
    assert shorter.fetch_seconds == 5.0 and shorter.start_path_seconds == 5.75
    longer = ReplicaTimings(pull=pulled, create_seconds=0.5, start_seconds=0.25, model_seconds=9)
    assert longer.fetch_seconds == 9.0 and longer.start_path_seconds == 9.75
    assert ReplicaTimings(model_seconds=1.0).start_path_seconds is None


async def test_hot_image_pulls_in_zero_time_and_missing_images_fail() -> None:
    runtime = _runtime(available={IMAGE})
    runtime.preload([IMAGE])
    assert (await runtime.pull(IMAGE)).total_seconds == 0.0
    with pytest.raises(ImagePullError):
        await runtime.pull("r.io/team/other:v1")
    with pytest.raises(ImageNotPresent):
        await runtime.create(ReplicaSpec("b", "r.io/team/other:v1"))
    await runtime.create(ReplicaSpec("a", IMAGE))
    with pytest.raises(ReplicaExists):
        await runtime.create(ReplicaSpec("a", IMAGE))


async def test_crash_sigkill_and_injected_failures() -> None:
    runtime = _runtime(ignore_sigterm=True)
    runtime.preload([IMAGE])
    replica = await runtime.start(await runtime.create(ReplicaSpec("a", IMAGE)))
    runtime.exit("a", 3, output="boom\n")
    assert (await runtime.status(replica)).exit_code == 3
    assert await runtime.logs(replica) == "boom\n"
    assert (await runtime.stop(replica)).exit_code == 3  # already exited: unchanged
    with pytest.raises(ReplicaError):
        await runtime.start(replica)  # no restart of an exited replica

    other = await runtime.start(await runtime.create(ReplicaSpec("b", IMAGE)))
    assert (await runtime.stop(other)).exit_code == 137
    runtime.fail_next("start", ReplicaError("runc failed"), times=2)
    third = await runtime.create(ReplicaSpec("c", IMAGE))
    for _ in range(2):
        with pytest.raises(ReplicaError, match="runc"):
            await runtime.start(third)
    await runtime.start(third)
    assert runtime.running() == ["c"]
    assert runtime.calls.count(("start", "c")) == 3
    with pytest.raises(ValueError):
        runtime.fail_next("explode", ReplicaError("x"))


async def test_gate_holds_an_operation() -> None:
    runtime = _runtime()
    gate = asyncio.Event()
    runtime.gates["pull"] = gate
    task = asyncio.create_task(runtime.pull(IMAGE))
    await asyncio.sleep(0)
    assert not task.done() and IMAGE not in runtime.pulled
    gate.set()
    await task
    assert IMAGE in runtime.pulled
