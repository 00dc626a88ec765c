"""A partial blob a dead agent left in the store: the next transfer asks its source only for
the rest (one request, with the offset), and clients get the whole, verified blob."""

from __future__ import annotations

import os
from pathlib import Path

from tests.unit.fetch.helpers import ANON, REG, Cluster, read_result
from warmstart.fetch.memory import MemorySource

A = "http://a:5050"
REPO = "team/app"


async def test_the_transfer_resumes_a_partial_left_in_the_store(tmp_path: Path) -> None:
    upstream = MemorySource()
    data = os.urandom(3_000_000)
    upstream.add_image(REPO, "v1", [data])
    cluster = Cluster(tmp_path / "c", upstream, [A])
    try:
        node = cluster[A]
        await node.fetcher.get_manifest(REG, REPO, "v1", (), ANON)  # sizes are known now
        digest = next(d for d, b in upstream.blobs.items() if b == data)
        node.store.layout.partial_path(digest).write_bytes(data[:1_200_000])  # a dead writer's
        result = await node.fetcher.get_blob(REG, REPO, digest, ANON)
        assert await read_result(result) == data
        await node.fetcher.ensure_blob(REG, REPO, digest)
        assert node.store.blob_path(digest).read_bytes() == data
        assert [o for d, o in upstream.opens if d == digest] == [1_200_000]
    finally:
        await cluster.aclose()


async def test_a_partial_the_store_drops_still_gets_the_blob_from_the_same_source(
    tmp_path: Path,
) -> None:
    upstream = MemorySource()
    data = os.urandom(3_000_000)
    upstream.add_image(REPO, "v1", [data])
    cluster = Cluster(tmp_path / "c", upstream, [A])
    try:
        node = cluster[A]
        await node.fetcher.get_manifest(REG, REPO, "v1", (), ANON)
        digest = next(d for d, b in upstream.blobs.items() if b == data)
        torn = bytearray(data[:1_200_000])
        torn[600_000] ^= 0xFF  # the store finds out only after the resume: then from 0
        node.store.layout.partial_path(digest).write_bytes(bytes(torn))
        result = await node.fetcher.get_blob(REG, REPO, digest, ANON)
        await node.fetcher.ensure_blob(REG, REPO, digest)
        assert node.store.blob_path(digest).read_bytes() == data
        assert [o for d, o in upstream.opens if d == digest] == [1_200_000, 0]
        del result
    finally:
        await cluster.aclose()
