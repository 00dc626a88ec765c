"""Home nodes over the peer list, with peers that are down skipped."""

from __future__ import annotations

from tests.unit.fetch.helpers import FakeClock
from warmstart.fetch.peer_ring import PeerHealth, PeerList, PeerRing
from warmstart.fetch.rendezvous import rank
from warmstart.oci import Digest

A, B, C = "http://a:1", "http://b:1", "http://c:1"


def digest_ranked(order: list[str]) -> Digest:
    """A digest whose rank over A, B, C is ``order``."""
    for i in range(10_000):
        d = Digest.of(str(i).encode())
        if rank(str(d), [A, B, C]) == order:
            return d
    raise AssertionError("no such digest")


def test_peer_list_normalises_and_skips_self() -> None:
    peers = PeerList("HTTP://A:1/", ["http://a:1", "http://B:1/", "http://b:1", C])
    assert peers.self_url == A
    assert peers.urls == (A, B, C)
    assert peers.others() == (B, C)
    peers.replace([C])
    assert peers.others() == (C,)


def test_health_expires() -> None:
    clock = FakeClock()
    health = PeerHealth(retry_after=5, clock=clock)
    health.mark_down("http://B:1/")
    assert health.is_down(B) and health.down() == [B]
    clock.tick(5)
    assert not health.is_down(B) and health.down() == []
    health.mark_down(B)
    health.mark_up(B)
    assert not health.is_down(B)


def test_router_table() -> None:
    clock = FakeClock()
    health = PeerHealth(retry_after=5, clock=clock)
    ring = PeerRing(PeerList(A, [A, B, C]), A, health)
    # (rank order, peers down, home, A is home?, probe candidates excluding the home)
    table = [
        ([A, B, C], set(), A, True, [B, C]),
        ([B, A, C], set(), B, False, [C]),
        ([B, A, C], {B}, A, True, [C]),
        ([B, C, A], {B}, C, False, []),
        ([B, C, A], {B, C}, A, True, []),
        ([C, B, A], {B}, C, False, []),
    ]
    for order, down, want_home, is_home, probes in table:
        for url in (B, C):
            health.mark_up(url)
        for url in down:
            health.mark_down(url)
        d = digest_ranked(order)
        assert ring.ranked(d) == order
        assert ring.nominal_home(d) == order[0]
        assert ring.home(d) == want_home, (order, down)
        assert ring.is_home(d) is is_home, (order, down)
        assert ring.candidates(d, [want_home], limit=3) == probes, (order, down)


def test_router_follows_replacements() -> None:
    peers = PeerList(A, [B])
    ring = PeerRing(peers, A, PeerHealth())
    assert ring.nodes() == [A, B]
    peers.replace([A, B, C])
    assert ring.nodes() == [A, B, C]
    peers.replace([])
    d = Digest.of(b"x")
    assert ring.nodes() == [A] and ring.home(d) == A and ring.is_home(d)


def test_candidates_limit() -> None:
    ring = PeerRing(PeerList(A, [A, B, C]), A, PeerHealth())
    d = digest_ranked([A, B, C])
    assert ring.candidates(d, [], limit=1) == [B]
    assert ring.candidates(d, [], limit=0) == []
