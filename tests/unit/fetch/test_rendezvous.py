"""Rendezvous hashing: deterministic, balanced, and only the moved share moves."""

from __future__ import annotations

import pytest

from warmstart.fetch.rendezvous import home, node_key, rank, score

NODES = [f"http://10.0.0.{i}:5050" for i in range(1, 6)]
KEYS = [f"sha256:{i:064x}" for i in range(2000)]


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("http://10.0.0.1:5050", "http://10.0.0.1:5050"),
        ("HTTP://Node-A:5050/", "http://node-a:5050"),
        (" https://a.example ", "https://a.example"),
        ("http://a:1/path/", "http://a:1"),
        ("node-b/", "node-b"),
    ],
)
def test_node_key(url: str, key: str) -> None:
    assert node_key(url) == key


def test_same_answer_whatever_the_order() -> None:
    for key in KEYS[:200]:
        assert home(key, NODES) == home(key, list(reversed(NODES))) == rank(key, NODES)[0]


def test_rank_is_every_node_once() -> None:
    ranked = rank(KEYS[0], NODES + NODES[:2])
    assert sorted(ranked) == sorted(NODES)
    scores = [score(n, KEYS[0]) for n in ranked]
    assert scores == sorted(scores, reverse=True)


def test_roughly_balanced() -> None:
    counts = {n: 0 for n in NODES}
    for key in KEYS:
        counts[home(key, NODES)] += 1
    expected = len(KEYS) / len(NODES)
    assert all(0.8 * expected < c < 1.2 * expected for c in counts.values()), counts


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (NODES[:4], NODES),  # a node joins
        (NODES, NODES[:4]),  # a node leaves
        (NODES, NODES[1:]),  # another leaves
        (NODES[:1], NODES[:2]),  # from one node to two
    ],
)
def test_only_the_moved_share_moves(before: list[str], after: list[str]) -> None:
    joined = set(after) - set(before)
    left = set(before) - set(after)
    moved = 0
    for key in KEYS:
        old, new = home(key, before), home(key, after)
        if old != new:
            moved += 1
            # A key moves only to a node that joined, or away from a node that left ...
            assert new in joined or old in left
            # ... and one that leaves hands each key to the node ranked second for it.
            if old in left:
                assert new == rank(key, before)[1] or new in joined
    share = len(KEYS) / max(len(before), len(after))
    assert 0.7 * share < moved < 1.3 * share


def test_previous_home_ranks_second_after_a_join() -> None:
    new = "http://10.0.0.9:5050"
    for key in KEYS[:500]:
        if home(key, [*NODES, new]) == new:
            assert rank(key, [*NODES, new])[1] == home(key, NODES)


def test_no_nodes() -> None:
    with pytest.raises(ValueError):
        home(KEYS[0], [])
