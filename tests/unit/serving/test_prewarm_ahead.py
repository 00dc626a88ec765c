from __future__ import annotations

from typing import Any

import pytest

from warmstart.serving.autoscaler import Snapshot
from warmstart.serving.placement import Node, Replica, Tier
from warmstart.serving.prewarm_ahead import (
    near_capacity,
    prewarm_targets,
    recent_demand,
    replicas_ahead,
)

from .helpers import NOW, snap, spec

# five replicas fill the hot node; the next go to the warm node, then the cold one
NODES = [Node("hot", 5, Tier.HOT), Node("warm", 2, Tier.WARM), Node("cold", 4, Tier.COLD)]
ON_HOT = [Replica(f"r{i}", "hot") for i in range(5)]


@pytest.mark.parametrize(
    ("fields", "snapshot", "nodes", "replicas", "expected"),
    [
        pytest.param({}, snap(5, (60, 3)), NODES, ON_HOT, [], id="far-from-capacity"),
        pytest.param({}, snap(5, (60, 3.9)), NODES, ON_HOT, [], id="just-outside-headroom"),
        pytest.param({}, snap(5, (60, 4)), NODES, ON_HOT, ["warm"], id="within-headroom"),
        pytest.param(
            {}, snap(5, (54, 2), (6, 4.5)), NODES, ON_HOT, ["warm"], id="recent-rise-counts"
        ),
        pytest.param(
            {}, snap(5, (60, 8)), NODES, ON_HOT, ["warm", "cold"], id="several-replicas-ahead"
        ),
        pytest.param(
            {"max_scale_up_step": 1},
            snap(5, (60, 8)),
            NODES,
            ON_HOT,
            ["warm"],
            id="up-step-limits-lookahead",
        ),
        pytest.param({"max_replicas": 5}, snap(5, (60, 8)), NODES, ON_HOT, [], id="already-at-max"),
        pytest.param(
            {"max_replicas": 6},
            snap(5, (60, 8)),
            NODES,
            ON_HOT,
            ["warm"],
            id="one-below-max",
        ),
        pytest.param(
            {},
            snap(4, (60, 4)),
            NODES,
            ON_HOT[:4],
            [],
            id="next-node-already-hot",
        ),
        pytest.param(
            {},
            snap(3, (60, 3.5), starting=2),
            NODES,
            ON_HOT,
            [],
            id="starting-replicas-are-capacity",
        ),
        pytest.param(
            {"prewarm_headroom": 0.0},
            snap(5, (60, 4.5)),
            NODES,
            ON_HOT,
            [],
            id="no-headroom-below-capacity",
        ),
        pytest.param(
            {"prewarm_headroom": 0.0},
            snap(5, (60, 5)),
            NODES,
            ON_HOT,
            ["warm"],
            id="no-headroom-at-capacity",
        ),
        pytest.param(
            {"target_concurrency": 4},
            snap(5, (60, 16)),
            NODES,
            ON_HOT,
            ["warm"],
            id="capacity-uses-target",
        ),
        pytest.param(
            {"scale_to_zero": True},
            snap(0, (60, 0)),
            [Node("hot", 1, Tier.HOT, used=1), Node("peer", 2, Tier.PEER)],
            [],
            ["peer"],
            id="scaled-to-zero-keeps-next-node-warm",
        ),
        pytest.param(
            {},
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
    snapshot: Snapshot,
    nodes: list[Node],
    replicas: list[Replica],
    expected: list[str],
) -> None:
    targets = prewarm_targets(spec(**fields), snapshot, nodes, replicas)
    assert [n.name for n in targets] == expected


def test_recent_demand_takes_the_larger_window() -> None:
    s = spec()
    assert recent_demand(s, snap(1, (54, 0), (6, 6))) == pytest.approx(6.0)
    assert recent_demand(s, snap(1, (54, 6), (6, 0))) == pytest.approx(5.4)
    assert recent_demand(s, Snapshot(now=NOW, ready=1)) == 0.0


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
