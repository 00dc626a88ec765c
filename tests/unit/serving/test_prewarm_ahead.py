from __future__ import annotations

from typing import Any

import pytest

from warmstart.oci.tiers import Tier
from warmstart.serving.autoscaler import LoadSnapshot
from warmstart.serving.placement import Node, PlacedReplica
from warmstart.serving.prewarm_ahead import (
    near_capacity,
    prewarm_targets,
    recent_demand,
    replicas_ahead,
    spare_count,
)
from warmstart.serving.spec import EndpointSpec, build_spec

from .helpers import NOW, snap, spec

# five replicas fill the hot node; the next go to the warm node, then the cold one
NODES = [Node("hot", 5, Tier.HOT), Node("warm", 2, Tier.WARM), Node("cold", 4, Tier.COLD)]
ON_HOT = [PlacedReplica(f"r{i}", "hot") for i in range(5)]
# The demand-driven rows turn the spares off: by default every node the endpoint may scale to
# is a target whatever the load, which would hide what demand adds.
DEMAND_ONLY: dict[str, Any] = {"prewarm_spare": 0}


@pytest.mark.parametrize(
    ("fields", "snapshot", "nodes", "replicas", "expected"),
    [
        pytest.param(DEMAND_ONLY, snap(5, (60, 3)), NODES, ON_HOT, [], id="far-from-capacity"),
        pytest.param(
            DEMAND_ONLY, snap(5, (60, 3.9)), NODES, ON_HOT, [], id="just-outside-headroom"
        ),
        pytest.param(DEMAND_ONLY, snap(5, (60, 4)), NODES, ON_HOT, ["warm"], id="within-headroom"),
        pytest.param(
            DEMAND_ONLY,
            snap(5, (54, 2), (6, 4.5)),
            NODES,
            ON_HOT,
            ["warm"],
            id="recent-rise-counts",
        ),
        pytest.param(
            DEMAND_ONLY,
            snap(5, (60, 8)),
            NODES,
            ON_HOT,
            ["warm", "cold"],
            id="several-replicas-ahead",
        ),
        pytest.param(
            {**DEMAND_ONLY, "max_scale_up_step": 1},
            snap(5, (60, 8)),
            NODES,
            ON_HOT,
            ["warm"],
            id="up-step-limits-lookahead",
        ),
        pytest.param(
            {**DEMAND_ONLY, "max_replicas": 5},
            snap(5, (60, 8)),
            NODES,
            ON_HOT,
            [],
            id="already-at-max",
        ),
        pytest.param(
            {**DEMAND_ONLY, "max_replicas": 6},
            snap(5, (60, 8)),
            NODES,
            ON_HOT,
            ["warm"],
            id="one-below-max",
        ),
        pytest.param(
            DEMAND_ONLY,
            snap(4, (60, 4)),
            NODES,
            ON_HOT[:4],
            [],
            id="next-node-already-hot",
        ),
        pytest.param(
            DEMAND_ONLY,
            snap(3, (60, 3.5), starting=2),
            NODES,
            ON_HOT,
            [],
            id="starting-replicas-are-capacity",
        ),
        pytest.param(
            {**DEMAND_ONLY, "prewarm_headroom": 0.0},
            snap(5, (60, 4.5)),
            NODES,
            ON_HOT,
            [],
            id="no-headroom-below-capacity",
        ),
        pytest.param(
            {**DEMAND_ONLY, "prewarm_headroom": 0.0},
            snap(5, (60, 5)),
            NODES,
            ON_HOT,
            ["warm"],
            id="no-headroom-at-capacity",
        ),
        pytest.param(
            {**DEMAND_ONLY, "target_concurrency": 4},
            snap(5, (60, 16)),
            NODES,
            ON_HOT,
            ["warm"],
            id="capacity-uses-target",
        ),
        pytest.param(
            {**DEMAND_ONLY, "scale_to_zero": True},
            snap(0, (60, 0)),
            [Node("hot", 1, Tier.HOT, used=1), Node("peer", 2, Tier.PEER)],
            [],
            ["peer"],
            id="scaled-to-zero-keeps-next-node-warm",
        ),
        pytest.param(
            DEMAND_ONLY,
            snap(5, (60, 8)),
            [Node("hot", 5, Tier.HOT)],
            ON_HOT,
            [],
            id="cluster-full",
        ),
        pytest.param(
            {"prewarm_spare": 1},
            snap(5, (60, 0)),
            NODES,
            ON_HOT,
            ["warm"],
            id="spare-node-kept-hot-when-idle",
        ),
        pytest.param(
            {"prewarm_spare": 3},
            snap(5, (60, 0)),
            NODES,
            ON_HOT,
            ["warm", "cold"],
            id="spares-in-placement-order",
        ),
        pytest.param(
            {"prewarm_spare": 3, "max_replicas": 6},
            snap(5, (60, 0)),
            NODES,
            ON_HOT,
            ["warm"],
            id="spares-within-max-replicas",
        ),
        pytest.param(
            {"prewarm_spare": 1},
            snap(5, (60, 8)),
            NODES,
            ON_HOT,
            ["warm", "cold"],
            id="demand-asks-more-than-spares",
        ),
    ],
)
def test_prewarm_targets(
    fields: dict[str, Any],
    snapshot: LoadSnapshot,
    nodes: list[Node],
    replicas: list[PlacedReplica],
    expected: list[str],
) -> None:
    targets = prewarm_targets(spec(**fields), snapshot, nodes, replicas)
    assert [n.name for n in targets] == expected


def test_recent_demand_takes_the_larger_window() -> None:
    s = spec()
    assert recent_demand(s, snap(1, (54, 0), (6, 6))) == pytest.approx(6.0)
    assert recent_demand(s, snap(1, (54, 6), (6, 0))) == pytest.approx(5.4)
    assert recent_demand(s, LoadSnapshot(now=NOW, ready=1)) == 0.0


@pytest.mark.parametrize(
    ("demand", "capacity", "expected"),
    [(0.0, 0.0, True), (7.9, 10.0, False), (8.0, 10.0, True), (12.0, 10.0, True)],
)
def test_near_capacity(demand: float, capacity: float, expected: bool) -> None:
    assert near_capacity(spec(), demand, capacity) is expected


def test_replicas_ahead() -> None:
    s = spec()
    assert replicas_ahead(s, snap(5, (60, 4)), 4.0) == 1
    assert replicas_ahead(s, snap(5, (60, 8)), 8.0) == 5  # ceil(8 * 1.2) - 5
    assert replicas_ahead(spec(max_replicas=6), snap(5, (60, 8)), 8.0) == 1
    assert replicas_ahead(spec(max_replicas=5), snap(5, (60, 8)), 8.0) == 0


# Hot by default: four one-slot nodes, the one replica on "a" (where its image is hot).
FOUR = [Node("a", 1, Tier.HOT), Node("b", 1), Node("c", 1), Node("d", 1)]
ON_A = [PlacedReplica("r1", "a")]
IDLE = snap(1, (60, 0))


def default_spec(**fields: Any) -> EndpointSpec:
    """The spec with every setting at its default (``max_replicas = 4``) unless given."""
    return build_spec({"name": "llm", "image": "registry.example/llm/qwen3:8b", **fields})


@pytest.mark.parametrize(
    ("fields", "snapshot", "nodes", "replicas", "expected"),
    [
        pytest.param({}, IDLE, FOUR, ON_A, ["b", "c", "d"], id="default-every-node-it-may-use"),
        pytest.param({"max_replicas": 2}, IDLE, FOUR, ON_A, ["b"], id="default-within-max"),
        pytest.param({"prewarm_spare": 0}, IDLE, FOUR, ON_A, [], id="spare-0-idle-none"),
        pytest.param(
            {"prewarm_spare": 0}, snap(1, (60, 1)), FOUR, ON_A, ["b"], id="spare-0-near-capacity"
        ),
        pytest.param({"prewarm_spare": 1}, IDLE, FOUR, ON_A, ["b"], id="spare-1"),
        pytest.param({"prewarm_spare": 2}, IDLE, FOUR, ON_A, ["b", "c"], id="spare-2"),
        pytest.param(
            {"prewarm_spare": 9}, IDLE, FOUR, ON_A, ["b", "c", "d"], id="spare-above-room"
        ),
        pytest.param(
            {},
            IDLE,
            [Node("a", 1, Tier.HOT), Node("b", 1), Node("c", 1, Tier.HOT), Node("d", 1)],
            ON_A,
            ["b", "d"],
            id="hot-nodes-are-not-targets",
        ),
        pytest.param({"max_replicas": 1}, IDLE, FOUR, ON_A, [], id="at-max-replicas"),
        pytest.param(
            {},
            snap(1, (60, 0), starting=2),
            FOUR,
            [*ON_A, PlacedReplica("r2", "b", ready=False), PlacedReplica("r3", "c", ready=False)],
            ["d"],
            id="starting-replicas-use-up-room",
        ),
        pytest.param(
            {"max_replicas": 2},
            IDLE,
            [Node("a", 1, Tier.HOT), Node("b", 1), Node("c", 1, Tier.WARM), Node("d", 1)],
            ON_A,
            ["c"],
            id="placement-order-warm-first",
        ),
        pytest.param(
            {},
            IDLE,
            [Node("a", 2, Tier.HOT), Node("b", 2), Node("c", 2)],
            ON_A,
            ["b", "c"],
            id="free-slot-on-a-hot-node-needs-nothing",
        ),
        pytest.param(
            {"scale_to_zero": True},
            snap(0, (60, 0)),
            FOUR,
            [],
            ["b", "c", "d"],
            id="scaled-to-zero-every-node",
        ),
        pytest.param(
            {},
            IDLE,
            [
                Node("a", 1, Tier.HOT, model_tier=Tier.HOT),
                Node("b", 1, Tier.HOT, model_tier=Tier.WARM),
                Node("c", 1, Tier.HOT, model_tier=Tier.HOT),
                Node("d", 1, Tier.WARM, model_tier=Tier.HOT),
            ],
            ON_A,
            ["b", "d"],
            id="model-a-node-is-hot-only-when-image-and-model-are",
        ),
        pytest.param(
            {"prewarm_spare": 1},
            IDLE,
            [
                Node("a", 1, Tier.HOT, model_tier=Tier.HOT),
                Node("b", 1, Tier.HOT, model_tier=Tier.COLD),
                Node("c", 1, Tier.WARM, model_tier=Tier.WARM),
                Node("d", 1, Tier.PEER, model_tier=Tier.PEER),
            ],
            ON_A,
            ["c"],
            id="model-spares-in-combined-placement-order",
        ),
    ],
)
def test_prewarm_targets_hot_by_default(
    fields: dict[str, Any],
    snapshot: LoadSnapshot,
    nodes: list[Node],
    replicas: list[PlacedReplica],
    expected: list[str],
) -> None:
    targets = prewarm_targets(default_spec(**fields), snapshot, nodes, replicas)
    assert [n.name for n in targets] == expected


@pytest.mark.parametrize(
    ("spare", "ready", "starting", "expected"),
    [(None, 1, 0, 3), (None, 2, 1, 1), (None, 4, 0, 0), (None, 5, 0, 0), (0, 1, 0, 0),
     (2, 1, 0, 2), (5, 1, 0, 3), (2, 3, 0, 1)],
)  # fmt: skip
def test_spare_count(spare: int | None, ready: int, starting: int, expected: int) -> None:
    s = default_spec() if spare is None else default_spec(prewarm_spare=spare)
    assert spare_count(s, LoadSnapshot(now=NOW, ready=ready, starting=starting)) == expected
