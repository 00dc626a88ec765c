"""TieredFetcher over in-memory sources: an in-process cluster, no HTTP.

Peers are other fetchers called with a peer identity (``FetcherPeer``), so home routing,
single-flight across nodes, corrupt and dead peers and loop prevention are all exercised with
real content stores.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.fetch.helpers import (
    ANON,
    REG,
    Cluster,
    DeadPeer,
    FakeClock,
    homed_blob,
    read_result,
)
from warmstart.fetch import FetcherConfig, TieredFetcher, UpstreamSettings
from warmstart.fetch.interfaces import (
    ClientIdentity,
    DeniedError,
    NotFoundError,
    UnauthorizedError,
    UnavailableError,
)
from warmstart.fetch.memory import FetcherPeer, MemorySource
from warmstart.fetch.rendezvous import home
from warmstart.fetch.source import SourceUnavailable
from warmstart.oci import Digest
from warmstart.registry import Credentials
from warmstart.store import ContentStore

A, B, C = "http://a:5050", "http://b:5050", "http://c:5050"
REPO = "team/app"


@pytest.fixture
async def upstream() -> MemorySource:
    return MemorySource()


@pytest.fixture
async def cluster_factory(tmp_path: Path) -> AsyncIterator[object]:
    made: list[Cluster] = []

    def make(upstream: MemorySource, urls: list[str], **kw: object) -> Cluster:
        c = Cluster(tmp_path / f"c{len(made)}", upstream, urls, **kw)  # type: ignore[arg-type]
        made.append(c)
        return c

    yield make
    for c in made:
        await c.aclose()


def opens(upstream: MemorySource) -> Counter[Digest]:
    return Counter(d for d, _ in upstream.opens)


async def pull(
    node_fetcher: TieredFetcher, digests: list[Digest], client: ClientIdentity = ANON
) -> list[bytes]:
    async def one(d: Digest) -> bytes:
        return await read_result(await node_fetcher.get_blob(REG, REPO, d, client))

    return list(await asyncio.gather(*(one(d) for d in digests)))


# -- one node --------------------------------------------------------------------------------


async def test_miss_then_local_hit(cluster_factory, upstream: MemorySource) -> None:
    data = os.urandom(300_000)
    digest = upstream.add_blob(data, REPO)
    node = cluster_factory(upstream, [A])[A]
    first = await node.fetcher.get_blob(REG, REPO, digest, ANON)
    assert (first.source, first.size) == ("upstream", len(data))
    assert await read_result(first) == data
    await node.fetcher.ensure_blob(REG, REPO, digest)
    second = await node.fetcher.get_blob(REG, REPO, digest, ANON)
    assert second.source == "local" and second.path == node.store.blob_path(digest)
    assert await read_result(second, 1000) == data[1000:]
    assert opens(upstream)[digest] == 1


async def test_clients_stream_while_the_transfer_runs(
    cluster_factory, upstream: MemorySource
) -> None:
    data = os.urandom(1_000_000)
    digest = upstream.add_blob(data, REPO)
    upstream.gate = asyncio.Event()
    upstream.delay = 0.001
    node = cluster_factory(upstream, [A])[A]
    results = await asyncio.gather(
        *(node.fetcher.get_blob(REG, REPO, digest, ANON) for _ in range(5))
    )
    assert all(r.path is None and r.open_stream is not None for r in results)
    readers = [
        asyncio.create_task(read_result(r, start))
        for r, start in zip(results, (0, 0, 10, 999_999, 1_000_000), strict=True)
    ]
    await asyncio.sleep(0.05)
    assert not any(t.done() for t in readers[:4])  # waiting for bytes, not for the whole blob
    upstream.gate.set()
    got = await asyncio.gather(*readers)
    assert got == [data, data, data[10:], data[-1:], b""]
    assert opens(upstream)[digest] == 1
    late = await node.fetcher.get_blob(REG, REPO, digest, ANON)
    assert late.source == "local"


async def test_failure_mid_stream_resumes_at_the_offset(
    cluster_factory, upstream: MemorySource
) -> None:
    data = os.urandom(500_000)
    digest = upstream.add_blob(data, REPO)
    upstream.cut_after[digest] = 123_456
    node = cluster_factory(upstream, [A])[A]
    assert await read_result(await node.fetcher.get_blob(REG, REPO, digest, ANON)) == data
    assert upstream.opens == [(digest, 0), (digest, 123_456)]
    assert node.store.has(digest)


async def test_not_found_and_unavailable(cluster_factory, upstream: MemorySource) -> None:
    node = cluster_factory(upstream, [A])[A]
    missing = Digest.of(b"nothing")
    with pytest.raises(NotFoundError):
        await node.fetcher.get_blob(REG, REPO, missing, ANON)
    with pytest.raises(NotFoundError):
        await node.fetcher.stat_blob(REG, REPO, missing, ANON)
    digest = upstream.add_blob(b"x" * 1000, REPO)
    upstream.fail = SourceUnavailable("registry down")
    with pytest.raises(UnavailableError):
        await node.fetcher.get_blob(REG, REPO, digest, ANON)
    assert not node.store.has(digest) and node.fetcher.status().transfers == ()


async def test_unknown_registry_is_denied(cluster_factory, upstream: MemorySource) -> None:
    node = cluster_factory(upstream, [A])[A]
    with pytest.raises(DeniedError):
        await node.fetcher.get_blob("evil.example", REPO, Digest.of(b"x"), ANON)
    with pytest.raises(DeniedError):
        await node.fetcher.get_manifest("evil.example", REPO, "v1", (), ANON)


async def test_corrupt_upstream_stores_nothing(cluster_factory, upstream: MemorySource) -> None:
    data = os.urandom(100_000)
    digest = upstream.add_blob(data, REPO)
    upstream.corrupt.add(digest)
    node = cluster_factory(upstream, [A])[A]
    result = await node.fetcher.get_blob(REG, REPO, digest, ANON)
    assert result.open_stream is not None
    received = bytearray()
    with pytest.raises(UnavailableError):
        async for chunk in result.open_stream(0):
            received += chunk
    # the last byte is held back until the digest checks out: a client never sees a whole body
    assert len(received) < len(data)
    await asyncio.sleep(0.01)
    assert not node.store.has(digest)
    assert os.listdir(node.store.layout.ingest_dir) == []


# -- manifests ---------------------------------------------------------------------------------


async def test_tag_cache_ttl_and_stale_on_upstream_failure(
    tmp_path: Path, upstream: MemorySource
) -> None:
    clock = FakeClock()
    digest, body = upstream.add_image(REPO, "v1", [b"layer"])
    c = Cluster(tmp_path, upstream, [A], clock=clock, tag_ttl=10)
    try:
        f = c[A].fetcher
        got = await f.get_manifest(REG, REPO, "v1", (), ANON)
        assert (got.digest, got.body, got.source) == (digest, body, "upstream")
        again = await f.get_manifest(REG, REPO, "v1", (), ANON)
        assert again.source == "cache" and upstream.manifest_gets == ["v1"]
        clock.tick(11)
        assert (await f.get_manifest(REG, REPO, "v1", (), ANON)).source == "upstream"
        clock.tick(11)
        upstream.fail = SourceUnavailable("down")
        stale = await f.get_manifest(REG, REPO, "v1", (), ANON)
        assert stale.source == "cache" and stale.body == body
        by_digest = await f.get_manifest(REG, REPO, str(digest), (), ANON)
        assert by_digest.source == "local" and by_digest.media_type == got.media_type
        upstream.fail = None
        del upstream.manifests[(REPO, "v1")]
        with pytest.raises(NotFoundError):
            await f.get_manifest(REG, REPO, "v1", (), ANON)
        with pytest.raises(NotFoundError):
            await f.get_manifest(REG, REPO, "nope", (), ANON)
    finally:
        await c.aclose()


async def test_sizes_from_manifests_answer_head_without_network(
    cluster_factory, upstream: MemorySource
) -> None:
    _digest, _ = upstream.add_image(REPO, "v1", [b"a" * 1000, b"b" * 2000])
    node = cluster_factory(upstream, [A])[A]
    await node.fetcher.get_manifest(REG, REPO, "v1", (), ANON)
    layer = Digest.of(b"b" * 2000)
    assert await node.fetcher.stat_blob(REG, REPO, layer, ANON) == 2000
    assert upstream.stats == []


async def test_image_recorded_once_its_blobs_are_in(
    cluster_factory, upstream: MemorySource
) -> None:
    layers = [os.urandom(50_000), os.urandom(70_000)]
    digest, body = upstream.add_image(REPO, "v1", layers)
    node = cluster_factory(upstream, [A])[A]
    await node.fetcher.get_manifest(REG, REPO, "v1", (), ANON)
    assert node.store.images() == []
    await node.fetcher.ensure_blob(REG, REPO, Digest.of(layers[0]))
    await node.fetcher.ensure_blob(REG, REPO, Digest.of(b"{}"))
    assert node.store.images() == []
    await node.fetcher.ensure_blob(REG, REPO, Digest.of(layers[1]))
    [image] = node.store.images()
    assert image.reference == f"{REG}/{REPO}:v1" and image.manifest_digest == digest
    assert image.complete and image.size == len(body) + 120_000 + 2


async def test_index_child_recorded_under_its_tag(cluster_factory, upstream: MemorySource) -> None:
    child, body = upstream.add_image(REPO, None, [b"arm layer"])
    index, _ = upstream.add_index(REPO, "multi", [(child, len(body), "linux/arm64")])
    node = cluster_factory(upstream, [A])[A]
    await node.fetcher.get_manifest(REG, REPO, "multi", (), ANON)
    await node.fetcher.get_manifest(REG, REPO, str(child), (), ANON)
    for d in (Digest.of(b"{}"), Digest.of(b"arm layer")):
        await node.fetcher.ensure_blob(REG, REPO, d)
    [image] = node.store.images()
    assert (image.reference, image.manifest_digest, image.platform) == (
        f"{REG}/{REPO}:multi",
        index,
        "linux/arm64",
    )


# -- cluster -----------------------------------------------------------------------------------


async def test_cold_image_on_two_nodes_at_once_one_upstream_read_per_blob(
    cluster_factory, upstream: MemorySource
) -> None:
    layers = [os.urandom(200_000 + i) for i in range(8)]
    upstream.add_image(REPO, "v1", layers)
    upstream.delay = 0.001
    c = cluster_factory(upstream, [A, B])
    for url in (A, B):
        await c[url].fetcher.get_manifest(REG, REPO, "v1", (), ANON)
    digests = [Digest.of(x) for x in layers] + [Digest.of(b"{}")]
    got_a, got_b = await asyncio.gather(pull(c[A].fetcher, digests), pull(c[B].fetcher, digests))
    expected = [*layers, b"{}"]
    assert got_a == expected and got_b == expected
    assert set(opens(upstream).values()) == {1} and len(opens(upstream)) == len(digests)
    for url in (A, B):
        assert all(c[url].store.has(d) for d in digests)
        assert len(c[url].store.images()) == 1


async def test_blob_held_by_a_peer_needs_no_upstream(
    cluster_factory, upstream: MemorySource
) -> None:
    # One layer is certainly homed at B (random digests alone miss B one time in 64).
    layers = [homed_blob([A, B], at=B, size=100_000)] + [os.urandom(100_000) for _ in range(5)]
    upstream.add_image(REPO, "v1", layers)
    c = cluster_factory(upstream, [A, B])
    digests = [Digest.of(x) for x in layers]
    c[A].peers.replace([A])  # A pulls alone, then B joins
    await c[A].fetcher.get_manifest(REG, REPO, "v1", (), ANON)
    await pull(c[A].fetcher, digests)
    c[A].peers.replace([A, B])
    before = len(upstream.opens)
    await c[B].fetcher.get_manifest(REG, REPO, "v1", (), ANON)
    results = [await c[B].fetcher.get_blob(REG, REPO, d, ANON) for d in digests]
    assert {r.source for r in results} == {"peer"}
    assert [await read_result(r) for r in results] == layers
    assert len(upstream.opens) == before
    # B is home for some of them: it found A holding them by asking (HEAD) first
    probes = [k for k, _ in c[B].links[A].requests if k == "stat"]
    assert probes, "B should have probed A for the blobs whose home it is"


async def test_peer_request_is_not_forwarded(cluster_factory, upstream: MemorySource) -> None:
    data = homed_blob([A, B, C], at=C)
    digest = upstream.add_blob(data, REPO)
    c = cluster_factory(upstream, [A, B, C])
    as_peer = ClientIdentity(peer=A)
    with pytest.raises(NotFoundError):
        await c[B].fetcher.get_blob(REG, REPO, digest, as_peer)
    with pytest.raises(NotFoundError):
        await c[B].fetcher.stat_blob(REG, REPO, digest, as_peer)
    assert c[B].links == {} and upstream.opens == []
    # the home answers a peer from the upstream, and only from there
    result = await c[C].fetcher.get_blob(REG, REPO, digest, as_peer)
    assert result.source == "upstream" and await read_result(result) == data
    assert c[C].links == {}


async def test_peer_joins_the_homes_transfer_in_progress(
    cluster_factory, upstream: MemorySource
) -> None:
    data = homed_blob([A, B], at=A, size=800_000)
    digest = upstream.add_blob(data, REPO)
    upstream.gate = asyncio.Event()
    c = cluster_factory(upstream, [A, B])
    at_a = asyncio.create_task(c[A].fetcher.get_blob(REG, REPO, digest, ANON))
    at_b = asyncio.create_task(c[B].fetcher.get_blob(REG, REPO, digest, ANON))
    ra, rb = await asyncio.gather(at_a, at_b)
    assert (ra.source, rb.source) == ("upstream", "peer")
    reading = asyncio.gather(read_result(ra), read_result(rb))
    await asyncio.sleep(0.02)
    upstream.gate.set()
    assert await reading == [data, data]
    assert opens(upstream)[digest] == 1


async def test_corrupt_peer_is_dropped_and_nothing_bad_is_kept(
    cluster_factory, upstream: MemorySource
) -> None:
    data = homed_blob([A, B], at=A, size=400_000)
    digest = upstream.add_blob(data, REPO)
    c = cluster_factory(upstream, [A, B])
    await c[A].fetcher.ensure_blob(REG, REPO, digest)
    link = c._link(c[B], A)
    link.corrupt = True
    upstream.gate = asyncio.Event()  # the second attempt (upstream) waits
    first = await c[B].fetcher.get_blob(REG, REPO, digest, ANON)
    assert first.source == "peer"
    with pytest.raises(UnavailableError):
        await read_result(first)  # the stream of the corrupt attempt fails
    upstream.gate.set()
    path = await c[B].fetcher.ensure_blob(REG, REPO, digest)
    assert path.read_bytes() == data
    assert opens(upstream)[digest] == 2  # A's fetch, then B's after dropping A
    assert os.listdir(c[B].store.layout.ingest_dir) == []


async def test_peer_dropping_out_mid_stream_hands_over_to_the_next_source(
    cluster_factory, upstream: MemorySource
) -> None:
    data = homed_blob([A, B], at=A, size=600_000)
    digest = upstream.add_blob(data, REPO)
    c = cluster_factory(upstream, [A, B])
    await c[A].fetcher.ensure_blob(REG, REPO, digest)
    link = c._link(c[B], A)
    link.drop_after = 250_000
    result = await c[B].fetcher.get_blob(REG, REPO, digest, ANON)
    assert await read_result(result) == data  # A once more from 250000, then upstream
    assert upstream.opens[-1] == (digest, 500_000)


async def test_dead_home_is_skipped_and_remembered(cluster_factory, upstream: MemorySource) -> None:
    urls = [A, C]  # C has no node: dead
    blobs = [homed_blob(urls, at=C, size=10_000) for _ in range(3)]
    digests = [upstream.add_blob(b, REPO) for b in blobs]
    c = cluster_factory(upstream, urls, alive=[A])
    for d, b in zip(digests, blobs, strict=True):
        assert await read_result(await c[A].fetcher.get_blob(REG, REPO, d, ANON)) == b
    dead = c[A].links[C]
    assert isinstance(dead, DeadPeer) and dead.calls == 1
    assert c[A].fetcher.status().peers_down == (C,)


async def test_home_probes_peers_before_the_upstream(
    cluster_factory, upstream: MemorySource
) -> None:
    while True:  # home of A and B is A; with C listed, C
        data = homed_blob([A, B, C], at=C, size=50_000)
        if home(str(Digest.of(data)), [A, B]) == A:
            break
    digest = upstream.add_blob(data, REPO)
    c = cluster_factory(upstream, [A, B], peer_retry_after=5)
    await c[A].fetcher.ensure_blob(REG, REPO, digest)
    assert not c[B].store.has(digest)
    c[A].peers.replace([A, B, C])
    c[B].peers.replace([A, B, C])
    # C joins the list (and is home now) but is not running: B skips it, finds A by probing
    before = len(upstream.opens)
    result = await c[B].fetcher.get_blob(REG, REPO, digest, ANON)
    assert result.source == "peer" and await read_result(result) == data
    assert len(upstream.opens) == before


async def test_peer_token(cluster_factory, upstream: MemorySource) -> None:
    data = homed_blob([A, B], at=A, size=20_000)
    digest = upstream.add_blob(data, REPO)
    c = cluster_factory(upstream, [A, B], peer_token="s3cret", shared=False)
    upstream.private.add(REPO)
    upstream.agent_credentials = Credentials("robot", "pw")
    upstream.users["robot"] = "pw"
    f = c[A].fetcher
    for bad in (None, "wrong"):
        with pytest.raises(UnauthorizedError):
            await f.get_blob(REG, REPO, digest, ClientIdentity(peer=B, peer_token=bad))
    # the right token skips the per-client check (the asking node checked its client)
    result = await f.get_blob(REG, REPO, digest, ClientIdentity(peer=B, peer_token="s3cret"))
    assert await read_result(result) == data
    assert upstream.access_checks == []


# -- access to private repositories ------------------------------------------------------------


def basic(user: str, password: str) -> ClientIdentity:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return ClientIdentity(authorization=f"Basic {raw}")


async def test_cached_private_blob_needs_accepted_credentials(
    cluster_factory, upstream: MemorySource
) -> None:
    upstream.users.update(alice="secret", robot="pw")
    upstream.agent_credentials = Credentials("robot", "pw")
    upstream.private.add(REPO)
    _digest, _ = upstream.add_image(REPO, "v1", [b"secret layer"])
    public = upstream.add_blob(b"public layer", "pub/app")
    node = cluster_factory(upstream, [A], shared=False)[A]
    alice = basic("alice", "secret")
    await node.fetcher.get_manifest(REG, REPO, "v1", (), alice)
    layer = Digest.of(b"secret layer")
    await node.fetcher.ensure_blob(REG, REPO, layer, alice)
    assert node.store.has(layer)
    for who in (ANON, basic("alice", "wrong"), basic("eve", "secret")):
        with pytest.raises(UnauthorizedError):
            await node.fetcher.get_blob(REG, REPO, layer, who)
        with pytest.raises(UnauthorizedError):
            await node.fetcher.get_manifest(REG, REPO, "v1", (), who)
    assert (await node.fetcher.get_blob(REG, REPO, layer, alice)).source == "local"
    # the agent's own identity (pre-warm) is not checked; an equal-looking one is
    agent = node.fetcher.agent_identity
    assert (await node.fetcher.get_blob(REG, REPO, layer, agent)).source == "local"
    with pytest.raises(UnauthorizedError):
        await node.fetcher.get_blob(REG, REPO, layer, ClientIdentity())
    # the private layer cannot be read through a public repository
    with pytest.raises(NotFoundError):
        await node.fetcher.get_blob(REG, "pub/app", layer, ANON)
    # and a public repository needs nothing
    assert (
        await read_result(await node.fetcher.get_blob(REG, "pub/app", public, ANON))
        == b"public layer"
    )


async def test_peers_without_a_token_are_checked_like_anonymous_clients(
    cluster_factory, upstream: MemorySource
) -> None:
    upstream.users.update(alice="secret", robot="pw")
    upstream.agent_credentials = Credentials("robot", "pw")
    upstream.private.add(REPO)
    data = homed_blob([A, B], at=A, size=30_000)
    digest = upstream.add_blob(data, REPO)
    c = cluster_factory(upstream, [A, B], shared=False)
    alice = basic("alice", "secret")
    await c[A].fetcher.ensure_blob(REG, REPO, digest, alice)
    # B asks A (the home) without a token: A refuses, B goes to the upstream itself
    result = await c[B].fetcher.get_blob(REG, REPO, digest, alice)
    assert result.source == "upstream" and await read_result(result) == data


def test_config_validation() -> None:
    cfg = FetcherConfig(node_id="n", self_url=A, upstreams={"Index.Docker.IO": UpstreamSettings()})
    assert cfg.registries == {"docker.io"}
    with pytest.raises(ValueError):
        FetcherConfig(node_id="n", self_url="", upstreams={})
    with pytest.raises(ValueError):
        FetcherConfig(node_id="n", self_url=A, peer_timeout=0)
    assert UpstreamSettings(url="http://127.0.0.1:5000").host("x") == "127.0.0.1:5000"
    assert UpstreamSettings(url="http://127.0.0.1:5000").is_plain_http()
    assert (
        not UpstreamSettings().is_plain_http()
        and UpstreamSettings().host("Reg.Example") == "reg.example"
    )


async def test_fetcher_needs_an_access_checker(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "s")
    try:
        with pytest.raises(TypeError):
            TieredFetcher(store, FetcherConfig(node_id="n", self_url=A), FetcherPeer(B, None))  # type: ignore[arg-type]
    finally:
        store.close()


async def test_status_ages_transfers_on_the_injected_clock(
    cluster_factory, upstream: MemorySource
) -> None:
    digest = upstream.add_blob(os.urandom(1000), REPO)
    upstream.gate = asyncio.Event()
    clock = FakeClock()
    node = cluster_factory(upstream, [A], clock=clock)[A]
    await node.fetcher.get_blob(REG, REPO, digest, ANON)
    clock.tick(7.5)
    (transfer,) = node.fetcher.status().transfers
    assert (transfer.digest, transfer.source, transfer.seconds) == (str(digest), "upstream", 7.5)
    upstream.gate.set()
    await node.fetcher.wait_idle()
    assert node.fetcher.status().transfers == ()
