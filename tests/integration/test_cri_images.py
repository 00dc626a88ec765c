"""The kubelet's path, for real: containerd 1.6's CRI plugin (PullImage, ImageStatus,
ListImages, RemoveImage over gRPC, as the kubelet calls them), its registry ``config_path``
naming the hosts.toml directory the agent writes at start, a real agent and real
docker-registries on 127.0.0.1.

Upstream blob GETs are counted in the registry's access log; GETs at the agent and blobs linked
into containerd come from the agent's ``/metrics``.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.agent_log import assert_no_tracebacks
from tests.support.containerd import ContainerdFactory, image_state
from tests.support.images import BuiltImage, ImageBuilder
from warmstart_harness.testbed.agent import AgentProcess
from warmstart_harness.testbed.containerd import CRI_NAMESPACE, ContainerdProcess
from warmstart_harness.testbed.cri import Auth, CriClient, CriError
from warmstart_harness.testbed.registry import RegistryProcess, TokenAuthRegistry

MiB = 1 << 20


def test_the_cri_plugin_loads_without_cni_and_answers(
    containerd: ContainerdFactory, tmp_path: Path
) -> None:
    ctd = containerd(cri_config_path=tmp_path / "certs.d")
    plugins = ctd.ctr("plugins", "ls").stdout.splitlines()
    cri = [line.split() for line in plugins if " cri " in line]
    assert cri == [["io.containerd.grpc.v1", "cri", "linux/amd64", "ok"]], plugins
    assert f'config_path = "{tmp_path / "certs.d"}"' in ctd.config.read_text()
    assert ctd.namespace == CRI_NAMESPACE
    with CriClient(ctd.socket, timeout=30) as cri_client:
        version = cri_client.version()
        assert (version.runtime_name, version.runtime_api_version) == ("containerd", "v1")
        assert version.runtime_version.startswith("1.6.")
        assert cri_client.list_images() == []
        assert cri_client.image_status("127.0.0.1:9/none/such:v1") is None
    # the other fixtures' containerd keeps CRI off
    plain = containerd()
    assert not any(" cri " in line for line in plain.ctr("plugins", "ls").stdout.splitlines())


# -- nodes: containerd with CRI + an agent configured as on a Kubernetes node -------------------


@dataclass
class Node:
    ctd: ContainerdProcess
    agent: AgentProcess
    cri: CriClient
    certs: Path


def cri_node(
    containerd: ContainerdFactory,
    agents: Callable[..., AgentProcess],
    base: Path,
    upstreams: dict[str, Any],
    clients: list[CriClient],
) -> Node:
    """containerd whose CRI reads ``base/certs.d``, and an agent that writes its hosts.toml
    there at start, links into that containerd and imports hot images into ``k8s.io``."""
    certs = base / "certs.d"
    ctd = containerd(cri_config_path=certs)
    agent = agents(
        settings={
            "containerd_socket": str(ctd.socket),
            "containerd_namespace": CRI_NAMESPACE,
            "containerd_certs_dir": str(certs),
            "containerd_config": str(ctd.config),
            "upstreams": upstreams,
        }
    )
    setup = agent.status()["node_setup"]
    assert setup["config_path_ok"] is True, setup  # the agent read the real config: CRI reads it
    cri = CriClient(ctd.socket, timeout=120)
    clients.append(cri)
    return Node(ctd, agent, cri, certs)


@pytest.fixture
def cri_clients() -> Iterator[list[CriClient]]:
    clients: list[CriClient] = []
    try:
        yield clients
    finally:
        for client in clients:
            client.close()


def samples(agent: AgentProcess, name: str, **labels: str) -> float:
    status, text = agent.get("/metrics")
    assert status == 200
    total = 0.0
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def blob_gets_at(agent: AgentProcess) -> float:
    return samples(agent, "warmstart_agent_requests_total", route="blob", method="GET")


def linked(agent: AgentProcess) -> float:
    return samples(agent, "warmstart_agent_linked_blobs_total")


def put_peers(agent: AgentProcess, urls: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=10)
    try:
        conn.request("PUT", "/peers", body=json.dumps({"peers": urls}))
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
    finally:
        conn.close()


def tiers(agent: AgentProcess) -> dict[str, str]:
    return {i["reference"]: i["tier"] for i in agent.status()["images"]}


def repo_digest(image: BuiltImage) -> str:
    return f"{image.registry_host}/{image.repository}@{image.manifest_digest}"


def wait_for_status(cri: CriClient, reference: str, present: bool, timeout: float = 10.0) -> Any:
    """CRI learns of images other clients create from containerd's events: poll briefly."""
    deadline = time.monotonic() + timeout
    while True:
        found = cri.image_status(reference)
        if (found is not None) == present or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


# -- pulls as the kubelet makes them ------------------------------------------------------------


def test_cri_pulls_cold_through_the_agent_once_per_cluster_and_warm_with_no_blob_gets(
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    containerd: ContainerdFactory,
    agents: Callable[..., AgentProcess],
    cri_clients: list[CriClient],
    tmp_path: Path,
) -> None:
    image = image_builder.build(registry, "team/app", "v1", [3 * MiB, MiB], seed="cri-cold")
    upstreams = {registry.host: {"url": registry.url}}
    a = cri_node(containerd, agents, tmp_path / "a", upstreams, cri_clients)
    b = cri_node(containerd, agents, tmp_path / "b", upstreams, cri_clients)
    for node in (a, b):
        put_peers(node.agent, [a.agent.url, b.agent.url])
    blobs = len(image.blobs)

    # cold, on node a: CRI asks the agent for the manifest (?ns=); before answering, the agent
    # fetches each blob once and links it into containerd's content store, so containerd
    # itself sends the agent no blob GET (with containerd_link = "off" it would GET them all)
    mark = registry.mark()
    gets, links = blob_gets_at(a.agent), linked(a.agent)
    assert a.cri.image_status(image.reference) is None  # the kubelet's check: absent, so pull
    image_id = a.cri.pull_image(image.reference)
    assert image_id == image.config_digest
    log = a.agent.log.read_text(errors="replace")
    ns = f"?ns={quote(registry.host, safe='')}"
    assert f'"GET /v2/{image.repository}/manifests/{image.manifest_digest}{ns} ' in log
    assert f"for containerd: {blobs} blob(s) linked, 0 present, 0 still arriving" in log
    assert (linked(a.agent) - links, blob_gets_at(a.agent) - gets) == (blobs, 0)

    # cold on node b: each blob's home node (rendezvous) fetched it from the upstream once,
    # the other node from that peer
    links_b = linked(b.agent)
    b.cri.pull_image(image.reference)
    assert linked(b.agent) - links_b == blobs
    for source in ("upstream", "peer"):
        fetched_bytes = sum(
            samples(n.agent, "warmstart_agent_fetched_bytes_total", source=source) for n in (a, b)
        )
        assert fetched_bytes == sum(image.blobs.values()), source
    fetched = registry.blob_get_requests(since=mark, successful_only=True)
    assert sorted(r.blob_digest for r in fetched) == sorted(image.blobs)  # once per cluster
    assert {r.user_agent.split("/")[0] for r in fetched} == {"warmstart-agent"}  # never containerd

    # warm: the kubelet's image GC removed it; the agent's store still holds every blob
    a.cri.remove_image(image.reference)
    assert a.cri.image_status(image.reference) is None
    mark = registry.mark()
    gets, links = blob_gets_at(a.agent), linked(a.agent)
    assert a.cri.pull_image(image.reference) == image_id
    assert blob_gets_at(a.agent) - gets == 0  # containerd asked the agent for no blob
    assert linked(a.agent) - links == blobs  # every blob linked into its content store
    assert registry.blob_gets(since=mark) == 0
    status = a.cri.image_status(image.reference)
    assert status is not None and repo_digest(image) in status.repo_digests
    for node in (a, b):
        state = image_state(node.ctd, image.reference)
        assert state is not None and state.complete and state.tier == "hot"
        assert_no_tracebacks(node.agent.log)


def test_a_hot_prewarm_is_what_cri_reports_present_and_a_cri_remove_makes_it_warm(
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    containerd: ContainerdFactory,
    agents: Callable[..., AgentProcess],
    cri_clients: list[CriClient],
    tmp_path: Path,
) -> None:
    image = image_builder.build(registry, "team/model", "v2", [2 * MiB, MiB], seed="cri-hot")
    node = cri_node(
        containerd, agents, tmp_path, {registry.host: {"url": registry.url}}, cri_clients
    )
    status, body = node.agent.prewarm(image.reference, hot=True)  # POST /prewarm hot
    assert status == 200, body
    assert body["containerd"]["namespace"] == CRI_NAMESPACE and body["containerd"]["unpacked"]
    found = wait_for_status(node.cri, image.reference, present=True)
    assert found is not None, "CRI does not see the hot image: a kubelet would pull it"
    assert found.id == image.config_digest
    assert image.reference in found.repo_tags
    assert repo_digest(image) in found.repo_digests
    [listed] = [i for i in node.cri.list_images() if image.reference in i.repo_tags]
    assert listed.id == image.config_digest and repo_digest(image) in listed.repo_digests
    assert tiers(node.agent).get(image.reference) == "hot"
    # a pod that pins the image by digest finds it too
    pinned = node.cri.image_status(repo_digest(image))
    assert pinned is not None and pinned.id == image.config_digest

    # a kubelet's pull of it now (IfNotPresent would not even ask) transfers nothing
    mark = registry.mark()
    gets = blob_gets_at(node.agent)
    node.cri.pull_image(image.reference)
    assert registry.blob_gets(since=mark) == 0 and blob_gets_at(node.agent) == gets

    # the kubelet's image GC removes it: no longer hot, the agent's copy stays warm
    node.cri.remove_image(image.reference)
    assert wait_for_status(node.cri, image.reference, present=False) is None
    assert tiers(node.agent).get(image.reference) == "warm"
    assert_no_tracebacks(node.agent.log)


def test_a_private_image_pulls_through_the_agent_with_the_pods_auth_and_never_without(
    auth_registry: TokenAuthRegistry,
    image_builder: ImageBuilder,
    containerd: ContainerdFactory,
    agents: Callable[..., AgentProcess],
    cri_clients: list[CriClient],
    tmp_path: Path,
) -> None:
    """The kubelet passes a pod's imagePullSecret in ``PullImageRequest.auth``; containerd
    answers the agent's Basic challenge with it. The agent (its own credentials: alice) serves
    the cached image only to a client whose credentials the upstream accepts."""
    image = image_builder.build(
        auth_registry, "private/model", "v1", [2 * MiB, 300_000], seed="cri-private"
    )
    upstreams = {
        auth_registry.host: {
            "url": auth_registry.url,
            "username": "alice",
            "password": "secret",
            "ca_file": str(auth_registry.ca_file),
        }
    }
    node = cri_node(containerd, agents, tmp_path, upstreams, cri_clients)

    node.cri.pull_image(image.reference, Auth(username="alice", password="secret"))
    found = node.cri.image_status(image.reference)
    assert found is not None and repo_digest(image) in found.repo_digests
    log = node.agent.log.read_text(errors="replace")
    served = [line for line in log.splitlines() if f"/v2/{image.repository}/manifests/" in line]
    assert any('HTTP/1.1" 200' in line for line in served), log[-3000:]

    # the image is in the agent's store now; a pull without credentials the upstream accepts
    # gets none of it: the agent answers 401 (containerd then tries the registry itself, which
    # it cannot verify here, so the pull fails and reports the agent's 401). Credentials
    # addressed to the registry (server_address) containerd 1.6 gives only to that host
    # (ParseAuth), never to a mirror: refused at the agent too (the kubelet leaves
    # server_address empty for imagePullSecrets, as above).
    node.cri.remove_image(image.reference)
    before = len(log.splitlines())
    for auth in (
        None,
        Auth(username="alice", password="wrong"),
        Auth(username="mallory", password="secret"),
        Auth(username="alice", password="secret", server_address=auth_registry.url),
    ):
        with pytest.raises(CriError) as refused:
            node.cri.pull_image(image.reference, auth)
        assert f"host {node.agent.host} failed" in str(refused.value), refused.value
        assert "401 Unauthorized" in str(refused.value)
        assert node.cri.image_status(image.reference) is None
    answers = node.agent.log.read_text(errors="replace").splitlines()[before:]
    asked = [line for line in answers if f"/v2/{image.repository}/" in line]
    assert asked and all('HTTP/1.1" 401' in line for line in asked), "\n".join(asked)
    assert_no_tracebacks(node.agent.log)
