"""The fan-out scenarios of ``warmstart bench scaleout``: every node wants the same image at once.

- ``fanout``: every node starts a replica (containerd pulls and unpacks the image, through its
  agent in warmstart mode, from the upstream in baseline mode);
- ``fanout-fetch``: every node only fetches the image's blobs, no containerd: warmstart nodes
  run just their agent, pre-warmed warm at once (``POST /prewarm``: every blob verified in the
  agent's store, the product's defaults, pieces between peers); baseline nodes copy the image
  from the upstream with ``skopeo copy`` (digests verified, layers kept as they are). The
  network side of a fan-out without N unpacks sharing the machine's cores.

Both record, per node, when it held every byte and what crossed its shaped links meanwhile
(:class:`~warmstart_harness.bench.scaleout_types.NodeTransfer`): what it received from the upstream and
over the LAN, and what it sent to its peers.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from warmstart_harness.bench.agent import upstream_blob_bytes
from warmstart_harness.bench.scaleout_model import BenchModel
from warmstart_harness.bench.scaleout_nodes import (
    AGENT_PORT,
    NodeStack,
    start_replica,
    stop_replica,
)
from warmstart_harness.bench.scaleout_scenarios import run_id
from warmstart_harness.bench.scaleout_types import (
    BASELINE,
    FANOUT,
    FANOUT_FETCH,
    WARMSTART,
    FanoutResult,
    NodeTransfer,
)
from warmstart_harness.testbed.agent import AgentProcess
from warmstart_harness.testbed.netcluster import NetCluster, NetNode
from warmstart_harness.testbed.netns import link_bytes_delta, nsenter_prefix
from warmstart_harness.testbed.registry import RegistryProcess

Log = Callable[[str], None]
LinkCounter = Callable[[], dict[str, dict[str, int]]]
FETCH_MODES = (BASELINE, WARMSTART)  # the modes fanout-fetch runs (others: skipped)
FETCH_TIMEOUT_S = 1800.0


def node_transfers(
    names: Sequence[str],
    done_s: Sequence[float],
    before: dict[str, dict[str, int]],
    after: dict[str, dict[str, int]],
) -> tuple[NodeTransfer, ...]:
    """One :class:`NodeTransfer` per node from its finish time and two link readings."""
    delta = link_bytes_delta(before, after)
    return tuple(
        NodeTransfer(
            node=name,
            done_s=round(done, 3),
            upstream_rx=delta.get(name, {}).get("upstream_rx", 0),
            lan_rx=delta.get(name, {}).get("lan_rx", 0),
            lan_tx=delta.get(name, {}).get("lan_tx", 0),
        )
        for name, done in zip(names, done_s, strict=True)
    )


def machine_busy_s() -> float:
    """CPU seconds every core of the machine has been busy since boot (``/proc/stat``)."""
    with open("/proc/stat", encoding="ascii") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) process ``pid`` has used; 0 once it is gone."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _log_result(result: FanoutResult, log: Log) -> None:
    total = result.image_bytes + result.model_bytes
    what = "the image" + (" and model" if result.model_bytes else "")
    sent = max((n.lan_tx for n in result.per_node), default=0)
    log(
        f"  {result.mode} {result.scenario} x{result.nodes}: {result.wall_s:.1f} s (all bytes "
        f"on every node after {result.fetch_s or 0:.1f} s), upstream "
        f"{result.upstream_bytes / 2**20:.0f} MiB ({result.upstream_bytes / total:.2f}x {what}),"
        f" largest upload of a node {sent / total:.2f}x"
    )
    if result.machine_busy_s is not None:
        agents = f", agents {result.agents_cpu_s:.0f}" if result.agents_cpu_s is not None else ""
        log(
            f"  CPU seconds: machine busy {result.machine_busy_s:.0f} of "
            f"{os.cpu_count() or 1} x {result.wall_s:.0f}{agents}"
        )


async def run_fanout(
    stacks: list[NodeStack],
    mode: str,
    image: str,
    image_bytes: int,
    env: dict[str, str],
    upstream: RegistryProcess,
    log: Log,
    model: BenchModel | None = None,
    links: LinkCounter | None = None,
) -> FanoutResult:
    """Every node starts a replica of ``image`` at once (``fanout``)."""
    mark = upstream.mark()
    before = await asyncio.to_thread(links) if links is not None else {}
    started = time.monotonic()
    suffix = run_id()
    outcomes = await asyncio.gather(
        *(start_replica(s, image, f"fan{i}-{suffix}", env, model) for i, s in enumerate(stacks)),
        return_exceptions=True,
    )
    wall = time.monotonic() - started
    after = await asyncio.to_thread(links) if links is not None else {}
    done: list[float] = []
    for stack, outcome in zip(stacks, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            raise RuntimeError(f"fanout on {stack.name} failed: {outcome}")
        done.append(outcome[0].pull_s)  # every node's pull began at ``started``
    for stack, outcome in zip(stacks, outcomes, strict=True):
        assert not isinstance(outcome, BaseException)
        await stop_replica(stack, outcome[1], model)
    sent = upstream_blob_bytes(upstream.requests(since=mark))
    result = FanoutResult(
        mode=mode,
        nodes=len(stacks),
        wall_s=wall,
        upstream_bytes=sent,
        image_bytes=image_bytes,
        fetch_s=max(done),
        model_bytes=model.bytes if model is not None else 0,
        scenario=FANOUT,
        per_node=node_transfers([s.name for s in stacks], done, before, after) if links else (),
    )
    _log_result(result, log)
    return result


# -- fetch only ---------------------------------------------------------------------------------


def _start_agents(
    net: NetCluster, upstream: RegistryProcess, work: Path, settings: Mapping[str, Any]
) -> list[AgentProcess]:
    """One agent a node, the product's defaults (as the startup's warmstart nodes, without a
    containerd to hand blobs to), peers = every other node, one peer token."""
    urls = {n.name: f"http://{n.lan_addr}:{AGENT_PORT}" for n in net.nodes}
    token = secrets.token_hex(16)

    def start(node: NetNode) -> AgentProcess:
        return net.track(
            AgentProcess(
                work / f"agent-{node.name}",
                upstreams={upstream.host: upstream.url},
                peers=[u for name, u in urls.items() if name != node.name],
                port=AGENT_PORT,
                netns=node.netns,
                listen_host=node.lan_addr,
                settings={"node_id": node.name, "peer_token": token, **settings},
            )
        )

    agents: list[AgentProcess] = []
    try:
        for node in net.nodes:
            agents.append(start(node))
    except BaseException:
        for agent in agents:
            agent.stop()
        raise
    return agents


def _agent_fetch(agent: AgentProcess, image: str, started: float) -> float:
    status, body = agent.post_json(
        "/prewarm", {"reference": image, "hot": False}, timeout=FETCH_TIMEOUT_S
    )
    if status != 200:
        raise RuntimeError(f"pre-warm answered {status}: {str(body)[:300]}")
    return time.monotonic() - started


def _skopeo_fetch(
    node: NetNode, image: str, upstream: RegistryProcess, dest: Path, started: float
) -> float:
    cmd = [
        *nsenter_prefix(node.netns),
        "skopeo", "copy", "--quiet", "--src-tls-verify=false", "--preserve-digests",
        "--dest-oci-accept-uncompressed-layers", f"docker://{image}", f"oci:{dest}:fetched",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"skopeo copy failed: {proc.stderr.strip()[-300:]}")
    return time.monotonic() - started


async def run_fanout_fetch(
    net: NetCluster,
    mode: str,
    image: str,
    image_bytes: int,
    upstream: RegistryProcess,
    work_dir: Path,
    log: Log,
    agent_settings: Mapping[str, Any] | None = None,
) -> FanoutResult:
    """Every node fetches ``image``'s blobs at once, no containerd (``fanout-fetch``); the
    agents' logs stay under ``work_dir``."""
    if mode not in FETCH_MODES:
        raise ValueError(f"fanout-fetch runs {' and '.join(FETCH_MODES)}, not {mode!r}")
    work = work_dir / f"fanout-fetch-{mode}"
    work.mkdir(parents=True, exist_ok=True)
    agents: list[AgentProcess] = []
    try:
        if mode == WARMSTART:
            agents = await asyncio.to_thread(
                _start_agents, net, upstream, work, agent_settings or {}
            )
        mark = upstream.mark()
        before = await asyncio.to_thread(net.link_bytes)
        cpu0 = [process_cpu_s(a.pid) for a in agents]
        busy0 = machine_busy_s()
        started = time.monotonic()
        if mode == WARMSTART:
            jobs = [asyncio.to_thread(_agent_fetch, a, image, started) for a in agents]
        else:
            jobs = [
                asyncio.to_thread(_skopeo_fetch, node, image, upstream, work / node.name, started)
                for node in net.nodes
            ]
        outcomes = await asyncio.gather(*jobs, return_exceptions=True)
        wall = time.monotonic() - started
        busy = machine_busy_s() - busy0
        agents_cpu = sum(process_cpu_s(a.pid) for a in agents) - sum(cpu0)
        after = await asyncio.to_thread(net.link_bytes)
        for node, outcome in zip(net.nodes, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                raise RuntimeError(f"fanout-fetch on {node.name} failed: {outcome}")
        done = [float(t) for t in outcomes if not isinstance(t, BaseException)]
        sent = upstream_blob_bytes(upstream.requests(since=mark))
    finally:
        for agent in agents:
            await asyncio.to_thread(agent.stop)
        # the fetched bytes go; the agents' logs stay in the run's work dir (--workdir)
        for fetched in [*(a.store for a in agents), *(work / n.name for n in net.nodes)]:
            await asyncio.to_thread(shutil.rmtree, fetched, True)
    result = FanoutResult(
        mode=mode,
        nodes=len(net.nodes),
        wall_s=wall,
        upstream_bytes=sent,
        image_bytes=image_bytes,
        fetch_s=max(done),
        scenario=FANOUT_FETCH,
        per_node=node_transfers([n.name for n in net.nodes], done, before, after),
        machine_busy_s=round(busy, 1),
        agents_cpu_s=round(agents_cpu, 1) if agents else None,
    )
    _log_result(result, log)
    return result
