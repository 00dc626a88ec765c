"""An endpoint with a model, over the in-memory runtime and fake agents (no clock, no network):
every replica gets the node's materialised model read-only at /opt/ml/model, the model is pinned
on a node while a replica there uses it and unpinned after the last one goes, the image's pull
and the model's fetch run at once, placement and pre-warm ahead count the model's tier."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from warmstart.agent.api import (
    ModelMaterialisation,
    PrewarmRequest,
    PrewarmResponse,
    UnpinResponse,
)
from warmstart.agent.client import AgentRefused, AgentUnreachable
from warmstart.oci.tiers import Tier
from warmstart.runtime.interfaces import ImagePullError, Mount
from warmstart.runtime.memory import MemoryRuntime
from warmstart.serving.controller import Controller
from warmstart.serving.models import MODEL_DIR, UNPIN_TIMEOUT, ModelUsers
from warmstart.serving.replicas import PHASES, NodeHandle, StaticTiers
from warmstart.serving.router import Router, RouterConfig
from warmstart.serving.spec import build_spec

IMAGE = "127.0.0.1:5000/models/server:v1"
MODEL = "127.0.0.1:5000/weights/minilm:v1"
NAMES = ("node-a", "node-b", "node-c")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def model_dir(node: str) -> str:
    return f"/srv/{node}/store/models/sha256/{'ab' * 32}"


@dataclass
class FakeAgent:
    """One node's agent: pins are one per reference, as the real agent keeps them."""

    node: str
    calls: list[tuple[str, str, bool, bool, bool]] = field(default_factory=list)
    unpins: list[tuple[str, float | None]] = field(default_factory=list)
    pins: set[str] = field(default_factory=set)
    gate: asyncio.Event | None = None  # holds every prewarm until set
    unpin_gate: asyncio.Event | None = None
    refuse: Exception | None = None
    in_flight: int = 0

    async def prewarm(self, request: PrewarmRequest) -> PrewarmResponse:
        ref = str(request.reference)
        self.calls.append(("prewarm", ref, request.hot, request.pin, request.model))
        assert request.holder == ("endpoint/embed" if request.pin else None), request.holder
        self.in_flight += 1
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.refuse is not None:
                raise self.refuse
        finally:
            self.in_flight -= 1
        if request.pin:
            self.pins.add(ref)
        materialised = ModelMaterialisation(
            path=model_dir(self.node), reference_path=f"/srv/{self.node}/by-ref", files=2,
            linked_bytes=10, extracted_bytes=0, seconds=0.01, built=True,
        )  # fmt: skip
        return PrewarmResponse(
            reference=ref, digest="sha256:" + "ab" * 32, manifest_digest="sha256:" + "ab" * 32,
            platform=None, blobs=2, bytes=10, sources={"upstream": 10}, warm_seconds=0.1,
            seconds=0.1, hot=request.hot, model_format="modelpack",
            model=materialised if request.model and request.hot else None,
        )  # fmt: skip

    async def unpin(
        self, reference: str, *, holder: str | None = None, time_limit: float | None = None
    ) -> UnpinResponse:
        assert holder == "endpoint/embed", holder  # only this endpoint's pin, no one else's
        self.unpins.append((reference, time_limit))
        if self.unpin_gate is not None:
            await self.unpin_gate.wait()
        released = reference in self.pins
        self.pins.discard(reference)
        return UnpinResponse(reference=reference, released=released)


@dataclass
class Setup:
    ctl: Controller
    runtimes: dict[str, MemoryRuntime]
    agents: dict[str, FakeAgent]
    router: Router
    clock: Clock
    image_prewarms: list[str]

    async def tick(self, seconds: float = 1.0) -> None:
        await self.ctl.tick()
        await self.ctl.settle()
        self.clock.now += seconds

    def mounts(self, replica_id: str) -> tuple[Mount, ...]:
        node = self.ctl.replicas[replica_id].node
        return tuple(self.runtimes[node].replicas[replica_id].spec.mounts)


def make(
    *,
    tiers: dict[str, Tier] | None = None,
    models: dict[str, Tier] | None = None,
    prewarm: bool = False,
    names: Sequence[str] = NAMES,
    slots: int = 2,
    **spec: object,
) -> Setup:
    runtimes = {name: MemoryRuntime() for name in names}
    agents = {name: FakeAgent(name) for name in names}
    router = Router(RouterConfig(queue_size=100, queue_timeout=5))
    clock = Clock()
    image_prewarms: list[str] = []

    async def ping(url: str) -> bool:
        return True

    async def prewarm_image(node: NodeHandle, image: str) -> None:
        image_prewarms.append(node.name)

    settings: dict[str, object] = {
        "name": "embed", "image": IMAGE, "model": MODEL, "max_replicas": 6,
        "prewarm_spare": 0, **spec,
    }  # fmt: skip
    ctl = Controller(
        build_spec(settings),
        [NodeHandle(name, rt, slots=slots) for name, rt in runtimes.items()],
        router,
        ping=ping,
        tiers=StaticTiers(tiers, models),
        prewarm=prewarm_image if prewarm else None,
        agents=lambda node: agents[node.name],
        clock=clock,
    )
    return Setup(ctl, runtimes, agents, router, clock, image_prewarms)


def pinned(setup: Setup) -> dict[str, bool]:
    return {name: MODEL in agent.pins for name, agent in setup.agents.items()}


# -- the mount and the pin ---------------------------------------------------------------------


async def test_a_replica_gets_the_nodes_model_read_only_at_opt_ml_model() -> None:
    s = make(tiers={"node-b": Tier.HOT}, models={"node-b": Tier.HOT}, min_replicas=1)
    await s.tick()
    [(rid, replica)] = s.ctl.replicas.items()
    assert (replica.node, replica.state) == ("node-b", "ready")
    assert s.mounts(rid) == (Mount(model_dir("node-b"), MODEL_DIR, read_only=True),)
    assert MODEL_DIR == "/opt/ml/model"
    # The node's agent was asked for the model materialised (hot) and pinned.
    assert s.agents["node-b"].calls == [("prewarm", MODEL, True, True, True)]
    assert pinned(s) == {"node-a": False, "node-b": True, "node-c": False}
    assert s.ctl.model_users.nodes() == {"node-b": 1}
    shown = s.ctl.status().to_dict()
    [row] = shown["replicas"]  # type: ignore[misc]
    assert row["model_path"] == model_dir("node-b") and row["model_tier"] == "hot"
    assert row["model_seconds"] is not None
    assert [n["model_tier"] for n in shown["nodes"]] == ["cold", "hot", "cold"]  # type: ignore[index,union-attr]
    ready = [e.message for e in s.ctl.events if e.kind == "ready"]
    assert "model" in ready[0] and "beside the pull" in ready[0]


async def test_the_pin_is_released_when_the_last_replica_on_the_node_goes() -> None:
    s = make(tiers={"node-a": Tier.HOT}, models={"node-a": Tier.HOT}, min_replicas=2,
             scale_down_delay=0, stable_window=2, panic_window=1)  # fmt: skip
    await s.tick()
    assert sorted(r.node for r in s.ctl.replicas.values()) == ["node-a", "node-a"]
    agent = s.agents["node-a"]
    assert [c[3] for c in agent.calls] == [True, True] and agent.pins == {MODEL}
    first, second = list(s.ctl.replicas.values())
    await s.ctl._stop_replica(first)
    assert agent.unpins == [] and agent.pins == {MODEL}  # the other replica still reads it
    assert s.ctl.model_users.nodes() == {"node-a": 1}
    await s.ctl._stop_replica(second)
    assert agent.unpins == [(MODEL, UNPIN_TIMEOUT)] and agent.pins == set()
    assert s.ctl.model_users.nodes() == {}


async def test_a_crashed_replica_releases_the_pin_and_its_replacement_takes_it_again() -> None:
    s = make(tiers={"node-a": Tier.HOT}, models={"node-a": Tier.HOT}, min_replicas=1)
    await s.tick()
    [rid] = s.ctl.replicas
    s.runtimes["node-a"].exit(rid, 137)
    await s.tick()  # reaped: the pin goes with it
    assert s.agents["node-a"].unpins == [(MODEL, UNPIN_TIMEOUT)]
    await s.tick()  # replaced: pinned again
    assert len(s.ctl.replicas) == 1 and rid not in s.ctl.replicas
    assert s.agents["node-a"].pins == {MODEL}


async def test_shutdown_unpins_every_node() -> None:
    s = make(min_replicas=3, slots=1)
    await s.tick()
    assert pinned(s) == dict.fromkeys(NAMES, True)
    await s.ctl.shutdown()
    assert pinned(s) == dict.fromkeys(NAMES, False)
    assert all(a.unpins == [(MODEL, UNPIN_TIMEOUT)] for a in s.agents.values())


async def test_an_unpin_in_flight_never_lands_after_a_new_replicas_pin() -> None:
    s = make(tiers={"node-a": Tier.HOT}, models={"node-a": Tier.HOT}, min_replicas=1)
    await s.tick()
    agent = s.agents["node-a"]
    [old] = s.ctl.replicas.values()
    agent.unpin_gate = asyncio.Event()
    stopping = asyncio.create_task(s.ctl._stop_replica(old))
    for _ in range(5):
        await asyncio.sleep(0)
    assert agent.unpins == [(MODEL, UNPIN_TIMEOUT)]  # sent, not answered yet
    s.ctl._start_replica("node-a", s.clock.now)  # a new replica on the node meanwhile
    for _ in range(5):
        await asyncio.sleep(0)
    assert [c[0] for c in agent.calls] == ["prewarm"]  # its pin waits for the unpin
    agent.unpin_gate.set()
    await stopping
    await s.ctl.settle()
    assert [c[0] for c in agent.calls] == ["prewarm", "prewarm"]
    assert agent.pins == {MODEL}  # pinned, and the replica using it is running
    assert [r.state for r in s.ctl.replicas.values()] == ["ready"]


async def test_a_replica_stopped_while_it_fetches_keeps_the_pin_until_its_start_ends() -> None:
    s = make(min_replicas=1, names=("node-a",))
    agent = s.agents["node-a"]
    agent.gate = asyncio.Event()
    await s.ctl.tick()
    for _ in range(5):
        await asyncio.sleep(0)
    [replica] = s.ctl.replicas.values()
    await s.ctl._stop_replica(replica)  # a scale-down chose it while the model was in flight
    assert s.ctl.replicas == {} and agent.unpins == []  # its pre-warm may still pin it
    agent.gate.set()
    await s.ctl.settle()
    assert agent.pins == set() and agent.unpins == [(MODEL, UNPIN_TIMEOUT)]
    assert s.runtimes["node-a"].replicas == {} and s.ctl.model_users.nodes() == {}


async def test_an_unpin_that_fails_is_an_event() -> None:
    s = make(min_replicas=1)
    await s.tick()
    [replica] = s.ctl.replicas.values()

    async def down(
        reference: str, *, holder: str | None = None, time_limit: float | None = None
    ) -> UnpinResponse:
        raise AgentUnreachable("http://a", "cannot reach the agent: connection refused")

    s.agents[replica.node].unpin = down  # type: ignore[method-assign]
    await s.ctl._stop_replica(replica)
    [event] = [e for e in s.ctl.events if e.kind == "unpin-failed"]
    assert MODEL in event.message and "connection refused" in event.message
    assert s.ctl.replicas == {} and s.ctl.model_users.nodes() == {}


# -- the concurrent fetch and the phases ------------------------------------------------------


async def test_the_pull_and_the_model_fetch_run_at_once_and_the_phases_add_up() -> None:
    s = make(min_replicas=1, names=("node-a",))
    runtime, agent = s.runtimes["node-a"], s.agents["node-a"]
    pull_gate, model_gate = asyncio.Event(), asyncio.Event()
    runtime.gates["pull"] = pull_gate
    agent.gate = model_gate
    await s.ctl.tick()
    for _ in range(5):
        await asyncio.sleep(0)
    # Both are in flight together: neither waited for the other.
    assert ("pull", IMAGE) in runtime.calls and agent.in_flight == 1
    assert not any(op == "create" for op, _ in runtime.calls)
    [replica] = s.ctl.replicas.values()
    started = replica.started_at
    s.clock.now += 5.0
    pull_gate.set()  # the image is there after 5 s ...
    for _ in range(5):
        await asyncio.sleep(0)
    assert not any(op == "create" for op, _ in runtime.calls)  # ... and waits for the model
    s.clock.now += 2.0
    model_gate.set()  # ... which is there after 7 s
    await s.ctl.settle()
    assert replica.state == "ready"
    assert list(replica.phases) == list(PHASES)
    assert replica.phases["pull"] + replica.phases["unpack"] == pytest.approx(5.0)
    assert replica.phases["model"] == pytest.approx(2.0)  # what the pull did not hide
    assert replica.model_seconds == pytest.approx(7.0)
    assert replica.ready_seconds == pytest.approx(s.clock.now - started)
    assert sum(replica.phases.values()) == pytest.approx(replica.ready_seconds)
    assert replica.runtime_replica is not None
    assert replica.runtime_replica.timings.model_seconds == pytest.approx(7.0)


async def test_a_model_ready_before_the_image_costs_no_model_phase() -> None:
    s = make(min_replicas=1, names=("node-a",))
    pull_gate = asyncio.Event()
    s.runtimes["node-a"].gates["pull"] = pull_gate
    await s.ctl.tick()
    for _ in range(5):
        await asyncio.sleep(0)
    s.clock.now += 3.0
    pull_gate.set()
    await s.ctl.settle()
    [replica] = s.ctl.replicas.values()
    assert replica.phases["model"] == 0.0 and replica.model_seconds == 0.0
    assert sum(replica.phases.values()) == pytest.approx(replica.ready_seconds)


async def test_a_model_the_agent_refuses_fails_the_start_and_leaves_no_pin() -> None:
    s = make(min_replicas=1, names=("node-a",))
    s.agents["node-a"].refuse = AgentRefused("http://a", "HTTP 404: manifest unknown", 404)
    await s.tick()
    failed = [e.message for e in s.ctl.events if e.kind == "failed"]
    assert failed and MODEL in failed[0] and "manifest unknown" in failed[0]
    assert "\n" not in failed[0]
    assert s.ctl.replicas == {} and s.runtimes["node-a"].replicas == {}
    assert s.ctl.model_users.nodes() == {} and s.agents["node-a"].pins == set()


async def test_a_failed_pull_releases_the_model_pinned_beside_it() -> None:
    s = make(min_replicas=1, names=("node-a",))
    s.runtimes["node-a"].fail_next("pull", ImagePullError("registry down"))
    await s.tick()
    failed = [e.message for e in s.ctl.events if e.kind == "failed"]
    assert failed and "registry down" in failed[0]
    agent = s.agents["node-a"]
    assert agent.calls == [("prewarm", MODEL, True, True, True)]  # it ran to its end
    assert agent.unpins == [(MODEL, UNPIN_TIMEOUT)] and agent.pins == set()
    assert s.ctl.model_users.nodes() == {}


async def test_an_agent_answer_without_a_directory_fails_the_start() -> None:
    s = make(min_replicas=1, names=("node-a",))
    agent = s.agents["node-a"]
    real = agent.prewarm

    async def no_dir(request: PrewarmRequest) -> PrewarmResponse:
        answer = await real(request)
        return answer.model_copy(update={"model": None})

    agent.prewarm = no_dir  # type: ignore[method-assign]
    await s.tick()
    failed = [e.message for e in s.ctl.events if e.kind == "failed"]
    assert failed and "did not materialise" in failed[0]
    assert agent.pins == set()  # unpinned with the failed replica


def test_an_endpoint_with_a_model_needs_agents() -> None:
    spec = build_spec({"name": "embed", "image": IMAGE, "model": MODEL})

    async def ping(url: str) -> bool:
        return True

    with pytest.raises(ValueError, match="agents"):
        Controller(spec, [NodeHandle("a", MemoryRuntime())], Router(RouterConfig()), ping=ping)


async def test_without_a_model_nothing_is_asked_of_the_agents() -> None:
    s = make(min_replicas=1, model=None)
    assert s.ctl.spec.model is None
    await s.tick()
    [(rid, replica)] = s.ctl.replicas.items()
    assert s.mounts(rid) == ()
    assert all(a.calls == [] for a in s.agents.values())
    assert "model" not in replica.phases and replica.model_seconds is None
    assert s.ctl.status().to_dict()["nodes"][0]["model_tier"] is None  # type: ignore[index]


# -- placement and pre-warm ahead ----------------------------------------------------------------


async def test_placement_prefers_the_node_where_image_and_model_are_both_ready() -> None:
    # node-a: image hot, model cold (a cold start, nearly); node-b: both warm.
    s = make(
        tiers={"node-a": Tier.HOT, "node-b": Tier.WARM},
        models={"node-a": Tier.COLD, "node-b": Tier.WARM, "node-c": Tier.HOT},
        min_replicas=1,
    )
    await s.tick()
    [replica] = s.ctl.replicas.values()
    assert replica.node == "node-b"
    assert (replica.tier, replica.model_tier) == (Tier.WARM, Tier.WARM)


async def test_prewarm_ahead_materialises_the_model_beside_the_image() -> None:
    s = make(
        tiers={"node-a": Tier.HOT, "node-b": Tier.HOT},
        models={"node-a": Tier.HOT},
        prewarm=True,
        min_replicas=1,
        slots=1,
        prewarm_spare=None,  # the default: every node the endpoint may scale to
    )
    await s.tick()
    assert [r.node for r in s.ctl.replicas.values()] == ["node-a"]
    # node-b: the image is hot already, only the model is brought; node-c: both, at once.
    assert s.image_prewarms == ["node-c"]
    assert s.agents["node-b"].calls == [("prewarm", MODEL, True, False, True)]
    assert s.agents["node-c"].calls == [("prewarm", MODEL, True, False, True)]
    assert s.agents["node-b"].pins == set()  # not pinned, as the image's pre-warm is not
    messages = {e.message for e in s.ctl.events if e.kind == "prewarm"}
    assert messages == {
        f"model {MODEL} materialised on node-b",
        f"{IMAGE} hot and model {MODEL} materialised on node-c",
    }


async def test_a_failed_model_prewarm_is_a_failed_prewarm_that_backs_off() -> None:
    s = make(prewarm=True, min_replicas=1, slots=1, prewarm_spare=None, names=("a", "b"))
    s.agents["b"].refuse = AgentRefused("http://b", "HTTP 507: does not fit the budget", 507)
    await s.tick()
    [event] = [e for e in s.ctl.events if e.kind == "prewarm-failed"]
    assert event.message.startswith("b: model ") and "budget" in event.message
    assert "next try in 10s" in event.message
    calls = len(s.agents["b"].calls)
    await s.tick()
    assert len(s.agents["b"].calls) == calls  # backing off, not every tick


# -- the users count, pure ---------------------------------------------------------------------


def test_model_users_counts_per_node() -> None:
    users = ModelUsers()
    users.acquire("a")
    users.acquire("a")
    users.acquire("b")
    assert users.nodes() == {"a": 2, "b": 1}
    assert users.release("a") is False
    assert users.release("b") is True
    assert users.release("a") is True
    assert users.nodes() == {} and users.count("a") == 0
    with pytest.raises(ValueError):
        users.release("a")
