"""The pure least-outstanding chooser, as tables."""

from __future__ import annotations

import pytest

from warmstart.serving.balancer import Candidate, choose, has_capacity


def _cands(*loads: int) -> list[Candidate]:
    return [Candidate(f"r{i}", i, load) for i, load in enumerate(loads)]


@pytest.mark.parametrize(
    ("loads", "last_order", "cap", "expected"),
    [
        ((), None, None, None),
        ((0,), None, None, "r0"),
        ((3, 1, 2), None, None, "r1"),
        ((2, 2, 0), None, None, "r2"),
        # ties: round-robin after the last choice, wrapping around
        ((0, 0, 0), None, None, "r0"),
        ((0, 0, 0), 0, None, "r1"),
        ((0, 0, 0), 1, None, "r2"),
        ((0, 0, 0), 2, None, "r0"),
        ((1, 0, 0), 1, None, "r2"),
        ((0, 1, 0), 2, None, "r0"),
        # a last order that no longer exists (removed replica) still moves forward
        ((0, 0, 0), 7, None, "r0"),
        # cap: full replicas are skipped; all full -> None
        ((2, 3, 2), None, 2, None),
        ((2, 1, 2), None, 2, "r1"),
        ((1, 1, 0), None, 1, "r2"),
        ((0, 5), 0, 5, "r0"),
    ],
)
def test_choose(
    loads: tuple[int, ...], last_order: int | None, cap: int | None, expected: str | None
) -> None:
    chosen = choose(_cands(*loads), last_order=last_order, cap=cap)
    assert (chosen.replica_id if chosen else None) == expected


def test_orders_need_not_be_dense_or_sorted() -> None:
    cands = [Candidate("b", 9, 0), Candidate("a", 4, 0), Candidate("c", 12, 1)]
    picks: list[str] = []
    last: int | None = None
    for _ in range(4):
        chosen = choose(cands, last_order=last)
        assert chosen is not None
        picks.append(chosen.replica_id)
        last = chosen.order
    assert picks == ["a", "b", "a", "b"]


def test_simulated_leases_spread_evenly() -> None:
    loads = [0, 0, 0]
    last: int | None = None
    for _ in range(9):
        chosen = choose(_cands(*loads), last_order=last)
        assert chosen is not None
        loads[chosen.order] += 1
        last = chosen.order
    assert loads == [3, 3, 3]


@pytest.mark.parametrize(
    ("in_flight", "cap", "expected"),
    [(0, None, True), (9, None, True), (1, 2, True), (2, 2, False)],
)
def test_has_capacity(in_flight: int, cap: int | None, expected: bool) -> None:
    assert has_capacity(Candidate("r", 0, in_flight), cap) is expected
