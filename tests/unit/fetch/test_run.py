"""Running a plan (``warmstart.fetch.run.PlanRunner``) over in-memory sources."""

from __future__ import annotations

import os

import pytest

from tests.unit.fetch.helpers import REG, DeadPeer, FakeClock
from warmstart.fetch.interfaces import NotFoundError, UnavailableError
from warmstart.fetch.memory import MemorySource
from warmstart.fetch.metrics import NullMetrics
from warmstart.fetch.peer_ring import PeerHealth
from warmstart.fetch.plan import HomePeer, NotHere, ProbePeers, Upstream
from warmstart.fetch.run import PlanRunner
from warmstart.fetch.source import Source, SourceUnavailable

B, C = "http://b:5050", "http://c:5050"
REPO = "team/app"
UPSTREAM = MemorySource()
DIGEST = UPSTREAM.add_blob(os.urandom(100), REPO)


def runner(upstream: MemorySource, peers: dict[str, DeadPeer]) -> PlanRunner:
    return PlanRunner(upstream, peers.get, PeerHealth(5, FakeClock()), NullMetrics())


async def stat(source: Source) -> int:
    return await source.stat_blob(REG, REPO, DIGEST)


async def test_steps_in_order_until_one_answers() -> None:
    peers = {B: DeadPeer(B), C: DeadPeer(C)}
    run = runner(UPSTREAM, peers)
    steps = (HomePeer(B), ProbePeers((C,)), Upstream())
    source, size = await run.run(steps, "blob", REG, REPO, DIGEST, stat)
    assert (source, size) == (UPSTREAM, 100)
    assert (peers[B].calls, peers[C].calls) == (1, 1)
    assert run.health.down() == [B, C]  # unreachable peers are skipped for a while


async def test_a_probe_leaves_out_peers_marked_down_since_the_plan() -> None:
    peers = {C: DeadPeer(C)}
    run = runner(UPSTREAM, peers)
    run.health.mark_down(C)
    source, _ = await run.run((ProbePeers((C,)), Upstream()), "blob", REG, REPO, DIGEST, stat)
    assert source is UPSTREAM and peers[C].calls == 0


async def test_not_here_and_nothing_left() -> None:
    run = runner(UPSTREAM, {B: DeadPeer(B)})
    with pytest.raises(NotFoundError, match="blob x is not on this node"):
        await run.run((NotHere(),), "blob x", REG, REPO, DIGEST, stat)
    with pytest.raises(UnavailableError, match="every source failed"):
        await run.run((HomePeer(B),), "blob x", REG, REPO, DIGEST, stat)
    with pytest.raises(NotFoundError, match="blob x not found"):
        await run.run((), "blob x", REG, REPO, DIGEST, stat)


async def test_every_source_failed_keeps_the_longest_retry_after() -> None:
    """The upstream's Retry-After (a rate limit) reaches the agent's answer: the error for
    "every source failed" carries the longest wait a source asked for."""
    limited = MemorySource(fail=SourceUnavailable("upstream answered 429", retry_after=30.0))
    peers = {B: DeadPeer(B)}
    with pytest.raises(UnavailableError, match="every source failed") as info:
        await runner(limited, peers).run((HomePeer(B), Upstream()), "blob", REG, REPO, DIGEST, stat)
    assert info.value.retry_after == 30.0
    assert (info.value.status, info.value.code) == (503, "UNAVAILABLE")
