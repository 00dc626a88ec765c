"""A real ``warmstart agent --peers-from-kubernetes`` against kmock's Kubernetes API emulator:
its peers follow the EndpointSlices of the agents' Service (adds, a readiness flip, deletion),
a blob held only by a peer is served from that peer once a slice lists it (0 upstream GETs),
and with the API gone the agent keeps serving with the last list.

Three real agents share one port on 127.0.0.1, .2 and .3, as agents on three nodes would; the
EndpointSlices name them by IP, with the one port.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kmock import KubernetesEmulator
from prometheus_client.parser import text_string_to_metric_families

from tests.support.images import ImageBuilder
from tests.support.tools import require_tool
from warmstart.agent.client import AgentClient
from warmstart.kube.client import KubeClient, resource_path
from warmstart.kube.config import KubeConfig
from warmstart_harness.testbed.agent import AgentProcess
from warmstart_harness.testbed.net import free_port
from warmstart_harness.testbed.registry import RegistryProcess

NAMESPACE = "warmstart"
SERVICE = "warmstart-agent"
SLICES = resource_path("discovery.k8s.io/v1", "endpointslices", NAMESPACE)
RESOURCE = "discovery.k8s.io/v1/endpointslices"
MiB = 1 << 20

StartAgent = Callable[..., Awaitable[AgentProcess]]


def endpoint_slice(name: str, port: int, *addresses: str, ready: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": SERVICE},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [a], "conditions": {"ready": ready}} for a in addresses],
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
    }


@pytest.fixture
async def start_agent(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StartAgent]:
    """``await start_agent(listen_host=..., port=..., ...)``: a real agent process, started in a
    thread (kmock answers from this test's event loop, which must keep running)."""
    started: list[AgentProcess] = []
    failures = request.session.testsfailed

    async def make(**kwargs: Any) -> AgentProcess:
        agent = AgentProcess(tmp_path / f"agent{len(started)}", start=False, **kwargs)
        started.append(agent)
        await asyncio.to_thread(agent.start)
        return agent

    try:
        yield make
    finally:
        for agent in reversed(started):
            if request.session.testsfailed > failures:
                sys.stderr.write(f"\n=== agent {agent.url} log ===\n{agent.log_tail()}\n")
            await asyncio.to_thread(agent.stop)


async def others(agent: AgentProcess) -> set[str]:
    async with AgentClient(agent.url, timeout=5) as client:
        answer = await client.peers()
    return set(answer.peers) - {answer.self_url}


async def until_peers(agent: AgentProcess, expected: set[str], seconds: float = 15) -> None:
    seen: set[str] = set()
    try:
        async with asyncio.timeout(seconds):
            while (seen := await others(agent)) != expected:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"peers of {agent.url}: {sorted(seen)}, expected {sorted(expected)}")


async def get_blob(url: str, repo: str, digest: str, ns: str) -> bytes:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/v2/{repo}/blobs/{digest}", params={"ns": ns}) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.read()


async def metric(agent: AgentProcess, name: str, **labels: str) -> float:
    """One sample of the agent's /metrics (0 when absent)."""
    status, text = await asyncio.to_thread(agent.get, "/metrics")
    assert status == 200
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def kubernetes_agent_args(api: str) -> list[str]:
    return ["--peers-from-kubernetes", "--kube-api", api, "--peers-service", SERVICE]


async def test_peers_follow_the_endpointslices(
    kmock: KubernetesEmulator,
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    start_agent: StartAgent,
) -> None:
    require_tool("docker-registry")
    kmock.resources[RESOURCE] = {}  # the resource exists, with no slices yet
    api = str(kmock.url).rstrip("/")
    image = image_builder.build(registry, "team/app", "v1", [2 * MiB], seed="kube-peers")
    layer = image.layer_digests[0]
    port = free_port()
    upstreams = {registry.host: registry.url}
    peer_b = await start_agent(listen_host="127.0.0.2", port=port, upstreams=upstreams)
    peer_c = await start_agent(listen_host="127.0.0.3", port=port, upstreams=upstreams)
    agent = await start_agent(
        port=port,
        upstreams=upstreams,
        peers=["http://127.0.0.9:1"],  # static: replaced by the Service's endpoints
        extra_args=kubernetes_agent_args(api),
        env={"POD_NAMESPACE": NAMESPACE},
    )
    # The blob is on peer B only.
    body = await get_blob(peer_b.url, image.repository, layer, registry.host)
    assert "sha256:" + hashlib.sha256(body).hexdigest() == layer

    async with AgentClient(agent.url, timeout=5) as client:
        async with asyncio.timeout(15):
            while not (status := await client.status()).peer_source.synced:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    assert status.peer_source.kind == "kubernetes"
    assert (status.peer_source.namespace, status.peer_source.service) == (NAMESPACE, SERVICE)
    await until_peers(agent, set())  # no slices yet: the static list is gone
    assert "static peer(s) configured are replaced" in agent.log.read_text()

    async with KubeClient(KubeConfig(server=api)) as kube:
        # The agent's own endpoint is in the slice too: left out of its peers.
        await kube.create(SLICES, endpoint_slice("a", port, "127.0.0.1", "127.0.0.2"))
        await until_peers(agent, {peer_b.url})
        mark = registry.mark()
        through = await get_blob(agent.url, image.repository, layer, registry.host)
        assert through == body
        assert registry.blob_gets(since=mark) == 0, "the blob came from the upstream"
        assert await metric(agent, "warmstart_agent_fetched_bytes_total", source="peer") == len(
            body
        )
        assert await metric(agent, "warmstart_agent_fetched_bytes_total", source="upstream") == 0
        assert await metric(agent, "warmstart_peers") == 1
        assert await metric(agent, "warmstart_peers_from_kubernetes") == 1

        await kube.create(SLICES, endpoint_slice("b", port, "127.0.0.3"))
        await until_peers(agent, {peer_b.url, peer_c.url})
        changed = (await AgentClient(agent.url).status()).peer_source.changed_at

        await kube.patch(
            f"{SLICES}/b",
            {"endpoints": [{"addresses": ["127.0.0.3"], "conditions": {"ready": False}}]},
        )
        await until_peers(agent, {peer_b.url})
        async with AgentClient(agent.url) as client:
            later = (await client.status()).peer_source.changed_at
        assert changed is not None and later is not None and later > changed

        await kube.delete(f"{SLICES}/a")
        await until_peers(agent, set())
    assert agent.running and peer_b.running and peer_c.running


class Relay:
    """A TCP relay to the API emulator that can be cut: the API server as the agent sees it
    goes away (listener closed, every connection reset). kmock's own in-process server cannot
    be stopped while a watch is open (its shutdown waits for the stream), so the relay stands
    in for the API server's process."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self._server.wait_closed()


async def test_api_gone_keeps_the_last_list_and_serving(
    kmock: KubernetesEmulator,
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    start_agent: StartAgent,
) -> None:
    kmock.resources[RESOURCE] = {}
    image = image_builder.build(registry, "team/app", "v2", [MiB], seed="kube-gone")
    layer = image.layer_digests[0]
    port = free_port()
    upstreams = {registry.host: registry.url}
    relay = Relay(kmock.url.port or 0)
    await relay.start()
    peer = await start_agent(listen_host="127.0.0.2", port=port, upstreams=upstreams)
    await get_blob(peer.url, image.repository, layer, registry.host)
    async with KubeClient(KubeConfig(server=str(kmock.url).rstrip("/"))) as kube:
        await kube.create(SLICES, endpoint_slice("a", port, "127.0.0.2"))
    agent = await start_agent(
        port=port,
        upstreams=upstreams,
        extra_args=kubernetes_agent_args(f"http://127.0.0.1:{relay.port}"),
        env={"POD_NAMESPACE": NAMESPACE},
    )
    await until_peers(agent, {peer.url})
    await relay.cut()  # the API server goes away
    async with asyncio.timeout(30):
        while "retrying with backoff" not in agent.log.read_text():  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    async with AgentClient(agent.url, timeout=5) as client:
        status = await client.status()
        assert (await client.healthz()).ok
    assert status.peer_source.errors >= 1
    assert await others(agent) == {peer.url}  # the last list
    mark = registry.mark()
    assert await get_blob(agent.url, image.repository, layer, registry.host)
    assert registry.blob_gets(since=mark) == 0  # still from the peer
    lines = [line for line in agent.log.read_text().splitlines() if "retrying with backoff" in line]
    assert all(len(line) < 400 for line in lines)
    assert len(lines) == 1  # one warning for the outage, not one per retry
