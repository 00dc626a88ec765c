from __future__ import annotations

import pytest

from warmstart.oci.tiers import Tier
from warmstart.serving.placement import (
    Node,
    PlacedReplica,
    choose_victims,
    place,
    placement_key,
    start_rank,
)


def names(nodes: list[Node]) -> list[str]:
    return [n.name for n in nodes]


def on(node: str, count: int, *, ready: bool = True, start: float = 0.0) -> list[PlacedReplica]:
    return [
        PlacedReplica(id=f"{node}-{i}", node=node, ready=ready, started_at=start + i)
        for i in range(count)
    ]


FOUR_TIERS = [
    Node("a", 4, Tier.COLD),
    Node("b", 4, Tier.WARM),
    Node("c", 4, Tier.HOT),
    Node("d", 4, Tier.PEER),
]


@pytest.mark.parametrize(
    ("count", "nodes", "replicas", "expected"),
    [
        pytest.param(1, FOUR_TIERS, [], ["c"], id="hot-first"),
        pytest.param(
            4,
            [Node(n.name, 1, n.tier) for n in FOUR_TIERS],
            [],
            ["c", "b", "d", "a"],
            id="hot-warm-peer-cold",
        ),
        pytest.param(
            1,
            [Node("hot", 4, Tier.HOT), Node("warm", 4, Tier.WARM)],
            on("hot", 3),
            ["hot"],
            id="tier-beats-load",
        ),
        pytest.param(
            1,
            [Node("w1", 4, Tier.WARM), Node("w2", 4, Tier.WARM)],
            on("w1", 2) + on("w2", 1),
            ["w2"],
            id="load-within-tier",
        ),
        pytest.param(
            1,
            [Node("big", 8, Tier.WARM), Node("small", 2, Tier.WARM)],
            on("big", 2) + on("small", 1),
            ["big"],
            id="load-is-a-fraction-of-slots",
        ),
        pytest.param(
            1,
            [Node("w1", 4, Tier.WARM, used=3), Node("w2", 4, Tier.WARM)],
            on("w2", 1),
            ["w2"],
            id="other-endpoints-count-as-load",
        ),
        pytest.param(
            4,
            [Node("a", 4, Tier.WARM), Node("b", 4, Tier.WARM)],
            [],
            ["a", "b", "a", "b"],
            id="spread-across-equal-nodes",
        ),
        pytest.param(
            3,
            [Node("b", 4, Tier.COLD), Node("a", 4, Tier.COLD), Node("c", 4, Tier.COLD)],
            [],
            ["a", "b", "c"],
            id="tie-break-by-name",
        ),
        pytest.param(
            1,
            [Node("hot", 2, Tier.HOT), Node("warm", 2, Tier.WARM)],
            on("hot", 2),
            ["warm"],
            id="full-node-skipped",
        ),
        pytest.param(
            1,
            [Node("hot", 2, Tier.HOT, used=2), Node("cold", 2, Tier.COLD)],
            [],
            ["cold"],
            id="node-full-of-others-skipped",
        ),
        pytest.param(
            1, [Node("none", 0, Tier.HOT), Node("peer", 1, Tier.PEER)], [], ["peer"], id="no-slots"
        ),
        pytest.param(
            5,
            [Node("a", 2, Tier.HOT), Node("b", 2, Tier.WARM)],
            on("b", 1),
            ["a", "a", "b"],
            id="runs-out-of-slots",
        ),
        pytest.param(2, [Node("a", 1, Tier.HOT)], on("a", 1), [], id="cluster-full"),
        pytest.param(0, FOUR_TIERS, [], [], id="nothing-to-place"),
        pytest.param(1, [], [], [], id="no-nodes"),
        pytest.param(
            1, [Node("a", 1, Tier.WARM)], on("gone", 3), ["a"], id="replicas-on-unknown-nodes"
        ),
    ],
)
def test_place(
    count: int, nodes: list[Node], replicas: list[PlacedReplica], expected: list[str]
) -> None:
    assert names(place(count, nodes, replicas)) == expected


def test_place_is_deterministic_whatever_the_input_order() -> None:
    nodes = [Node(f"n{i}", 2, Tier.WARM if i % 2 else Tier.COLD) for i in range(6)]
    first = place(7, nodes, [])
    assert place(7, list(reversed(nodes)), []) == first


def test_tier_from_text() -> None:
    node = Node("a", 1, "hot")  # type: ignore[arg-type]
    assert node.tier is Tier.HOT
    with pytest.raises(ValueError):
        Node("a", 1, "lukewarm")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Node("a", -1)


H, W, P, C = Tier.HOT, Tier.WARM, Tier.PEER, Tier.COLD


@pytest.mark.parametrize(
    ("image", "model", "rank"),
    [
        pytest.param(H, None, (0, 0), id="no-model-hot"),
        pytest.param(C, None, (4, 4), id="no-model-cold"),
        pytest.param(H, H, (0, 0), id="both-hot"),
        pytest.param(H, W, (1, 1), id="hot-image-warm-model"),
        pytest.param(W, H, (1, 1), id="warm-image-hot-model"),
        pytest.param(W, W, (1, 2), id="both-warm"),
        pytest.param(H, P, (3, 3), id="hot-image-model-on-a-peer"),
        pytest.param(P, P, (3, 6), id="both-on-a-peer"),
        pytest.param(H, C, (4, 4), id="hot-image-cold-model"),
        pytest.param(C, H, (4, 4), id="cold-image-hot-model"),
        pytest.param(W, C, (4, 5), id="warm-image-cold-model"),
        pytest.param(C, C, (4, 8), id="both-cold"),
    ],
)
def test_start_rank_is_the_slower_tier_then_the_sum(
    image: Tier, model: Tier | None, rank: tuple[int, int]
) -> None:
    assert start_rank(image, model) == rank


def test_start_rank_orders_every_pair_as_the_docstring_says() -> None:
    pairs = [(H, H), (H, W), (W, W), (H, P), (W, P), (P, P), (H, C), (W, C), (P, C), (C, C)]
    ranked = sorted(pairs, key=lambda p: start_rank(*p))
    assert ranked == pairs
    # the slower half decides: a hot image does not rescue a cold model
    assert start_rank(H, C) > start_rank(P, P) > start_rank(W, W)


@pytest.mark.parametrize(
    ("nodes", "expected"),
    [
        pytest.param(
            [Node("a", 4, H, model_tier=C), Node("b", 4, H, model_tier=H)],
            ["b"],
            id="both-hot-beats-image-only-hot",
        ),
        pytest.param(
            [Node("a", 4, H, model_tier=C), Node("b", 4, W, model_tier=W)],
            ["b"],
            id="both-warm-beats-hot-image-cold-model",
        ),
        pytest.param(
            [Node("a", 4, C, model_tier=H), Node("b", 4, P, model_tier=P)],
            ["b"],
            id="both-on-a-peer-beats-cold-image-hot-model",
        ),
        pytest.param(
            [Node("a", 4, W, model_tier=W), Node("b", 4, H, model_tier=W)],
            ["b"],
            id="same-slowest-tier-then-the-sum",
        ),
        pytest.param(
            [Node("a", 4, H, model_tier=W), Node("b", 4, W, model_tier=H)],
            ["a"],
            id="equal-ranks-then-load-then-name",
        ),
        pytest.param(
            [Node("a", 1, H, model_tier=H, used=1), Node("b", 4, C, model_tier=C)],
            ["b"],
            id="a-full-hot-node-is-skipped",
        ),
    ],
)
def test_place_by_image_and_model_tier(nodes: list[Node], expected: list[str]) -> None:
    assert names(place(1, nodes)) == expected


def test_place_spreads_over_nodes_with_the_same_combined_rank() -> None:
    nodes = [
        Node("hot-warm", 2, H, model_tier=W),
        Node("warm-hot", 2, W, model_tier=H),
        Node("both-hot", 1, H, model_tier=H),
        Node("cold", 4, C, model_tier=C),
    ]
    assert names(place(6, nodes)) == [
        "both-hot", "hot-warm", "warm-hot", "hot-warm", "warm-hot", "cold"
    ]  # fmt: skip


def test_placement_key_and_model_tier_from_text() -> None:
    node = Node("a", 2, "warm", model_tier="peer")  # type: ignore[arg-type]
    assert node.model_tier is Tier.PEER
    assert placement_key(node, 1) == (3, 4, 0.5, "a")
    assert placement_key(Node("b", 2, W), 0) == (1, 1, 0.0, "b")
    assert Node("c", 1, H, model_tier=H).hot and Node("c", 1, H).hot
    assert not Node("c", 1, H, model_tier=W).hot and not Node("c", 1, W).hot


@pytest.mark.parametrize(
    ("count", "replicas", "nodes", "expected"),
    [
        pytest.param(
            1,
            on("a", 1, start=100) + on("b", 1, ready=False),
            [],
            ["b-0"],
            id="not-ready-first",
        ),
        pytest.param(
            2,
            on("a", 3, start=100) + on("b", 1, ready=False, start=0) + on("c", 1, ready=False),
            [],
            ["b-0", "c-0"],
            id="all-not-ready-before-any-ready",
        ),
        pytest.param(
            1,
            on("a", 1, start=100) + on("b", 3, start=0),
            [],
            ["b-2"],
            id="most-loaded-node-then-newest",
        ),
        pytest.param(
            1,
            [
                PlacedReplica("old", "a", started_at=10),
                PlacedReplica("new", "a", started_at=30),
                PlacedReplica("mid", "a", started_at=20),
            ],
            [],
            ["new"],
            id="newest-first",
        ),
        pytest.param(
            3,
            on("a", 3, start=0) + on("b", 2, start=100),
            [],
            ["a-2", "b-1", "a-1"],
            id="removals-spread",
        ),
        pytest.param(
            1,
            on("small", 2) + on("big", 3, start=100),
            [Node("small", 2), Node("big", 8)],
            ["small-1"],
            id="load-by-slots",
        ),
        pytest.param(
            1,
            on("a", 1) + on("b", 2),
            [Node("a", 4, used=3), Node("b", 4)],
            ["a-0"],
            id="other-endpoints-count",
        ),
        pytest.param(5, on("a", 2), [], ["a-1", "a-0"], id="more-than-there-are"),
        pytest.param(0, on("a", 2), [], [], id="none"),
        pytest.param(
            1,
            [PlacedReplica("y", "a", started_at=5), PlacedReplica("x", "a", started_at=5)],
            [],
            ["x"],
            id="tie-break-by-id",
        ),
    ],
)
def test_choose_victims(
    count: int, replicas: list[PlacedReplica], nodes: list[Node], expected: list[str]
) -> None:
    assert [r.id for r in choose_victims(count, replicas, nodes)] == expected
