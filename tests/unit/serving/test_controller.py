"""The reconcile loop over the in-memory runtime and a real (in-process) router: no clock, no
network. Demand is put into the router by holding leases, as in-flight requests would."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from warmstart.oci.tiers import Tier
from warmstart.runtime.interfaces import ImagePullError, PullTiming, Replica, RuntimeUnavailable
from warmstart.runtime.memory import MemoryRuntime, PhaseDurations
from warmstart.serving.controller import Controller
from warmstart.serving.replicas import PHASES, NodeHandle, StaticTiers
from warmstart.serving.router import Router, RouterConfig
from warmstart.serving.spec import build_spec

IMAGE = "127.0.0.1:5000/models/embedder:v1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(
    tiers: dict[str, Tier] | None = None,
    ping_ok: set[str] | None = None,
    **spec: object,
) -> tuple[Controller, dict[str, MemoryRuntime], Router, Clock]:
    runtimes = {name: MemoryRuntime() for name in ("node-a", "node-b", "node-c")}
    nodes = [NodeHandle(name, rt, slots=2) for name, rt in runtimes.items()]
    router = Router(RouterConfig(queue_size=100, queue_timeout=5))
    clock = Clock()

    async def ping(url: str) -> bool:
        return ping_ok is None or url in ping_ok

    ctl = Controller(
        build_spec({"name": "embedder", "image": IMAGE, "max_replicas": 6, **spec}),
        nodes,
        router,
        ping=ping,
        tiers=StaticTiers(tiers),
        clock=clock,
    )
    return ctl, runtimes, router, clock


async def tick(ctl: Controller, clock: Clock, seconds: float = 1.0) -> None:
    await ctl.tick()
    await ctl.settle()
    clock.now += seconds


def states(ctl: Controller) -> dict[str, tuple[str, str]]:
    return {r.id: (r.node, r.state) for r in ctl.replicas.values()}


async def test_min_replicas_start_on_the_hottest_node_and_join_the_router_after_ping():
    ctl, runtimes, router, clock = make(
        tiers={"node-b": Tier.HOT, "node-c": Tier.WARM}, min_replicas=2
    )
    await tick(ctl, clock)
    # Tier beats load: both fit on the hot node (2 slots).
    assert sorted(states(ctl).values()) == [("node-b", "ready"), ("node-b", "ready")]
    assert {r.replica_id for r in router.snapshot().replicas if r.state == "ready"} == set(
        ctl.replicas
    )
    assert runtimes["node-a"].calls == []
    assert [e.kind for e in ctl.events].count("ready") == 2


async def test_burst_scales_out_and_quiet_scales_back_down():
    ctl, runtimes, router, clock = make(
        tiers={"node-a": Tier.HOT}, min_replicas=1, target_concurrency=1, scale_down_delay=5
    )
    await tick(ctl, clock)
    assert len(ctl.replicas) == 1
    # Four requests in flight on the one ready replica (the router has no cap): panic, 4.
    held = [await router.acquire() for _ in range(4)]
    assert router.snapshot().concurrency == 4
    await tick(ctl, clock)
    assert len(ctl.replicas) > 1  # panic: scales out on the first sample of the burst
    for _ in range(8):  # the window's mean climbs to 4 while the load holds
        await tick(ctl, clock)
    assert len(ctl.replicas) == 4
    assert all(state == "ready" for _, state in states(ctl).values())
    for lease in held:
        router.release(lease.replica_id)
    # Quiet for longer than the stable window and the scale-down delay: back to the floor.
    for _ in range(80):
        await tick(ctl, clock)
    assert len(ctl.replicas) == 1
    stopped = sum(1 for rt in runtimes.values() for op, _ in rt.calls if op == "delete")
    assert stopped == 3


async def test_crashed_replica_is_replaced():
    ctl, runtimes, router, clock = make(min_replicas=1)
    await tick(ctl, clock)
    [(rid, (node, _))] = states(ctl).items()
    runtimes[node].exit(rid, 137)
    await tick(ctl, clock)  # reaps the crash
    await tick(ctl, clock)  # the autoscaler restores the floor
    kinds = [e.kind for e in ctl.events]
    assert "crashed" in kinds
    assert len(ctl.replicas) == 1 and rid not in ctl.replicas
    assert rid not in router.replica_ids()


async def test_replica_that_never_passes_ping_is_removed_and_reported():
    ctl, runtimes, router, clock = make(min_replicas=1, ping_ok=set(), replica_start_timeout=0.5)
    await ctl.tick()
    # Let the start task see its deadline pass on the fake clock.
    clock.now += 10
    await ctl.settle()
    failed = [e.message for e in ctl.events if e.kind == "failed"]
    assert failed and "/ping" in failed[0]
    assert ctl.replicas == {} and router.replica_ids() == []
    assert not any(rt.running() for rt in runtimes.values())


async def test_image_that_does_not_exist_is_an_event_not_a_crash():
    ctl, runtimes, _router, clock = make(min_replicas=1)
    for rt in runtimes.values():
        rt.available = set()
    await tick(ctl, clock)
    failed = [e.message for e in ctl.events if e.kind == "failed"]
    assert failed and "not found" in failed[0]
    assert ctl.replicas == {}


async def test_prewarm_ahead_targets_the_next_node_before_scale_out():
    ctl, _runtimes, router, clock = make(
        tiers={"node-a": Tier.HOT, "node-c": Tier.WARM},
        min_replicas=2,
        target_concurrency=2,
        prewarm_headroom=0.5,
        prewarm_spare=0,  # demand-driven pre-warm only: by default every node is pre-warmed
    )
    warmed: list[str] = []

    async def prewarm(node: NodeHandle, image: str) -> None:
        warmed.append(node.name)

    ctl._prewarm = prewarm
    await tick(ctl, clock)
    assert {r.node for r in ctl.replicas.values()} == {"node-a"}  # both slots of the hot node
    assert warmed == []  # no demand yet
    held = [await router.acquire() for _ in range(2)]  # 2 of capacity 4: within 50 %
    for _ in range(8):  # once the panic window's mean has climbed to 2
        await tick(ctl, clock)
    assert warmed == ["node-c"]  # where the next replica would go (warm beats cold)
    assert len(ctl.replicas) == 2  # pre-warmed ahead of the scale-out, not scaled yet
    assert [e.kind for e in ctl.events].count("prewarm") == 1
    for lease in held:
        router.release(lease.replica_id)


@pytest.mark.parametrize("error", [ImagePullError("registry down")])
async def test_pull_errors_leave_the_endpoint_serving(error):
    ctl, runtimes, router, clock = make(tiers={"node-a": Tier.HOT}, min_replicas=1)
    await tick(ctl, clock)
    assert len(ctl.replicas) == 1
    for rt in runtimes.values():
        rt.fail_next("pull", error, times=5)
    held = [await router.acquire() for _ in range(3)]
    await tick(ctl, clock)
    assert any(e.kind == "failed" for e in ctl.events)
    assert [s for _, s in states(ctl).values()] == ["ready"]  # the first one keeps serving
    for lease in held:
        router.release(lease.replica_id)


async def test_nodes_that_share_an_address_never_share_a_replica_port():
    # All three nodes are on 127.0.0.1 (host networking): every replica needs its own port.
    ctl, _, _, clock = make(min_replicas=5)
    await tick(ctl, clock)
    ports = [r.port for r in ctl.replicas.values()]
    assert len(ports) == 5 and len(set(ports)) == 5
    status = ctl.status().to_dict()
    assert {r["tier"] for r in status["replicas"]} == {"cold"}  # type: ignore[index]
    assert all(set(r["phases"]) == {"wait", "pull", "unpack", "start", "load"}  # type: ignore[index]
               for r in status["replicas"])  # type: ignore[union-attr]  # fmt: skip
    assert [n["name"] for n in status["nodes"]] == ["node-a", "node-b", "node-c"]  # type: ignore[index]


async def test_a_runtime_that_does_not_answer_is_not_a_crash():
    ctl, runtimes, _, clock = make(min_replicas=1)
    await tick(ctl, clock)
    [(rid, (node, _))] = states(ctl).items()
    runtimes[node].fail_next("status", RuntimeUnavailable("ctr did not answer in time"), times=2)
    await tick(ctl, clock)
    await tick(ctl, clock)
    assert states(ctl) == {rid: (node, "ready")}
    assert "crashed" not in [e.kind for e in ctl.events]


async def test_a_replica_waits_for_a_prewarm_in_flight_on_its_node():
    import asyncio

    ctl, runtimes, router, clock = make(
        tiers={"node-a": Tier.HOT, "node-c": Tier.WARM},
        min_replicas=2,
        target_concurrency=2,
        prewarm_headroom=0.5,
        prewarm_spare=0,  # demand-driven pre-warm only: by default every node is pre-warmed
    )
    release = asyncio.Event()
    order: list[str] = []

    async def prewarm(node: NodeHandle, image: str) -> None:
        order.append(f"prewarm-start {node.name}")
        await release.wait()
        order.append(f"prewarm-done {node.name}")

    ctl._prewarm = prewarm
    await tick(ctl, clock)
    held = [await router.acquire() for _ in range(2)]
    for _ in range(8):  # the pre-warm of node-c starts and stays in flight
        await ctl.tick()
        clock.now += 1.0
        await asyncio.sleep(0)
    assert order == ["prewarm-start node-c"]
    held += [await router.acquire() for _ in range(8)]  # demand 10: panic, scale out to node-c
    for _ in range(8):
        await ctl.tick()
        clock.now += 1.0
        await asyncio.sleep(0.05)
    assert any(r.node == "node-c" for r in ctl.replicas.values()), states(ctl)
    assert not any(op == "pull" for op, _ in runtimes["node-c"].calls)  # still waiting
    release.set()  # the pre-warm ends: the waiting replica pulls (nothing left to fetch)
    await ctl.settle()
    assert "prewarm-done node-c" in order
    assert any(op == "pull" for op, _ in runtimes["node-c"].calls)
    assert any(r.node == "node-c" and r.state == "ready" for r in ctl.replicas.values())
    for lease in held:
        router.release(lease.replica_id)


@dataclass
class TimedRuntime(MemoryRuntime):
    """A memory node whose pull, create and start take the time they report on ``clock``."""

    clock: Clock | None = None

    async def pull(self, reference: str) -> PullTiming:
        timing = await super().pull(reference)
        assert self.clock is not None
        self.clock.now += timing.total_seconds
        return timing

    async def start(self, replica: Replica) -> Replica:
        started = await super().start(replica)
        assert self.clock is not None
        self.clock.now += self.durations.create + self.durations.start
        return started


async def test_the_wait_for_a_prewarm_is_a_phase_and_the_phases_add_up_to_ready():
    import asyncio

    clock = Clock()
    durations = PhaseDurations(fetch=0.12, unpack=0.0, create=0.04, start=0.06)
    runtimes = {n: TimedRuntime(durations=durations, clock=clock) for n in ("node-a", "node-b")}
    release = asyncio.Event()

    async def prewarm(node: NodeHandle, image: str) -> None:
        await release.wait()

    async def ping(url: str) -> bool:  # the model loads for 0.46 s
        clock.now += 0.46
        return True

    router = Router(RouterConfig(queue_size=100, queue_timeout=5))
    ctl = Controller(
        build_spec(
            {"name": "embedder", "image": IMAGE, "max_replicas": 2, "target_concurrency": 2}
        ),
        [NodeHandle(name, rt, slots=1) for name, rt in runtimes.items()],
        router,
        ping=ping,
        tiers=StaticTiers({"node-a": Tier.HOT, "node-b": Tier.WARM}),
        prewarm=prewarm,
        clock=clock,
    )
    await ctl.tick()  # the first replica on node-a; node-b's pre-warm starts and stays in flight
    for _ in range(3):
        await asyncio.sleep(0)
    assert ctl.prewarms_in_flight == 1
    held = [await router.acquire() for _ in range(10)]  # panic: scale out to node-b
    for _ in range(6):
        clock.now += 1.0
        await ctl.tick()
        await asyncio.sleep(0.01)
    [second] = [r for r in ctl.replicas.values() if r.node == "node-b"]
    assert second.state == "starting" and not any(
        op == "pull" for op, _ in runtimes["node-b"].calls
    )
    clock.now += 4.0
    released_at = clock.now
    release.set()
    await ctl.settle()
    assert second.state == "ready"
    assert list(second.phases) == [k for k in PHASES if k != "model"]  # no model, no phase
    assert second.phases["wait"] == pytest.approx(released_at - second.started_at)
    assert second.phases["pull"] == pytest.approx(0.12)
    assert second.phases["unpack"] == 0.0
    assert second.phases["start"] == pytest.approx(0.10)
    assert second.phases["load"] == pytest.approx(0.46)
    assert second.ready_seconds is not None
    assert sum(second.phases.values()) == pytest.approx(second.ready_seconds)
    assert second.ready_seconds > 4.0 + 0.12 + 0.10 + 0.46  # the wait is most of it
    shown = ctl.status().to_dict()["replicas"]
    assert {r["id"]: r["phases"]["wait"] for r in shown}[second.id] == second.phases["wait"]  # type: ignore[index]
    first = next(r for r in ctl.replicas.values() if r.node == "node-a")
    assert first.phases["wait"] == 0.0  # nothing to wait for on node-a
    assert sum(first.phases.values()) == pytest.approx(first.ready_seconds)
    for lease in held:
        router.release(lease.replica_id)


async def test_a_replica_stopped_while_it_starts_leaves_no_container_behind():
    import asyncio

    ctl, runtimes, router, _clock = make(min_replicas=1)
    gate = asyncio.Event()
    for rt in runtimes.values():
        rt.gates["pull"] = gate
    await ctl.tick()
    await asyncio.sleep(0)
    [managed] = ctl.replicas.values()
    assert managed.state == "starting"
    await ctl._stop_replica(managed)  # as a scale-down that chose the starting replica does
    assert ctl.replicas == {} and [e.kind for e in ctl.events][-1] == "stopped"
    gate.set()  # the pull ends: the start sees it was stopped and goes no further
    await ctl.settle()
    assert router.replica_ids() == []
    assert all(rt.replicas == {} for rt in runtimes.values())
    assert not any(op in ("create", "start") for rt in runtimes.values() for op, _ in rt.calls)
    assert "failed" not in [e.kind for e in ctl.events]


async def test_a_replica_stopped_after_its_container_started_is_removed_by_its_start():
    import asyncio

    ctl, runtimes, router, _clock = make(min_replicas=1, ping_ok=set())  # /ping never passes
    await ctl.tick()
    for _ in range(5):
        await asyncio.sleep(0)
    [managed] = ctl.replicas.values()
    node = runtimes[managed.node]
    assert node.running() == [managed.id] and managed.id in router.replica_ids()
    await ctl._stop_replica(managed)
    await ctl.settle()
    assert node.replicas == {} and router.replica_ids() == []
    assert [op for op, _ in node.calls if op in ("stop", "delete")] == ["stop", "delete"]
