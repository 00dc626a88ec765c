"""The image deploy/kubernetes runs, for real: built without Docker (``warmstart image
build-agent``: debootstrap base, Debian's ctr, wheels, umoci), pushed to a registry, pulled
THROUGH a warmstart agent into containerd by the CRI's ``PullImage`` (the kubelet's path), then
started with ``ctr run`` as the DaemonSet describes it (its command line, env, mounts, security
context and limits, read from deploy/kubernetes/base; tests/support/daemonset_pod.py) with the
base's agent.toml plus an upstream, as an overlay adds one.

One node of a network-namespace cluster (the pod's host network is the node's namespace, so
its fixed port 5050 collides with nothing on the machine): containerd with its CRI plugin, its
root, socket and config laid out as on a node below a temp dir standing in for ``/``
(``var/lib/containerd``, ``run/containerd/containerd.sock``, ``etc/containerd/certs.d``).
``--peers-from-kubernetes`` needs an API server: kmock over TLS on the root namespace's LAN
address, with the service account Kubernetes would mount (token, ca.crt, namespace) and
``KUBERNETES_SERVICE_HOST``/``_PORT``; one EndpointSlice lists the node.

Then the agent in the image does its job: writes the node's hosts.toml, the CRI's next pull
goes through it (blobs hard-linked into containerd across its one /host/var/lib mount: 0 blob
GETs from containerd), a hot pre-warm runs the image's ctr against the mounted socket, and it
stops on SIGTERM with exit code 0.

Downloads Debian packages and wheels on a cold cache (``package_registries``); the build's
caches are the session's image cache (``$WARMSTART_IMAGE_CACHE`` to keep them across runs).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import RawTestServer
from kmock import KubernetesEmulator, Server
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemonset_pod import (
    BASE,
    NodeFiles,
    agent_pod,
    default_capabilities,
    load_daemonset,
)
from tests.support.images import ImageBuilder
from tests.support.kmock_selectors import SelectingKubernetesEmulator
from tests.support.tools import in_ci, require_tool
from warmstart.agent.api import PrewarmRequest
from warmstart.agent.client import AgentClient
from warmstart.containerd.ctr import CRI_NAMESPACE
from warmstart.image.agent_image import AgentImageOptions, AgentImageResult, build_agent_image
from warmstart.kube.client import KubeClient, resource_path
from warmstart.kube.config import KubeConfig
from warmstart_harness.testbed.agent import AgentProcess
from warmstart_harness.testbed.certs import CertificateAuthority
from warmstart_harness.testbed.containerd import ContainerdProcess, render_config
from warmstart_harness.testbed.cri import CriClient
from warmstart_harness.testbed.layout import push_layout
from warmstart_harness.testbed.netcluster import NetCluster, NetNode
from warmstart_harness.testbed.registry import RegistryProcess

pytestmark = [pytest.mark.package_registries, pytest.mark.timeout(900)]

MiB = 1 << 20
NAMESPACE = "warmstart"  # deploy/kubernetes/base/kustomization.yaml
SERVICE = "warmstart-agent"
SLICES = resource_path("discovery.k8s.io/v1", "endpointslices", NAMESPACE)
BOOTSTRAP_PORT = 5051  # the agent that serves the image's own pull (5050 is the pod's)
TAG = "test"


def _require() -> None:
    for tool in ("ip", "tc", "nsenter", "docker-registry", "containerd", "ctr", "runc"):
        require_tool(tool)
    for tool in ("debootstrap", "umoci", "skopeo", "apt-get", "dpkg-deb"):
        require_tool(tool)
    if os.geteuid() != 0:
        if in_ci():
            pytest.fail("network namespaces, debootstrap and containerd need root", pytrace=False)
        pytest.skip("needs root")


@pytest.fixture(scope="module")
def agent_image(image_cache: Path) -> Iterator[AgentImageResult]:
    """The image as ``make image`` builds it (tag ``test``), timed."""
    _require()
    layout = Path(tempfile.mkdtemp(prefix="warmstart-agent-layout-"))
    try:
        started = time.monotonic()
        result = build_agent_image(
            AgentImageOptions(cache=image_cache, layout=layout / "oci", tag=TAG), log=print
        )
        took = time.monotonic() - started
        cached = ", ".join(
            f"{k} {'cached' if v else 'built'}" for k, v in result.cache_hits.items()
        )
        print(
            f"agent image: {result.total_size / MiB:.1f} MiB compressed, "
            f"{result.total_unpacked / MiB:.1f} MiB unpacked, built in {took:.1f} s ({cached})"
        )
        yield result
    finally:
        shutil.rmtree(layout, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[NetCluster]:
    _require()
    with NetCluster(1, rate="4gbit") as net:
        with pytest.MonkeyPatch.context() as mp:
            # skopeo honours *_PROXY; the cluster's addresses must never go through one
            assert net.plan is not None
            no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY"), str(net.plan.subnet)]))
            mp.setenv("NO_PROXY", no_proxy)
            mp.setenv("no_proxy", no_proxy)
            yield net


class _TlsTestServer(RawTestServer):
    """aiohttp's raw test server on TLS (kmock's Server starts it without ``ssl``)."""

    context: ssl.SSLContext

    async def start_server(self, **kwargs: Any) -> None:
        await super().start_server(ssl=self.context, **kwargs)


@pytest.fixture
async def kube_api(
    cluster: NetCluster, tmp_path: Path
) -> AsyncIterator[tuple[KubernetesEmulator, Server, CertificateAuthority]]:
    """kmock's Kubernetes emulator over HTTPS on the root namespace's LAN address (the node
    reaches it there), its certificate from a CA of the test's."""
    ca = CertificateAuthority(tmp_path / "kube-ca")
    server_cert = ca.issue_server("kube-api", ip=cluster.control_addr)
    tls = type("TlsServer", (_TlsTestServer,), {"context": ca.server_ssl_context(server_cert)})
    async with (
        SelectingKubernetesEmulator() as emulator,
        Server(emulator, host=cluster.control_addr, server_cls=tls) as server,
    ):
        emulator.resources["discovery.k8s.io/v1/endpointslices"] = {}
        yield emulator, server, ca


# -- helpers ------------------------------------------------------------------------------------


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def metric(url: str, name: str, **labels: str) -> float:
    status, text = http_get(url + "/metrics")
    assert status == 200
    total = 0.0
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def linked(url: str) -> float:
    return metric(url, "warmstart_agent_linked_blobs_total")


def blob_gets_at(url: str) -> float:
    return metric(url, "warmstart_agent_requests_total", route="blob", method="GET")


def agent_toml(upstream: RegistryProcess) -> str:
    """The base's agent.toml and one upstream, as an overlay's (which replaces the whole file)."""
    base = (BASE / "agent.toml").read_text()
    return base + f'\n[upstreams."{upstream.host}"]\nurl = "{upstream.url}"\n'


def node_config_toml() -> str:
    """containerd's config as it is on a node whose paths are the real ones
    (``/var/lib/containerd``, ``/etc/containerd/certs.d``): what the pod's read-only
    /etc/containerd shows. The test's containerd runs the same template at the temp paths."""
    return render_config(
        Path("/var/lib/containerd"),
        Path("/run/containerd"),
        Path("/run/containerd/containerd.sock"),
        (Path("/etc/containerd/certs.d"), Path("/opt/cni")),
    )


def wait_for(what: str, check: Any, timeout: float, log: Path | None = None) -> float:
    started = time.monotonic()
    while True:
        if check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            pytest.fail(f"{what} not within {timeout:.0f} s\n{tail}")
        time.sleep(0.1)


def task_status(ctd: ContainerdProcess, cid: str) -> str | None:
    for line in ctd.ctr("tasks", "ls").stdout.splitlines()[1:]:
        parts = line.split()
        if parts and parts[0] == cid:
            return parts[-1]
    return None


def remove_container(ctd: ContainerdProcess, cid: str) -> None:
    ctd.ctr("tasks", "delete", "-f", cid, check=False)
    ctd.ctr("containers", "delete", cid, check=False)


# -- the test -----------------------------------------------------------------------------------


async def test_the_daemonset_runs_the_image_pulled_by_cri_through_an_agent(
    agent_image: AgentImageResult,
    cluster: NetCluster,
    kube_api: tuple[KubernetesEmulator, Server, CertificateAuthority],
    image_builder: ImageBuilder,
    request: pytest.FixtureRequest,
) -> None:
    _, api, ca = kube_api
    node: NetNode = cluster.nodes[0]
    upstream = cluster.start_upstream_registry()
    image_ref = f"{upstream.host}/warmstart:{TAG}"
    started = time.monotonic()
    await asyncio.to_thread(push_layout, agent_image.layout, TAG, image_ref)
    print(f"pushed {image_ref} in {time.monotonic() - started:.1f} s")

    # The node: / is ROOT; containerd with its CRI plugin reading ROOT/etc/containerd/certs.d
    root = Path(tempfile.mkdtemp(prefix="wsai-", dir="/tmp"))
    certs = root / "etc/containerd/certs.d"
    certs.mkdir(parents=True)
    (root / "etc/containerd/config.toml").write_text(node_config_toml())
    ctd = ContainerdProcess(
        root / "run/containerd",
        namespace=CRI_NAMESPACE,
        netns=node.netns,
        cri_config_path=certs,
        root=root / "var/lib/containerd",
    )
    bootstrap: AgentProcess | None = None
    cri: CriClient | None = None
    cid = f"wsai-{os.getpid()}"
    pod_log = root / "agent-pod.log"
    failures = request.session.testsfailed
    try:
        await asyncio.to_thread(ctd.start)
        cri = CriClient(ctd.socket, timeout=300)
        # an agent already on the node (a process, as before the DaemonSet) serves the pull of
        # the agent's own image; it writes ROOT/etc/containerd/certs.d/<registry>/hosts.toml
        bootstrap = AgentProcess(
            root / "bootstrap-agent",
            upstreams={upstream.host: upstream.url},
            port=BOOTSTRAP_PORT,
            netns=node.netns,
            listen_host=node.lan_addr,
            settings={
                "containerd_socket": str(ctd.socket),
                "containerd_namespace": CRI_NAMESPACE,
                "containerd_certs_dir": str(certs),
                "containerd_config": str(ctd.config),
            },
            start=False,
        )
        await asyncio.to_thread(bootstrap.start)
        assert bootstrap.status()["node_setup"]["config_path_ok"] is True

        # 1. the kubelet's pull of the agent image: CRI PullImage, through the agent
        mark = upstream.mark()
        links = linked(bootstrap.url)
        started = time.monotonic()
        image_id = await asyncio.to_thread(cri.pull_image, image_ref)
        print(f"CRI PullImage {image_ref} through the agent: {time.monotonic() - started:.1f} s")
        assert image_id == agent_image.manifest.config_digest
        blobs = len(agent_image.manifest.layers) + 1
        assert linked(bootstrap.url) - links == blobs  # containerd fetched none itself
        fetched = upstream.blob_get_requests(since=mark, successful_only=True)
        assert len({r.blob_digest for r in fetched}) == blobs
        assert {r.user_agent.split("/")[0] for r in fetched} == {"warmstart-agent"}

        # 2. the pod, as the DaemonSet says
        token = secrets.token_hex(16)
        sa = root / "pod/serviceaccount"
        sa.mkdir(parents=True)
        (sa / "token").write_text("test-token")
        (sa / "namespace").write_text(NAMESPACE)
        shutil.copyfile(ca.directory / "ca.crt", sa / "ca.crt")
        files = NodeFiles(
            root,
            root / "pod",
            config_maps={"warmstart-agent": {"agent.toml": agent_toml(upstream)}},
            secrets={"warmstart-peer": {"peer_token": token}},
        )
        daemonset = load_daemonset()
        pod = agent_pod(
            daemonset,
            files,
            {
                "metadata.namespace": NAMESPACE,
                "spec.nodeName": node.name,
                "status.podIP": node.lan_addr,  # host network: the node's address
            },
            injected_env={
                "KUBERNETES_SERVICE_HOST": cluster.control_addr,
                "KUBERNETES_SERVICE_PORT": str(api.port),
            },
            service_account=sa,
            socket_sources={"/run/containerd/containerd.sock": ctd.socket},
        )
        assert pod.command[:2] == ["warmstart", "agent"] and node.name in pod.command
        assert pod.host_network and pod.read_only_root and pod.drop_all and pod.seccomp
        # ctr run cannot set a user: the image's default must be the DaemonSet's runAsUser
        config = json.loads(
            (
                agent_image.layout / "blobs/sha256" / agent_image.manifest.config_digest[7:]
            ).read_text()
        )
        assert pod.run_as_user == 0 and config["config"].get("User", "") in ("", "0", "0:0")
        port = pod.ports["http"]
        url = f"http://{node.lan_addr}:{port}"
        async with KubeClient(
            KubeConfig(server=str(api.url).rstrip("/"), ca_file=ca.directory / "ca.crt")
        ) as kube:
            await kube.create(
                SLICES,
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": f"{SERVICE}-{node.name}",
                        "namespace": NAMESPACE,
                        "labels": {"kubernetes.io/service-name": SERVICE},
                    },
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": [node.lan_addr], "conditions": {"ready": True}}],
                    "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
                },
            )
        args = pod.ctr_run_args(image_ref, cid, pod_log, default_capabilities())
        started = time.monotonic()
        await asyncio.to_thread(ctd.ctr, *args)
        ready = await asyncio.to_thread(
            wait_for,
            "/healthz 200",
            lambda: _healthy(url),
            120,
            pod_log,
        )
        print(f"ctr run -> /healthz 200 in {time.monotonic() - started:.1f} s ({ready:.1f} s)")

        # inside: uid 0, no capabilities, no new privileges, read-only root, the CA bundle
        probe = (
            "import os, ssl\n"
            "s = dict(l.split(':', 1) for l in open('/proc/self/status') if ':' in l)\n"
            "print(s['Uid'].split()[0], s['CapEff'].strip(), s['NoNewPrivs'].strip())\n"
            "print(ssl.create_default_context().cert_store_stats()['x509_ca'])\n"
            "try:\n    open('/usr/x', 'w')\nexcept OSError as e:\n    print(e.errno)\n"
        )
        inside = await asyncio.to_thread(
            ctd.ctr, "tasks", "exec", "--exec-id", "probe", cid, "python3", "-c", probe
        )
        ids, cas, errno = inside.stdout.split("\n")[:3]
        assert ids.split() == ["0", "0000000000000000", "1"], inside.stdout
        assert int(cas) > 100, inside.stdout
        assert errno == "30", inside.stdout  # EROFS
        version = await asyncio.to_thread(ctd.ctr, "tasks", "exec", "--exec-id", "ctr", cid,
                                          "ctr", "--version")  # fmt: skip
        assert "1.6." in version.stdout

        async with AgentClient(url, token=token, timeout=60) as client:
            status = await client.status()
        assert status.node_id == node.name
        assert status.url == url
        assert status.peer_source.kind == "kubernetes" and status.peer_source.synced
        assert status.peer_source.namespace == NAMESPACE
        assert status.peers == [url]  # the EndpointSlice: this agent only
        assert status.store.root == "/host/var/lib/warmstart/store"
        setup = status.node_setup
        assert setup is not None and setup.config_path_ok, setup
        # it took over the bootstrap agent's hosts.toml (warmstart's marker: replaced)
        assert setup.hosts_written == [f"/etc/containerd/certs.d/{upstream.host}/hosts.toml"]
        hosts = (certs / upstream.host / "hosts.toml").read_text()
        assert f'[host."http://127.0.0.1:{port}"]' in hosts, hosts
        assert (root / "var/lib/warmstart/store").is_dir()

        # 3. the kubelet's next pull goes through the agent in the image
        app = image_builder.build(upstream, "team/app", "v1", [2 * MiB, MiB], seed="agent-image")
        mark = upstream.mark()
        links, gets = linked(url), blob_gets_at(url)
        await asyncio.to_thread(cri.pull_image, app.reference)
        assert linked(url) - links == len(app.blobs)  # hard links across /host/var/lib
        assert blob_gets_at(url) - gets == 0  # containerd asked the agent for no blob
        fetched = upstream.blob_get_requests(since=mark, successful_only=True)
        assert sorted(r.blob_digest for r in fetched) == sorted(app.blobs)
        assert {r.user_agent.split("/")[0] for r in fetched} == {"warmstart-agent"}

        # 4. a hot pre-warm runs the image's ctr on the mounted socket, into k8s.io
        model = image_builder.build(upstream, "team/model", "v1", [MiB], seed="agent-image-hot")
        async with AgentClient(url, token=token, timeout=120) as client:
            answer = await client.prewarm(PrewarmRequest(reference=model.reference, hot=True))
        assert answer.containerd is not None and answer.containerd.unpacked, answer
        assert answer.containerd.namespace == CRI_NAMESPACE
        found = await asyncio.to_thread(_wait_cri_image, cri, model.reference)
        assert found is not None and found.id == model.config_digest

        # 5. SIGTERM: drained and gone within the pod's grace period, exit code 0
        grace = daemonset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        await asyncio.to_thread(ctd.ctr, "tasks", "kill", "--signal", "SIGTERM", cid)
        stopped = await asyncio.to_thread(
            wait_for, "the agent's exit", lambda: task_status(ctd, cid) == "STOPPED", grace
        )
        deleted = await asyncio.to_thread(ctd.ctr, "tasks", "delete", cid, check=False)
        assert "exit code" not in deleted.stderr, deleted.stderr  # ctr warns on non-zero only
        print(f"SIGTERM -> exited in {stopped:.1f} s")
        log = pod_log.read_text(errors="replace")
        assert "Traceback" not in log, log[-4000:]
    finally:
        if request.session.testsfailed > failures or sys.exc_info()[0] is not None:
            for name, path in (("pod", pod_log), ("containerd", ctd.log)):
                if path.exists():
                    tail = path.read_text(errors="replace")[-3000:]
                    sys.stderr.write(f"\n=== {name} log ===\n{tail}\n")
            if bootstrap is not None:
                sys.stderr.write(f"\n=== bootstrap agent ===\n{bootstrap.log_tail()}\n")
        if ctd.proc is not None:
            await asyncio.to_thread(remove_container, ctd, cid)
        if cri is not None:
            cri.close()
        if bootstrap is not None:
            await asyncio.to_thread(bootstrap.stop)
        await asyncio.to_thread(ctd.wipe)
        shutil.rmtree(root, ignore_errors=True)


def _healthy(url: str) -> bool:
    try:
        return http_get(url + "/healthz", timeout=1)[0] == 200
    except OSError:
        return False


def _wait_cri_image(cri: CriClient, reference: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = cri.image_status(reference)
        if found is not None or time.monotonic() > deadline:
            return found
        time.sleep(0.05)
