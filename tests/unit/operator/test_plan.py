"""The planner (pure): which nodes keep an owner's images and what their agents must do."""

from __future__ import annotations

from typing import Any

import pytest

from warmstart.agent.api import ImageStatus, ModelStatus, StatusResponse, StoreStatus
from warmstart.operator.nodes import NodeInfo, eligible_nodes, node_info
from warmstart.operator.plan import Want, images_by_ref, plan_image_cache

IMG = "reg.example/app:v1"
OTHER = "reg.example/other:v1"
NOSCHED = {"key": "gpu", "value": "yes", "effect": "NoSchedule"}


def held(tier: str, ref: str = IMG, pinned: bool = True) -> dict[str, ImageStatus]:
    return {
        ref: ImageStatus(
            reference=ref,
            digest="sha256:" + "a" * 64,
            size=10,
            tier=tier,
            pinned=pinned,
            platform=None,
            last_used=0.0,
        )
    }


A = NodeInfo("a", {"pool": "gpu"})
B = NodeInfo("b", {"pool": "gpu"})
C = NodeInfo("c", {"pool": "cpu"})
NOT_READY = NodeInfo("d", {"pool": "gpu"}, ready=False)
CORDONED = NodeInfo("e", {"pool": "gpu"}, unschedulable=True)
TAINTED = NodeInfo("f", {"pool": "gpu"}, taints=(NOSCHED,))
ALL = [A, B, C, NOT_READY, CORDONED, TAINTED]
AGENTS = {n.name: f"http://{n.name}:5050" for n in ALL}
EMPTY: dict[str, dict[str, ImageStatus]] = {n: {} for n in AGENTS}

CASES = [
    pytest.param(Want((IMG,)), ALL, AGENTS, EMPTY, ("a", "b", "c", "f"), id="all-ready-nodes"),
    pytest.param(Want((IMG,), node_selector={"pool": "gpu"}), ALL, AGENTS, EMPTY, ("a", "b", "f"),
                 id="selector"),
    pytest.param(Want((IMG,), node_selector={"pool": "gpu"}, tolerations=()), ALL, AGENTS, EMPTY,
                 ("a", "b"), id="workload-without-toleration"),
    pytest.param(Want((IMG,), node_selector={"pool": "gpu"},
                      tolerations=({"key": "gpu", "operator": "Exists"},)),
                 ALL, AGENTS, EMPTY, ("a", "b", "f"), id="workload-tolerates"),
    pytest.param(Want((IMG,), count=2), ALL, AGENTS, EMPTY, ("a", "b"), id="count-by-name"),
    pytest.param(Want((IMG,), count=1), ALL, AGENTS, {**EMPTY, "c": held("hot")}, ("c",),
                 id="prefers-hot"),
    pytest.param(Want((IMG,), count=2), ALL, AGENTS,
                 {**EMPTY, "c": held("warm"), "f": held("partial")}, ("c", "f"),
                 id="warm-then-partial"),
    pytest.param(Want((IMG,), count=1), ALL, AGENTS, {**EMPTY, "b": held("hot", OTHER)}, ("a",),
                 id="other-images-do-not-count"),
    pytest.param(Want((IMG,), count=1, previous=frozenset({"c"})), ALL, AGENTS, EMPTY, ("c",),
                 id="keeps-last-choice"),
    pytest.param(Want((IMG,), count=1, previous=frozenset({"c"})), ALL, AGENTS,
                 {**EMPTY, "b": held("warm")}, ("b",), id="cheaper-beats-last-choice"),
    pytest.param(Want((IMG,), count=2), ALL, {"b": "u", "c": "u"}, EMPTY, ("b", "c"),
                 id="nodes-without-agent-last"),
    pytest.param(Want((IMG,), count=2), ALL, AGENTS, {k: v for k, v in EMPTY.items() if k != "a"},
                 ("b", "c"), id="agent-not-answering-last"),
    pytest.param(Want((IMG,), exclude=frozenset({"a", "b"}), count=5), ALL, AGENTS, EMPTY,
                 ("c", "f"), id="exclude-replica-nodes"),
    pytest.param(Want((IMG,), count=0), ALL, AGENTS, EMPTY, (), id="zero"),
    pytest.param(Want((IMG,)), [*ALL, NodeInfo("g")], AGENTS, EMPTY, ("a", "b", "c", "f", "g"),
                 id="new-node-added"),
]  # fmt: skip


@pytest.mark.parametrize(("want", "nodes", "agents", "statuses", "selected"), CASES)
def test_node_selection(
    want: Want, nodes: list[NodeInfo], agents: Any, statuses: Any, selected: tuple[str, ...]
) -> None:
    assert plan_image_cache(want, nodes, agents, statuses).selected == selected


TODO = [
    pytest.param(True, False, "warm", True, (IMG,), id="hot-wanted-warm-held"),
    pytest.param(True, False, "hot", True, (), id="hot-held"),
    pytest.param(False, False, "hot", True, (), id="warm-wanted-hot-held"),
    pytest.param(False, False, "partial", True, (IMG,), id="partial"),
    pytest.param(False, True, "warm", False, (IMG,), id="not-pinned-yet"),
    pytest.param(False, False, "warm", False, (), id="no-pin-wanted"),
]  # fmt: skip


@pytest.mark.parametrize(("hot", "pin", "tier", "pinned", "todo"), TODO)
def test_what_each_node_must_prewarm(
    hot: bool, pin: bool, tier: str, pinned: bool, todo: tuple[str, ...]
) -> None:
    plan = plan_image_cache(
        Want((IMG,), hot=hot, pin=pin), [A], AGENTS, {"a": held(tier, pinned=pinned)}
    )
    assert plan.prewarm.get("a", ()) == todo


def test_counts_and_nodes_without_agents() -> None:
    plan = plan_image_cache(Want((IMG,), count=4), [A, B], {"a": "u"}, {"a": {}})
    assert (plan.eligible, plan.wanted, plan.selected) == (2, 4, ("a", "b"))
    assert set(plan.prewarm) == {"a"}  # b has no agent to ask


def test_node_info_reads_readiness_cordons_and_taints() -> None:
    obj = {
        "metadata": {"name": "n", "labels": {"x": "1"}},
        "spec": {"unschedulable": True, "taints": [NOSCHED]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    info = node_info(obj)
    assert (info.name, info.ready, info.unschedulable, info.taints) == ("n", True, True, (NOSCHED,))
    assert not node_info({"metadata": {"name": "m"}}).ready
    assert eligible_nodes([info, node_info({"metadata": {"name": "m"}})]) == []


# -- models -----------------------------------------------------------------------------------

MODEL = "reg.example/models/llm:v1"


def model(tier: str, pinned: bool = True, ref: str = MODEL) -> ModelStatus:
    return ModelStatus(reference=ref, digest="sha256:" + "c" * 64, format="modelpack",
                       size=5, tier=tier, pinned=pinned, last_used=0.0)  # fmt: skip


MODEL_TODO = [
    pytest.param(False, "warm", True, None, (MODEL,), id="always-hot-even-if-images-warm"),
    pytest.param(False, "hot", True, None, (), id="materialised"),
    pytest.param(True, "partial", True, None, (MODEL,), id="partial"),
    pytest.param(True, "hot", False, None, (MODEL,), id="not-pinned-yet"),
    pytest.param(True, "hot", True, set(), (MODEL,), id="hot-but-not-linked-by-us"),
    pytest.param(True, "hot", True, {("a", MODEL)}, (), id="hot-and-linked-by-us"),
    pytest.param(True, None, True, {("a", MODEL)}, (MODEL,), id="absent"),
]  # fmt: skip


@pytest.mark.parametrize(("hot", "tier", "pinned", "linked", "todo"), MODEL_TODO)
def test_what_each_node_must_materialise(
    hot: bool, tier: str | None, pinned: bool, linked: Any, todo: tuple[str, ...]
) -> None:
    have = {} if tier is None else {MODEL: model(tier, pinned)}
    want = Want((IMG,), hot=hot, pin=True, models=(MODEL,))
    plan = plan_image_cache(want, [A], AGENTS, {"a": {**held("hot"), **have}}, linked)
    assert plan.prewarm_models.get("a", ()) == todo
    assert plan.prewarm.get("a", ()) == ()  # the image is there, pinned


MODEL_NODES = [
    pytest.param(Want((), models=(MODEL,), count=1), {**EMPTY, "c": {MODEL: model("hot")}},
                 ("c",), id="models-count-in-the-cost"),
    pytest.param(Want((), models=(MODEL,), count=1, required=frozenset({"f"})), EMPTY,
                 ("f", "a"), id="required-first-then-count"),
    pytest.param(Want((), models=(MODEL,), count=0, required=frozenset({"d", "zz"})), EMPTY,
                 ("d",), id="required-even-if-not-eligible-but-only-if-it-exists"),
    pytest.param(Want((), models=(MODEL,), count=2, required=frozenset({"a"}),
                      node_selector={"pool": "gpu"}), {**EMPTY, "b": {MODEL: model("hot")}},
                 ("a", "b", "f"), id="required-not-counted-twice"),
]  # fmt: skip


@pytest.mark.parametrize(("want", "statuses", "selected"), MODEL_NODES)
def test_model_node_selection(want: Want, statuses: Any, selected: tuple[str, ...]) -> None:
    plan = plan_image_cache(want, ALL, AGENTS, statuses)
    assert plan.selected == selected
    assert set(plan.prewarm_models) == {n for n in selected if MODEL not in statuses.get(n, {})}
    assert plan.prewarm == {}


def test_images_by_ref_lists_images_and_models() -> None:
    image = held("warm")[IMG]
    status = StatusResponse(
        node_id="n", url="http://n", store=StoreStatus(root="/s", usage=0, budget=None),
        images=[image], models=[model("hot")], peers=[], upstreams=[], default_upstream=None,
    )  # fmt: skip
    assert images_by_ref(status) == {IMG: image, MODEL: model("hot")}
    assert images_by_ref(None) == {}
