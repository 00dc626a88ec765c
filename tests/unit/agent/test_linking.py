"""ImageLinker over an in-memory one-node cluster (real content store, real hard links)."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.fetch.helpers import ANON, REG, Cluster
from warmstart.agent.linking import ImageLinker
from warmstart.containerd.content_link import ContentLinker
from warmstart.fetch.memory import MemorySource
from warmstart.oci import Digest, ImageManifest
from warmstart.oci.manifest import parse_manifest

A = "http://a:5050"
REPO = "team/app"


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[Cluster, MemorySource, Path]]:
    upstream = MemorySource()
    cluster = Cluster(tmp_path / "cluster", upstream, [A])
    content = tmp_path / "containerd" / "io.containerd.content.v1.content"
    (content / "ingest").mkdir(parents=True)
    yield cluster, upstream, content
    await cluster.aclose()


def image(upstream: MemorySource, *sizes: int) -> ImageManifest:
    _digest, body = upstream.add_image(REPO, "v1", [os.urandom(n) for n in sizes])
    manifest = parse_manifest(body, "application/vnd.oci.image.manifest.v1+json")
    assert isinstance(manifest, ImageManifest)
    return manifest


def linker_of(cluster: Cluster, content: Path) -> ImageLinker:
    n = cluster[A]
    return ImageLinker(ContentLinker(content), n.store, n.fetcher)


def linked(content: Path, digest: Digest) -> Path:
    return content / "blobs" / digest.algorithm / digest.hex


async def test_missing_blobs_are_fetched_once_and_linked_before_the_answer(node) -> None:
    cluster, upstream, content = node
    m = image(upstream, 300_000, 50_000)
    report = await linker_of(cluster, content).prepare(REG, REPO, m, ANON, wait=30)
    assert report.missing == [] and report.refused == []
    # what the agent logs for the answer: the blobs fetched and linked within the wait count
    assert report.linked == len(m.blobs) and report.present == 0
    assert report.linked_bytes == sum(d.size for d in m.blobs)
    for desc in m.blobs:
        assert linked(content, desc.digest).stat().st_ino == (
            cluster[A].store.blob_path(desc.digest).stat().st_ino
        )
    assert Counter(d for d, _ in upstream.opens) == {d.digest: 1 for d in m.blobs}


async def test_stored_blobs_are_linked_without_a_fetch(node) -> None:
    cluster, upstream, content = node
    m = image(upstream, 100_000)
    linker = linker_of(cluster, content)
    await linker.prepare(REG, REPO, m, ANON, wait=30)
    for desc in m.blobs:
        os.unlink(linked(content, desc.digest))  # containerd's GC
    opened = len(upstream.opens)
    report = await linker.link_stored(m.blobs)
    assert report.linked == len(m.blobs) and report.missing == []
    assert len(upstream.opens) == opened
    again = await linker.link_stored(m.blobs)
    assert again.linked == 0 and again.present == len(m.blobs)


async def test_after_the_wait_the_answer_goes_out_and_blobs_are_linked_when_they_land(
    node,
) -> None:
    cluster, upstream, content = node
    m = image(upstream, 200_000)
    upstream.gate = asyncio.Event()  # the upstream holds every blob back
    linker = linker_of(cluster, content)
    report = await linker.prepare(REG, REPO, m, ANON, wait=0.05)
    assert sorted(report.missing) == sorted(d.digest for d in m.blobs)
    # a second answer while they are in flight joins the same transfers
    await linker.prepare(REG, REPO, m, ANON, wait=0.05)
    upstream.gate.set()
    for _ in range(200):
        if all(linked(content, d.digest).exists() for d in m.blobs):
            break
        await asyncio.sleep(0.02)
    assert all(linked(content, d.digest).exists() for d in m.blobs)
    assert Counter(d for d, _ in upstream.opens) == {d.digest: 1 for d in m.blobs}


async def test_a_failed_prefetch_leaves_the_blob_to_containerd(node) -> None:
    cluster, upstream, content = node
    m = image(upstream, 10_000)
    from warmstart.fetch.source import SourceUnavailable

    upstream.fail = SourceUnavailable("down")
    report = await linker_of(cluster, content).prepare(REG, REPO, m, ANON, wait=5)
    assert sorted(report.missing) == sorted(d.digest for d in m.blobs)
    assert not (content / "blobs").exists() or not any((content / "blobs").rglob("*"))
