"""Hot by default: the controller pre-warms every node the endpoint may scale to, backs off a
node whose pre-warm failed, and pre-warms a node as soon as it appears. In-memory runtimes, a
fake clock, a fake agent (``prewarm``) that marks the node hot in the tier source."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from warmstart.oci.tiers import Tier
from warmstart.prewarm_backoff import (
    PREWARM_MEMORY_SECONDS,
    PREWARM_RETRY_MAX_SECONDS,
    PREWARM_RETRY_MIN_SECONDS,
    PrewarmFailure,
    prewarm_due,
    prewarm_failed,
    prewarm_retry_delay,
)
from warmstart.runtime.memory import MemoryRuntime
from warmstart.serving.controller import Controller
from warmstart.serving.placement import NodeTiers
from warmstart.serving.replicas import NodeHandle
from warmstart.serving.router import Router, RouterConfig
from warmstart.serving.spec import build_spec

IMAGE = "127.0.0.1:5000/models/embedder:v1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Tiers:
    """A tier source whose answer leaves out the nodes in ``unknown`` (agent not answering)."""

    def __init__(self, values: dict[str, Tier]) -> None:
        self.values = values
        self.unknown: set[str] = set()

    async def tiers(
        self, image: str, nodes: Sequence[NodeHandle], model: str | None = None
    ) -> dict[str, NodeTiers]:
        return {
            n.name: NodeTiers(self.values.get(n.name, Tier.COLD))
            for n in nodes
            if n.name not in self.unknown
        }


class Agents:
    """The nodes' agents: a pre-warm makes the node hot, unless the node is in ``refuse``."""

    def __init__(self, tiers: Tiers) -> None:
        self.tiers = tiers
        self.calls: list[str] = []
        self.refuse: set[str] = set()

    async def __call__(self, node: NodeHandle, image: str) -> None:
        self.calls.append(node.name)
        if node.name in self.refuse:
            raise RuntimeError("agent answered HTTP 507: the image does not fit the store budget")
        self.tiers.values[node.name] = Tier.HOT


def make(
    names: Sequence[str] = ("node-a", "node-b", "node-c"), **spec: object
) -> tuple[Controller, Tiers, Agents, Clock]:
    tiers = Tiers({"node-a": Tier.HOT})
    agents = Agents(tiers)
    clock = Clock()

    async def ping(url: str) -> bool:
        return True

    ctl = Controller(
        build_spec({"name": "embedder", "image": IMAGE, "min_replicas": 1, **spec}),
        [NodeHandle(name, MemoryRuntime(), slots=1) for name in names],
        Router(RouterConfig(queue_size=100, queue_timeout=5)),
        ping=ping,
        tiers=tiers,
        prewarm=agents,
        clock=clock,
    )
    return ctl, tiers, agents, clock


async def tick(ctl: Controller, clock: Clock, seconds: float = 1.0) -> None:
    await ctl.tick()
    await ctl.settle()
    clock.now += seconds


# -- the backoff, pure ----------------------------------------------------------------------


def test_retry_delay_doubles_from_the_minimum_to_the_cap() -> None:
    delays = [prewarm_retry_delay(n) for n in range(9)]
    assert delays == [0.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0, 300.0]
    assert (PREWARM_RETRY_MIN_SECONDS, PREWARM_RETRY_MAX_SECONDS) == (10.0, 300.0)
    assert prewarm_retry_delay(10**9) == PREWARM_RETRY_MAX_SECONDS  # no overflow


def test_prewarm_failed_counts_in_a_row() -> None:
    first = prewarm_failed(None, 100.0)
    assert first == PrewarmFailure(1, 100.0)
    assert prewarm_failed(first, 111.0) == PrewarmFailure(2, 111.0)


@pytest.mark.parametrize(
    ("now", "succeeded_at", "failure", "expected"),
    [
        pytest.param(0.0, None, None, True, id="never-tried"),
        pytest.param(1299.0, 1000.0, None, False, id="succeeded-recently"),
        pytest.param(1000.0 + PREWARM_MEMORY_SECONDS, 1000.0, None, True, id="memory-over"),
        pytest.param(1009.9, None, PrewarmFailure(1, 1000.0), False, id="first-backoff"),
        pytest.param(1010.0, None, PrewarmFailure(1, 1000.0), True, id="first-backoff-over"),
        pytest.param(1039.0, None, PrewarmFailure(3, 1000.0), False, id="third-backoff"),
        pytest.param(1040.0, None, PrewarmFailure(3, 1000.0), True, id="third-backoff-over"),
        pytest.param(1299.0, None, PrewarmFailure(20, 1000.0), False, id="capped-backoff"),
        pytest.param(1300.0, None, PrewarmFailure(20, 1000.0), True, id="capped-backoff-over"),
    ],
)
def test_prewarm_due(
    now: float, succeeded_at: float | None, failure: PrewarmFailure | None, expected: bool
) -> None:
    assert prewarm_due(now, succeeded_at, failure) is expected


# -- the controller -------------------------------------------------------------------------


async def test_default_spec_prewarms_every_node_the_endpoint_may_scale_to() -> None:
    ctl, _tiers, agents, clock = make()  # max_replicas = 4 by default, 3 one-slot nodes
    await tick(ctl, clock)
    assert [r.node for r in ctl.replicas.values()] == ["node-a"]
    assert sorted(agents.calls) == ["node-b", "node-c"]  # idle, yet both are pre-warmed
    for _ in range(5):
        await tick(ctl, clock)
    assert sorted(agents.calls) == ["node-b", "node-c"]  # hot now: not pre-warmed again


async def test_prewarm_spare_limits_and_zero_turns_it_off() -> None:
    ctl, _tiers, agents, clock = make(prewarm_spare=1)
    await tick(ctl, clock)
    assert agents.calls == ["node-b"]
    ctl, _tiers, agents, clock = make(prewarm_spare=0)
    for _ in range(5):
        await tick(ctl, clock)
    assert agents.calls == []  # idle: nothing near capacity


async def test_a_failed_prewarm_backs_off_instead_of_retrying_every_tick() -> None:
    ctl, tiers, agents, clock = make()
    agents.refuse = {"node-b"}
    for _ in range(100):  # t = 1000 .. 1099, one tick a second
        await tick(ctl, clock)
    # Tried at 1000, then 10 s, 20 s, 40 s after each failure: 1010, 1030, 1070 (next 1150).
    assert agents.calls.count("node-b") == 4
    assert agents.calls.count("node-c") == 1
    failed = [e for e in ctl.events if e.kind == "prewarm-failed"]
    assert [e.at for e in failed] == [1000.0, 1010.0, 1030.0, 1070.0]
    assert "store budget" in failed[0].message and "next try in 10s" in failed[0].message
    assert "next try in 80s" in failed[-1].message
    agents.refuse = set()  # room in the budget now: the next try succeeds, and it stays hot
    for _ in range(60):  # t = 1100 .. 1159
        await tick(ctl, clock)
    assert agents.calls.count("node-b") == 5
    assert tiers.values["node-b"] is Tier.HOT
    assert ctl.prewarms_in_flight == 0


async def test_a_node_added_later_is_prewarmed_on_the_next_tick() -> None:
    ctl, _tiers, agents, clock = make(max_replicas=4)
    await tick(ctl, clock)
    assert sorted(agents.calls) == ["node-b", "node-c"]
    await tick(ctl, clock)
    ctl.nodes["node-d"] = NodeHandle("node-d", MemoryRuntime(), slots=1)
    await tick(ctl, clock)
    assert agents.calls[-1] == "node-d"
    assert sorted(agents.calls) == ["node-b", "node-c", "node-d"]


async def test_a_node_that_was_unreachable_is_prewarmed_when_it_appears() -> None:
    ctl, tiers, agents, clock = make()
    tiers.unknown = {"node-c"}  # its agent does not answer: a pre-warm fails too
    agents.refuse = {"node-c"}
    for _ in range(35):  # t = 1000 .. 1034: tried at 1000, 1010, 1030; next not before 1070
        await tick(ctl, clock)
    assert agents.calls.count("node-c") == 3
    await tick(ctl, clock)
    assert agents.calls.count("node-c") == 3  # backing off
    tiers.unknown = set()  # the agent answers again (and now has room)
    agents.refuse = set()
    await tick(ctl, clock)  # t = 1036: pre-warmed at once, not at 1070
    assert agents.calls.count("node-c") == 4
    assert tiers.values["node-c"] is Tier.HOT
    assert [e.message for e in ctl.events if e.kind == "prewarm"][-1].endswith("on node-c")


async def test_a_failed_tier_lookup_does_not_reset_the_backoff() -> None:
    ctl, tiers, agents, clock = make()
    agents.refuse = {"node-b"}
    await tick(ctl, clock)  # t = 1000: fails, next try at 1010
    assert agents.calls.count("node-b") == 1

    async def broken(
        image: str, nodes: Sequence[NodeHandle], model: str | None = None
    ) -> dict[str, NodeTiers]:
        raise RuntimeError("status timed out")

    answer = tiers.tiers
    tiers.tiers = broken  # type: ignore[method-assign]
    await tick(ctl, clock)
    tiers.tiers = answer  # type: ignore[method-assign]
    for _ in range(5):  # t = 1002 .. 1006: still within the backoff
        await tick(ctl, clock)
    assert agents.calls.count("node-b") == 1
