"""Manifests through the TieredFetcher: what is asked of the upstream, and what is not a
manifest."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.fetch.helpers import ANON, REG, Cluster
from warmstart.fetch.interfaces import NotFoundError
from warmstart.fetch.memory import MemorySource
from warmstart.oci import MAX_MANIFEST_BYTES, Digest
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


async def test_a_stored_layer_or_config_asked_for_as_a_manifest_is_unknown(
    node_and_upstream: tuple[Cluster, MemorySource],
) -> None:
    cluster, upstream = node_and_upstream
    big = os.urandom(MAX_MANIFEST_BYTES + 1)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {}}).encode()
    layer_digest = upstream.add_blob(big, REPO)
    config_digest = upstream.add_blob(config, REPO)
    fetcher = cluster[A].fetcher
    for digest in (layer_digest, config_digest):
        await fetcher.ensure_blob(REG, REPO, digest)
        with pytest.raises(NotFoundError, match="not a manifest"):
            await fetcher.get_manifest(REG, REPO, str(digest), (), ANON)
    assert upstream.manifest_gets == []  # the stored bytes said it all


async def test_a_layer_of_a_served_manifest_is_no_manifest_without_asking(
    node_and_upstream: tuple[Cluster, MemorySource],
) -> None:
    cluster, upstream = node_and_upstream
    big = os.urandom(MAX_MANIFEST_BYTES + 1)
    upstream.add_image(REPO, "v1", [big])
    fetcher = cluster[A].fetcher
    await fetcher.get_manifest(REG, REPO, "v1", (), ANON)
    upstream.manifest_gets.clear()
    with pytest.raises(NotFoundError, match="not a manifest"):
        await fetcher.get_manifest(REG, REPO, str(Digest.of(big)), (), ANON)
    assert upstream.manifest_gets == [] and upstream.opens == []
