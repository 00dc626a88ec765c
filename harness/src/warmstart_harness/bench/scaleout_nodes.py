"""The nodes of the scale-out benchmark, set up for one mode inside a :class:`NetCluster`.

Every node gets a fresh containerd in its network namespace (so ``ctr``'s pulls cross the
node's shaped uplink) and, by mode, what its containerd pulls through:

- ``baseline``: nothing; containerd pulls straight from the upstream registry;
- ``registry-proxy``: a ``docker-registry`` pull-through cache (``proxy.remoteurl``) on the
  node's 127.0.0.1, the mirror in containerd's ``hosts.toml``;
- ``warmstart``: a ``warmstart agent`` on the node's LAN address, the other nodes' agents as
  peers, the node's containerd for hot pre-warms; the mirror in ``hosts.toml``. The agents
  share a generated ``peer_token``, as a real cluster's would (:attr:`NodeStack.peer_token`).
- ``provisioned``: as ``baseline`` (its replicas are all up before the spike's replay, so how
  they pulled is not what it measures).

:func:`start_replica` times one replica from "start" to "first request answered", split into
pull, unpack, start and model load, straight through the runtime driver. Its pull is made by
the nodes' ``puller``: ``ctr images pull`` (the default) or the CRI's ``PullImage``
(:mod:`warmstart_harness.bench.scaleout_cri`); the container is then created and started with ``ctr``
either way. With ``cri`` everything (replicas, the agents' hot pre-warms, ``warmstart serve``'s
own pulls in the spike) is in the CRI's namespace ``k8s.io``.
With a model
(:mod:`warmstart_harness.bench.scaleout_model`) a warmstart node's agent materialises it while the
image is pulled and the replica gets it at ``/opt/ml/model``; a replica on a node without an
agent downloads it itself once its container runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from warmstart.containerd.ctr import CRI_NAMESPACE, Ctr
from warmstart.containerd.hosts import write_hosts_dir
from warmstart.oci.reference import Reference
from warmstart.runtime.containerd import ContainerdRuntime
from warmstart.runtime.interfaces import PullTiming, Replica, ReplicaError, ReplicaSpec
from warmstart.serving.models import model_mount
from warmstart.serving.serve import NodeOption
from warmstart_harness.bench.scaleout_cri import PULLERS, ready_cri_client
from warmstart_harness.bench.scaleout_model import (
    AgentModel,
    BenchModel,
    agent_model,
    agent_unpin,
    download_env,
)
from warmstart_harness.bench.scaleout_types import BASELINE, PROVISIONED, REGISTRY_PROXY, WARMSTART
from warmstart_harness.testbed.agent import AgentProcess
from warmstart_harness.testbed.cluster import remove_containers
from warmstart_harness.testbed.containerd import ContainerdProcess
from warmstart_harness.testbed.cri import CriClient
from warmstart_harness.testbed.netcluster import NetCluster, NetNode
from warmstart_harness.testbed.netns import nsenter_prefix
from warmstart_harness.testbed.registry import RegistryProcess

NAMESPACE = "bench"
AGENT_PORT = 5050
REPLICA_PORT = 18080
READY_TIMEOUT = 900.0
FIRST_REQUEST = {"input_tokens": 16, "output_tokens": 1}


@dataclass
class NodeStack:
    """One node's containerd and its mirror (agent or proxy) for one mode."""

    node: NetNode
    mode: str
    containerd: ContainerdProcess
    work_dir: Path
    upstream_host: str
    agent: AgentProcess | None = None
    proxy: RegistryProcess | None = None
    peer_token: str | None = field(default=None, repr=False)  # the agents' shared secret
    puller: str = "ctr"  # or "cri": replicas' pulls by containerd's CRI plugin
    certs_dir: Path | None = None  # cri: the CRI's config_path (hosts.toml files)
    _runtime: ContainerdRuntime | None = field(default=None, repr=False)
    _cri: CriClient | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def namespace(self) -> str:
        return CRI_NAMESPACE if self.puller == "cri" else NAMESPACE

    @property
    def mirror_url(self) -> str | None:
        if self.agent is not None:
            return self.agent.url
        if self.proxy is not None:
            return self.proxy.url
        return None

    def runtime(self) -> ContainerdRuntime:
        if self._runtime is None:
            self._runtime = ContainerdRuntime(
                Ctr(
                    self.containerd.socket,
                    self.namespace,
                    prefix=tuple(nsenter_prefix(self.node.netns)),
                ),
                self.work_dir / "runtime",
                id_prefix=f"wsb{self.node.index}",
                agent_url=self.mirror_url,
                insecure_registries=frozenset({self.upstream_host}),
            )
        return self._runtime

    def node_option(self, slots: int = 1) -> NodeOption:
        return NodeOption(
            self.name,
            self.containerd.socket,
            self.mirror_url,
            host=self.node.lan_addr,
            slots=slots,
            netns=self.node.netns,
        )

    def cri(self) -> CriClient:
        """The CRI client of this node's containerd, once its CRI plugin answers (it
        initialises after the socket is up)."""
        if self._cri is None:
            self._cri = ready_cri_client(self.containerd.socket)
        return self._cri

    def _close_cri(self) -> None:
        if self._cri is not None:
            self._cri.close()
            self._cri = None

    def reset_containerd(self) -> None:
        """Drop everything containerd holds (content, snapshots): a node that never ran it."""
        remove_containers(self.containerd)
        self._close_cri()
        self.containerd.wipe()
        self.containerd.start()
        if self.puller == "cri":
            self.cri()  # ready before anything is timed

    def held_bytes(self) -> int:
        """Bytes of complete blobs in this node's agent store (0 without an agent)."""
        if self.agent is None:
            return 0
        root = self.agent.store / "blobs"
        total = 0
        for path in root.glob("*/*"):
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total

    def reset_agent_store(self) -> None:
        """Restart the node's agent with an empty store: it holds nothing of any image."""
        if self.agent is None:
            return
        self.agent.stop()
        shutil.rmtree(self.agent.store, ignore_errors=True)
        self.agent.start()

    def close(self) -> None:
        try:
            remove_containers(self.containerd)
        except OSError:
            pass
        self._close_cri()
        if self.agent is not None:
            self.agent.cleanup()
        if self.proxy is not None:
            self.proxy.stop()
        self.containerd.wipe()
        shutil.rmtree(self.work_dir, ignore_errors=True)


def _start_stack(
    net: NetCluster,
    node: NetNode,
    mode: str,
    upstream: RegistryProcess,
    agent_urls: dict[str, str],
    peer_token: str | None = None,
    puller: str = "ctr",
    agent_settings: Mapping[str, Any] | None = None,
) -> NodeStack:
    # Short: containerd's socket path must fit a unix socket address.
    work = Path(tempfile.mkdtemp(prefix=f"wsb{node.index}-", dir="/tmp"))
    certs = work / "certs.d" if puller == "cri" else None
    ctd = ContainerdProcess(
        work / "ctd",
        namespace=CRI_NAMESPACE if certs else NAMESPACE,
        netns=node.netns,
        cri_config_path=certs,
    )
    stack = NodeStack(node, mode, ctd, work, upstream.host, puller=puller, certs_dir=certs)
    try:
        ctd.start()
        if certs is not None:
            stack.cri()
        if mode == WARMSTART:
            stack.peer_token = peer_token
            # cri: the agent writes containerd's hosts.toml into the CRI's config_path at start
            # and checks containerd's config, as on a Kubernetes node
            node_setup = (
                {"containerd_certs_dir": str(certs), "containerd_config": str(ctd.config)}
                if certs
                else {}
            )
            stack.agent = AgentProcess(
                work / "agent",
                upstreams={upstream.host: upstream.url},
                peers=[u for n, u in agent_urls.items() if n != node.name],
                port=AGENT_PORT,
                netns=node.netns,
                listen_host=node.lan_addr,
                settings={
                    "node_id": node.name,
                    "containerd_socket": str(ctd.socket),
                    "containerd_namespace": stack.namespace,
                    "peer_token": peer_token,
                    **node_setup,
                    **(agent_settings or {}),
                },
            )
        elif mode == REGISTRY_PROXY:
            stack.proxy = net.start_node_proxy(node, upstream, work / "proxy")
        elif mode not in (BASELINE, PROVISIONED):
            raise ValueError(f"unknown mode {mode!r}")
    except BaseException:
        stack.close()
        raise
    return stack


def start_nodes(
    net: NetCluster,
    mode: str,
    upstream: RegistryProcess,
    puller: str = "ctr",
    agent_settings: Mapping[str, Any] | None = None,
) -> list[NodeStack]:
    """Fresh stacks on every node of ``net`` for ``mode``, started side by side (all closed
    again if one fails). ``puller``: ``ctr`` or ``cri`` (see the module's doc)."""
    if puller not in PULLERS:
        raise ValueError(f"unknown puller {puller!r}: {' or '.join(PULLERS)}")
    agent_urls = {n.name: f"http://{n.lan_addr}:{AGENT_PORT}" for n in net.nodes}
    token = secrets.token_hex(16) if mode == WARMSTART else None
    with ThreadPoolExecutor(len(net.nodes)) as pool:
        futures = [
            pool.submit(
                _start_stack,
                net,
                node,
                mode,
                upstream,
                agent_urls,
                token,
                puller,
                agent_settings or {},
            )
            for node in net.nodes
        ]
        wait(futures)
    stacks = [f.result() for f in futures if f.exception() is None]
    failed = [e for f in futures if (e := f.exception()) is not None]
    if failed:
        close_nodes(stacks)
        raise failed[0]
    return stacks


def close_nodes(stacks: list[NodeStack]) -> None:
    if not stacks:
        return
    with ThreadPoolExecutor(len(stacks)) as pool:
        list(pool.map(NodeStack.close, stacks))


@dataclass(frozen=True)
class StartTiming:
    """One replica start, phase by phase (seconds)."""

    pull_s: float
    unpack_s: float
    start_s: float
    load_s: float
    first_answer_s: float
    total_s: float
    # The model's whole fetch (None: no model): beside the pull through the node's agent, or
    # the replica's own download once its container runs (then not part of load_s).
    model_s: float | None = None
    model_phase_s: float | None = None  # the part of it the pull and unpack did not hide
    model_materialise_s: float | None = None  # the agent's materialisation (links) within it
    model_agent: dict[str, Any] | None = None  # the agent's answer (POST /prewarm), as JSON


async def _wait_ping(
    session: aiohttp.ClientSession, url: str, deadline: float
) -> dict[str, object]:
    """``/ping``'s JSON once it answers 200; ``ReplicaError`` at once if the replica says its
    load failed (a model download that broke), ``TimeoutError`` after ``deadline``."""
    while True:
        try:
            async with session.get(url + "/ping") as resp:
                body = await resp.read()
                if resp.status == 200:
                    answer = json.loads(body or b"{}")
                    return answer if isinstance(answer, dict) else {}
                if resp.status == 503 and b'"failed"' in body:
                    raise ReplicaError(f"{url} failed to load: {json.loads(body).get('error')}")
        except (aiohttp.ClientError, TimeoutError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}/ping did not answer 200 in time")
        await asyncio.sleep(0.05)


async def start_replica(
    stack: NodeStack,
    image: str,
    replica_id: str,
    env: dict[str, str],
    model: BenchModel | None = None,
) -> tuple[StartTiming, Replica]:
    """Pull, create, start, wait for ``/ping`` 200, answer one request; timed per phase.

    With ``model``: on a node with an agent, the agent materialises and pins it while the image
    is pulled (the controller's path) and the replica mounts it; elsewhere the replica
    downloads it itself before it loads. The replica keeps running: the caller stops it
    (:func:`stop_replica`, with the same ``model``)."""
    runtime = stack.runtime()
    url = f"http://{stack.node.lan_addr}:{REPLICA_PORT}"
    timeout = aiohttp.ClientTimeout(total=10)
    via_agent = model is not None and stack.agent is not None
    if model is not None and not via_agent:
        env = {**env, **download_env(model)}

    async def pull() -> tuple[PullTiming, float]:
        if stack.puller == "cri":
            pulled = await asyncio.to_thread(cri_pull, stack, image)
        else:
            pulled = await runtime.pull(image)
        return pulled, time.monotonic()

    async with aiohttp.ClientSession(timeout=timeout) as session:
        t0 = time.monotonic()
        fetched: AgentModel | None = None
        if via_agent:
            assert model is not None and stack.agent is not None
            (pulled, t1), fetched = await asyncio.gather(
                pull(), agent_model(stack.agent.url, stack.peer_token, model)
            )
        else:
            pulled, t1 = await pull()
        t_model = t0 + fetched.seconds if fetched is not None else t1
        t_create = max(t1, t_model)
        mounts = (model_mount(fetched.path),) if fetched is not None else ()
        spec = ReplicaSpec(id=replica_id, image=image, port=REPLICA_PORT, env=env, mounts=mounts)
        replica = await runtime.start(await runtime.create(spec, pull=pulled))
        t2 = time.monotonic()
        ping = await _wait_ping(session, url, t0 + READY_TIMEOUT)
        t3 = time.monotonic()
        async with session.post(url + "/invocations", json=FIRST_REQUEST) as resp:
            await resp.read()
            if resp.status != 200:
                raise ReplicaError(f"the first request answered HTTP {resp.status}")
        t4 = time.monotonic()
    unpack = min(pulled.unpack_seconds, t1 - t0)
    load = t3 - t2
    model_s = phase = materialise = None
    answer = None
    if fetched is not None:
        model_s, phase, materialise = fetched.seconds, t_create - t1, fetched.materialise_s
        answer = fetched.answer.model_dump(mode="json")
    elif model is not None:
        download = ping.get("download")
        if not isinstance(download, dict):
            raise ReplicaError(f"{url} reported no model download: {ping}")
        model_s = phase = min(float(download["seconds"]), load)
        load -= model_s
    timing = StartTiming(
        t1 - t0 - unpack, unpack, t2 - t_create, load, t4 - t3, t4 - t0,
        model_s=model_s, model_phase_s=phase, model_materialise_s=materialise,
        model_agent=answer,
    )  # fmt: skip
    return timing, replica


async def stop_replica(stack: NodeStack, replica: Replica, model: BenchModel | None = None) -> None:
    runtime = stack.runtime()
    await runtime.stop(replica, grace=5)
    await runtime.delete(replica)
    if model is not None and stack.agent is not None:
        await agent_unpin(stack.agent.url, stack.peer_token, model)


def cri_pull(stack: NodeStack, image: str) -> PullTiming:
    """``PullImage`` of ``image`` on ``stack``'s containerd, timed: fetch + unpack as the pull
    (unpack 0: CRI does not split them)."""
    if stack.certs_dir is None:
        raise ValueError(f"{stack.name}: its containerd runs no CRI plugin (puller ctr)")
    name = str(Reference.parse(image))
    if stack.agent is None:  # an agent wrote its own at start
        registry = Reference.parse(name).registry
        write_hosts_dir(stack.certs_dir, [stack.runtime().hosts_file(registry)])
    cri = stack.cri()
    started = time.monotonic()
    image_id = cri.pull_image(name)
    total = time.monotonic() - started
    return PullTiming(name, image_id, total, 0.0, total)
