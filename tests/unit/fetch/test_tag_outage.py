"""An upstream outage: a tag still resolves from what this node or a peer last saw of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.unit.fetch.helpers import ANON, REG, Cluster
from warmstart.fetch.interfaces import ClientIdentity, NotFoundError, UnavailableError
from warmstart.fetch.memory import MemorySource
from warmstart.fetch.source import SourceUnavailable
from warmstart.oci import Digest

A, B = "http://a:5050", "http://b:5050"
REPO = "team/app"


async def pull_image(cluster: Cluster, url: str, layers: list[bytes]) -> None:
    """What a containerd pull through the agent does: the tag, then every blob."""
    f = cluster[url].fetcher
    await f.get_manifest(REG, REPO, "v1", (), ANON)
    for data in [b"{}", *layers]:
        await f.ensure_blob(REG, REPO, Digest.of(data))


async def test_a_restarted_agent_resolves_the_tag_from_its_store_record(tmp_path: Path) -> None:
    upstream = MemorySource()
    layers = [os.urandom(20_000)]
    digest, body = upstream.add_image(REPO, "v1", layers)
    first = Cluster(tmp_path, upstream, [A])
    await pull_image(first, A, layers)
    await first.aclose()
    upstream.fail = SourceUnavailable("down")
    again = Cluster(tmp_path, upstream, [A])  # same store, empty tag cache: a restart
    try:
        got = await again[A].fetcher.get_manifest(REG, REPO, "v1", (), ANON)
        assert (got.digest, got.body) == (digest, body)
    finally:
        await again.aclose()


async def test_a_node_that_never_saw_the_tag_asks_its_peers(tmp_path: Path) -> None:
    upstream = MemorySource()
    layers = [os.urandom(20_000)]
    digest, body = upstream.add_image(REPO, "v1", layers)
    c = Cluster(tmp_path, upstream, [A, B])
    try:
        await pull_image(c, A, layers)
        upstream.fail = SourceUnavailable("down")
        got = await c[B].fetcher.get_manifest(REG, REPO, "v1", (), ANON)
        assert (got.digest, got.body, got.source) == (digest, body, "peer")
        # and its blobs come from the peer too
        for data in [b"{}", *layers]:
            await c[B].fetcher.ensure_blob(REG, REPO, Digest.of(data))
    finally:
        await c.aclose()


async def test_an_unknown_tag_during_an_outage_fails_as_unavailable(tmp_path: Path) -> None:
    upstream = MemorySource()
    upstream.add_image(REPO, "v1", [b"x"])
    c = Cluster(tmp_path, upstream, [A, B])
    try:
        upstream.fail = SourceUnavailable("down")
        with pytest.raises(UnavailableError):
            await c[B].fetcher.get_manifest(REG, REPO, "v1", (), ANON)
    finally:
        await c.aclose()


async def test_a_peer_asking_for_a_tag_never_sends_this_node_upstream(tmp_path: Path) -> None:
    upstream = MemorySource()
    upstream.add_image(REPO, "v1", [b"x"])
    c = Cluster(tmp_path, upstream, [A, B])
    try:
        peer = ClientIdentity(peer=B)
        with pytest.raises(NotFoundError):
            await c[A].fetcher.get_manifest(REG, REPO, "v1", (), peer)
        assert upstream.manifest_gets == []
    finally:
        await c.aclose()
