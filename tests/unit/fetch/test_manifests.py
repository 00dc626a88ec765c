"""Manifests through the TieredFetcher: what is asked of the upstream, and what is not a
manifest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.fetch.helpers import ANON, REG, Cluster
from warmstart.fetch.memory import MemorySource
from warmstart.oci import mediatypes as mt

A = "http://a:5050"
REPO = "team/app"


@pytest.fixture
async def node_and_upstream(tmp_path: Path) -> AsyncIterator[tuple[Cluster, MemorySource]]:
    upstream = MemorySource()
    cluster = Cluster(tmp_path / "c", upstream, [A])
    try:
        yield cluster, upstream
    finally:
        await cluster.aclose()


@pytest.mark.parametrize("accept", [(), ("*/*",), ("application/*",)])
async def test_a_wildcard_accept_asks_the_upstream_for_every_manifest_type(
    node_and_upstream: tuple[Cluster, MemorySource], accept: tuple[str, ...]
) -> None:
    cluster, upstream = node_and_upstream
    _digest, body = upstream.add_image(REPO, "v1", [b"layer"])
    got = await cluster[A].fetcher.get_manifest(REG, REPO, "v1", accept, ANON)
    assert got.body == body and got.media_type == mt.OCI_MANIFEST
    assert upstream.manifest_accepts == [mt.MANIFEST_ACCEPT]
