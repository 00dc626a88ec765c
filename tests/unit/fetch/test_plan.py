"""Table tests of the fetcher's source order (``warmstart.fetch.plan``): no clock, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from warmstart.fetch.plan import (
    HomePeer,
    NotHere,
    ProbePeers,
    Step,
    Upstream,
    What,
    plan_sources,
)

A, B, C, D = "http://a:5050", "http://b:5050", "http://c:5050", "http://d:5050"
H, UP = HomePeer, Upstream()


def P(*urls: str) -> ProbePeers:
    return ProbePeers(urls)


@dataclass(frozen=True)
class Case:
    id: str
    what: What
    from_peer: bool
    home: str | None  # None: this node is the home
    steps: tuple[Step, ...]
    peers: tuple[str, ...] = ()
    max_probes: int = 3
    excluded: frozenset[str] = field(default_factory=frozenset)
    upstream: bool = True


CASES = [
    # -- a client asks a node that is not the home ------------------------------------------
    Case(
        "blob-home-then-probes-then-upstream",
        "blob", False, A, (H(A), P(B, C), UP), peers=(A, B, C),
    ),
    Case("blob-home-not-among-peers", "blob", False, A, (H(A), P(B), UP), peers=(B,)),
    Case("blob-no-other-peers", "blob", False, A, (H(A), UP), peers=(A,)),
    Case("blob-probes-capped", "blob", False, A, (H(A), P(B, C), UP), peers=(A, B, C, D), max_probes=2),
    Case("blob-no-probes", "blob", False, A, (H(A), UP), peers=(A, B), max_probes=0),
    Case("manifest-home-then-upstream", "manifest", False, A, (H(A), UP), peers=(A, B, C)),
    Case("stat-home-then-upstream", "stat", False, A, (H(A), UP), peers=(A, B, C)),
    # -- a client asks the home -------------------------------------------------------------
    Case("blob-at-home-probes-then-upstream", "blob", False, None, (P(B, C), UP), peers=(B, C)),
    Case("blob-alone", "blob", False, None, (UP,)),
    Case("manifest-at-home-upstream", "manifest", False, None, (UP,), peers=(B, C)),
    Case("stat-at-home-upstream", "stat", False, None, (UP,), peers=(B, C)),
    # -- corrupt sources are left out ---------------------------------------------------------
    Case(
        "blob-corrupt-home-not-probed-either",
        "blob", False, A, (P(B, C), UP), peers=(A, B, C), excluded=frozenset({A}),
    ),
    Case(
        "blob-corrupt-probe-leaves-a-gap",  # the cap counts it: the next peer is not asked
        "blob", False, A, (H(A), P(C), UP), peers=(A, B, C, D),
        max_probes=2, excluded=frozenset({B}),
    ),
    Case("blob-every-peer-corrupt", "blob", False, None, (UP,), peers=(B,), excluded=frozenset({B})),
    Case("blob-corrupt-upstream", "blob", False, A, (H(A), P(B)), peers=(A, B), upstream=False),
    Case("blob-nothing-left", "blob", False, None, (), peers=(B,), excluded=frozenset({B}), upstream=False),
    # -- a peer asks: never forwarded to another peer (no loops) ------------------------------
    Case("peer-blob-at-home-upstream-only", "blob", True, None, (UP,), peers=(B, C)),
    Case("peer-manifest-at-home-upstream-only", "manifest", True, None, (UP,), peers=(B,)),
    Case("peer-stat-at-home-upstream-only", "stat", True, None, (UP,), peers=(B,)),
    Case("peer-blob-not-home", "blob", True, A, (NotHere(),), peers=(A, B)),
    Case("peer-manifest-not-home", "manifest", True, A, (NotHere(),), peers=(A,)),
    Case("peer-stat-not-home", "stat", True, A, (NotHere(),)),
    Case("peer-blob-at-home-corrupt-upstream", "blob", True, None, (), peers=(B,), upstream=False),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan_sources(case: Case) -> None:
    steps = plan_sources(
        case.what,
        from_peer=case.from_peer,
        home=case.home,
        peers=case.peers,
        max_probes=case.max_probes,
        excluded=case.excluded,
        upstream=case.upstream,
    )
    assert steps == case.steps


def test_case_ids_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)


def test_plan_is_pure() -> None:
    peers = [A, B, C]
    excluded = {B}
    first = plan_sources(
        "blob", from_peer=False, home=A, peers=peers, max_probes=3, excluded=excluded
    )
    second = plan_sources(
        "blob", from_peer=False, home=A, peers=peers, max_probes=3, excluded=excluded
    )
    assert first == second == (HomePeer(A), ProbePeers((C,)), Upstream())
    assert peers == [A, B, C] and excluded == {B}
