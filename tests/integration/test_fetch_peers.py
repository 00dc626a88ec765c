"""Two agents (the real aiohttp app with the tiered fetcher, in this process) in front of a real
docker-registry: peers share blobs, the cluster fetches each blob from the upstream once, a
corrupt peer is rejected, and a dead peer costs at most ``peer_timeout``.

Upstream blob GETs are counted from the registry's access log (``blob_gets``).
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.images import BuiltImage
from warmstart.agent.app import PartMakers, build_app, given_store, server_kwargs
from warmstart.agent.config import build_config
from warmstart.agent.state import STATE
from warmstart.fetch.tiered import TieredFetcher
from warmstart.oci import Digest
from warmstart.store import ContentStore
from warmstart_harness.testbed.net import LOOPBACK, free_port
from warmstart_harness.testbed.registry import RegistryProcess

ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


@dataclass
class Node:
    url: str
    store: ContentStore
    app: web.Application
    runner: web.AppRunner
    registry: str  # the ns clients use

    @property
    def fetcher(self) -> TieredFetcher:
        fetcher = self.app[STATE].parts.fetcher
        assert isinstance(fetcher, TieredFetcher)
        return fetcher

    def fetched(self, source: str) -> float:
        metrics = self.app[STATE].parts.metrics
        value = metrics.registry.get_sample_value(
            "warmstart_agent_fetched_bytes_total", {"source": source}
        )
        return value or 0.0

    async def put_peers(self, session: aiohttp.ClientSession, peers: list[str]) -> None:
        async with session.put(f"{self.url}/peers", json={"peers": peers}) as resp:
            assert resp.status == 200, await resp.text()


MakeNode = Callable[..., "asyncio.Future[Node]"]


@pytest.fixture
async def make_node(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await make_node(upstream_url, peers=[...], port=...)``: a running agent mirroring
    ``registry`` (reached at ``upstream_url``, e.g. through a fault proxy)."""
    nodes: list[Node] = []

    async def make(
        registry: RegistryProcess,
        *,
        upstream_url: str | None = None,
        peers: list[str] | None = None,
        port: int | None = None,
        **settings: Any,
    ) -> Node:
        port = port or free_port()
        root = tmp_path / f"node-{port}"
        config = build_config(
            {
                "listen": f"{LOOPBACK}:{port}",
                "store": str(root),
                "node_id": f"node-{port}",
                "upstreams": {registry.host: {"url": upstream_url or registry.url}},
                "peers": peers or [],
                **settings,
            }
        )
        store = ContentStore(root, poll_interval=0.005)
        app = await build_app(config, PartMakers(store=given_store(store)))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1, **server_kwargs(config))
        await runner.setup()
        await web.TCPSite(runner, LOOPBACK, port).start()
        node = Node(f"http://{LOOPBACK}:{port}", store, app, runner, registry.host)
        nodes.append(node)
        return node

    try:
        yield make
    finally:
        for node in reversed(nodes):
            await node.runner.cleanup()
            await node.store.aclose()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        yield s


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def get_blob(
    session: aiohttp.ClientSession, node: Node, repo: str, digest: str
) -> tuple[int, bytes]:
    url = f"{node.url}/v2/{repo}/blobs/{digest}"
    async with session.get(url, params={"ns": node.registry}) as resp:
        return resp.status, await resp.read()


async def pull(session: aiohttp.ClientSession, node: Node, image: BuiltImage) -> None:
    """Like containerd: the manifest by tag, then every blob at once; each verified."""
    url = f"{node.url}/v2/{image.repository}/manifests/{image.tag}"
    async with session.get(url, params={"ns": node.registry}, headers={"Accept": ACCEPT}) as r:
        assert r.status == 200, await r.text()
        assert await r.read() == image.manifest

    async def one(digest: str) -> None:
        status, body = await get_blob(session, node, image.repository, digest)
        assert status == 200 and sha256(body) == digest

    await asyncio.gather(*(one(d) for d in image.blobs))


async def settle(node: Node) -> None:
    """Wait until the node's background transfers are done (a client gets the last byte of
    a blob as soon as it is verified, a moment before the image is recorded)."""
    async with asyncio.timeout(10):
        await node.fetcher.wait_idle()


def upstream_gets(registry: RegistryProcess, image: BuiltImage, since: int) -> dict[str, int]:
    return {d: registry.blob_gets(d, since=since, successful_only=True) for d in image.blobs}


# -- tests -------------------------------------------------------------------------------------


async def test_blob_held_by_a_peer_costs_no_upstream_get(
    registry: RegistryProcess, image_builder: Any, make_node: Any, session: aiohttp.ClientSession
) -> None:
    image = image_builder.build(registry, "app/web", "v1", layer_sizes=[700_000] * 6)
    a = await make_node(registry)  # alone: pulls everything from the upstream
    await pull(session, a, image)
    assert all(a.store.has(Digest.parse(d)) for d in image.blobs)

    b = await make_node(registry, peers=[a.url])
    await a.put_peers(session, [a.url, b.url])  # the controller tells A about B
    mark = registry.mark()
    await pull(session, b, image)
    await settle(b)
    assert upstream_gets(registry, image, mark) == {d: 0 for d in image.blobs}
    assert all(b.store.has(Digest.parse(d)) for d in image.blobs)
    assert b.fetched("peer") == sum(image.blobs.values())
    assert b.fetched("upstream") == 0
    # the image is recorded in B's store index once all its blobs are in
    [record] = b.store.images()
    assert record.reference == f"{registry.host}/app/web:v1" and record.complete


async def test_cold_image_on_two_nodes_at_once_one_upstream_get_per_blob(
    registry: RegistryProcess,
    image_builder: Any,
    make_node: Any,
    fault_proxy: Any,
    session: aiohttp.ClientSession,
) -> None:
    image = image_builder.build(registry, "app/big", "v1", layer_sizes=[1_500_000] * 8)
    slow = fault_proxy(registry)
    slow.throttle(20_000_000, path_contains="/blobs/")  # transfers overlap for a while
    port_a, port_b = free_port(), free_port()
    urls = [f"http://{LOOPBACK}:{port_a}", f"http://{LOOPBACK}:{port_b}"]
    a = await make_node(registry, upstream_url=slow.url, peers=urls, port=port_a)
    b = await make_node(registry, upstream_url=slow.url, peers=urls, port=port_b)
    mark = registry.mark()
    await asyncio.gather(pull(session, a, image), pull(session, b, image))
    await settle(a)
    await settle(b)
    assert upstream_gets(registry, image, mark) == {d: 1 for d in image.blobs}
    for node in (a, b):
        assert all(node.store.has(Digest.parse(d)) for d in image.blobs)
        assert node.store.verify().ok
    # each node fetched about half from the upstream (its homed blobs) and the rest from the
    # other node; together exactly the image's bytes came from the upstream
    assert a.fetched("upstream") + b.fetched("upstream") == sum(image.blobs.values())
    assert a.fetched("peer") > 0 and b.fetched("peer") > 0


async def test_corrupt_peer_is_rejected_and_nothing_bad_is_stored(
    registry: RegistryProcess,
    image_builder: Any,
    make_node: Any,
    fault_proxy: Any,
    session: aiohttp.ClientSession,
) -> None:
    image = image_builder.build(registry, "app/corrupt", "v1", layer_sizes=[900_000, 600_000])
    a = await make_node(registry)
    await pull(session, a, image)
    liar = fault_proxy(a.url)  # A as seen through a proxy that flips a byte of every blob
    liar.corrupt(times=None)
    b = await make_node(registry, peers=[liar.url])
    layer = image.layer_digests[0]
    url = f"{b.url}/v2/{image.repository}/manifests/{image.tag}"
    async with session.get(url, params={"ns": b.registry}, headers={"Accept": ACCEPT}) as r:
        assert r.status == 200
    mark = registry.mark()
    # The first answer streams while B reads from the liar: it is cut off (or, if B already
    # switched to the upstream, correct). Never wrong bytes with a clean end.
    try:
        status, body = await get_blob(session, b, image.repository, layer)
    except aiohttp.ClientPayloadError:
        pass
    else:
        assert status != 200 or sha256(body) == layer
    status, body = await get_blob(session, b, image.repository, layer)
    assert status == 200 and sha256(body) == layer
    corrupt_gets = [r for r in liar.requests_matching(layer, "GET") if r.fault == "corrupt"]
    assert corrupt_gets, "B should have tried the (lying) peer first"
    assert registry.blob_gets(layer, since=mark, successful_only=True) == 1
    assert b.store.verify().ok and b.store.has(Digest.parse(layer))
    status, body = await get_blob(session, b, image.repository, layer)  # now local
    assert status == 200 and sha256(body) == layer
    assert registry.blob_gets(layer, since=mark, successful_only=True) == 1


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A URL whose port accepts no connection (full backlog): SYNs go unanswered, like a dead
    host. Only sockets this test opened are closed."""
    server = socket.socket()
    server.bind((LOOPBACK, 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect((LOOPBACK, port))
        except BlockingIOError:
            pass
        fillers.append(c)
    time.sleep(0.05)
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        for c in fillers:
            c.close()
        server.close()


@pytest.mark.parametrize("kind", ["closed port", "no answer to connect"])
async def test_dead_peer_costs_at_most_peer_timeout(
    kind: str,
    registry: RegistryProcess,
    image_builder: Any,
    make_node: Any,
    session: aiohttp.ClientSession,
    blackhole: str,
) -> None:
    image = image_builder.build(registry, f"app/dead{len(kind)}", "v1", layer_sizes=[200_000] * 6)
    dead = f"http://{LOOPBACK}:{free_port()}" if kind == "closed port" else blackhole
    peer_timeout = 0.5
    node = await make_node(registry, peers=[dead], peer_timeout=peer_timeout)
    url = f"{node.url}/v2/{image.repository}/manifests/{image.tag}"
    async with session.get(url, params={"ns": node.registry}, headers={"Accept": ACCEPT}) as r:
        assert r.status == 200
    # one blob at a time; whichever of them has the dead peer as its home pays for it once
    times = []
    for digest in image.blobs:
        started = time.monotonic()
        status, body = await get_blob(session, node, image.repository, digest)
        times.append(time.monotonic() - started)
        assert status == 200 and sha256(body) == digest
    assert max(times) < peer_timeout + 0.4, times
    assert sum(t > peer_timeout * 0.8 for t in times) <= 1, times  # then it is skipped
    if kind != "closed port":
        assert node.fetcher.status().peers_down == (dead,)
