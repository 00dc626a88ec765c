"""The scenarios of ``warmstart bench scaleout`` on one mode's nodes: startup (per tier) and
spike (the fan-outs: :mod:`warmstart_harness.bench.scaleout_fanout`)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from warmstart.agent.api import PrewarmRequest, PrewarmResponse
from warmstart.serving.router import RouterConfig
from warmstart.serving.serve import EndpointService, ServeOptions
from warmstart.serving.spec import build_spec
from warmstart_harness.bench.agent import upstream_blob_bytes
from warmstart_harness.bench.loadgen import LoadgenConfig, replay
from warmstart_harness.bench.scaleout_config import ScaleoutConfig
from warmstart_harness.bench.scaleout_model import BenchModel, agent_client, download_env
from warmstart_harness.bench.scaleout_nodes import (
    NodeStack,
    start_replica,
    stop_replica,
)
from warmstart_harness.bench.scaleout_types import (
    BASELINE,
    IMAGE_CACHED,
    PROVISIONED,
    REGISTRY_PROXY,
    WARMSTART,
    EndpointLoad,
    PrewarmResult,
    SpikeResult,
    StartupResult,
)
from warmstart_harness.bench.spike_metrics import offered_demand, spike_metrics
from warmstart_harness.bench.spike_plan import DEMAND_SMOOTHING_S, SpikePlan, smooth
from warmstart_harness.model_server.config import BenchCosts
from warmstart_harness.testbed.net import free_port
from warmstart_harness.testbed.netns import link_bytes_delta
from warmstart_harness.testbed.registry import RegistryProcess

Log = Callable[[str], None]
LinkCounter = Callable[[], dict[str, dict[str, int]]]

# -- scenarios --------------------------------------------------------------------------------


def run_id() -> str:
    """A suffix that keeps this run's container ids its own: every containerd on the machine
    shares runc's state directory (``/run/containerd/runc/<namespace>/<id>``), so a scale-out
    benchmark running beside another would otherwise create, kill and delete the other's
    replicas (``ws-node0-bench-1``, ``wsb0-cold``)."""
    return secrets.token_hex(3)


def bench_env(config: ScaleoutConfig, time_scale: float) -> dict[str, str]:
    return {
        "WARMSTART_BENCH_MODE": "1",
        "MAX_CONCURRENCY": str(config.slots),
        "WARMSTART_BENCH_TIME_SCALE": f"{time_scale:.6g}",
    }


async def _prewarm_hot(stack: NodeStack, image: str) -> dict[str, Any]:
    assert stack.agent is not None
    code, body = await asyncio.to_thread(stack.agent.prewarm, image, hot=True)
    if code != 200:
        raise RuntimeError(f"prewarm --hot on {stack.name} answered {code}: {body}")
    return dict(body)


async def _timed_prewarm(
    stack: NodeStack, image: str, upstream: RegistryProcess, mode: str, tier: str, log: Log
) -> PrewarmResult:
    """A hot pre-warm of ``stack`` whose agent and containerd hold what ``tier`` says."""
    mark = upstream.mark()
    started = time.monotonic()
    body = await _prewarm_hot(stack, image)
    total = time.monotonic() - started
    sent = upstream_blob_bytes(upstream.requests(since=mark))
    imported = body.get("containerd") or {}
    link = imported.get("link") or {}
    result = PrewarmResult(
        mode,
        tier,
        fetch_s=float(body.get("warm_seconds", 0.0)),
        link_s=float(link.get("seconds", 0.0)),
        import_s=float(imported.get("pull_seconds", 0.0)),
        unpack_s=float(imported.get("unpack_seconds") or 0.0),
        total_s=total,
        upstream_bytes=sent,
        linked=int(link.get("linked", 0)),
    )
    log(
        f"  {mode} hot pre-warm from {tier} on {stack.name}: {total:.1f} s (fetch "
        f"{result.fetch_s:.1f}, link {result.link_s:.2f}, import {result.import_s:.1f} of which "
        f"unpack {result.unpack_s:.1f}); {result.linked} blobs linked; upstream "
        f"{sent / 2**20:.0f} MiB"
    )
    return result


async def _timed_start(
    stack: NodeStack,
    image: str,
    rid: str,
    env: dict[str, str],
    upstream: RegistryProcess,
    mode: str,
    tier: str,
    log: Log,
    links: LinkCounter | None = None,
    cluster: list[NodeStack] | None = None,
    model: BenchModel | None = None,
    since: int | None = None,
) -> StartupResult:
    """``since``: count the upstream's bytes from this mark (what got the node to its tier
    too), not from the start's own beginning. ``cluster``: report what every node held before
    the start."""
    held = (
        {s.name: await asyncio.to_thread(s.held_bytes) for s in cluster}
        if cluster is not None
        else None
    )
    if held is not None:
        log(
            f"  {mode} {tier} on {stack.name}: held before: "
            + ", ".join(f"{name} {n / 2**20:.0f} MiB" for name, n in held.items())
        )
    mark = upstream.mark() if since is None else since
    before = await asyncio.to_thread(links) if links is not None else None
    timing, replica = await start_replica(stack, image, rid, env, model)
    crossed = None
    if links is not None and before is not None:
        crossed = link_bytes_delta(before, await asyncio.to_thread(links))
    await stop_replica(stack, replica, model)
    requests = upstream.requests(since=mark)
    sent = upstream_blob_bytes(requests)
    sent_model = model.upstream_bytes(requests) if model is not None else 0
    fetched = ""
    if timing.model_s is not None:
        how = "download" if timing.model_materialise_s is None else "agent"
        fetched = f", model {timing.model_s:.1f} ({how}"
        if timing.model_materialise_s is not None:
            fetched += f", materialised in {timing.model_materialise_s:.2f}"
        fetched += f"; adds {timing.model_phase_s or 0:.1f})"
    log(
        f"  {mode} {tier} on {stack.name}: {timing.total_s:.1f} s (pull {timing.pull_s:.1f}, "
        f"unpack {timing.unpack_s:.1f}{fetched}, start {timing.start_s:.2f}, "
        f"load {timing.load_s:.1f}); upstream {sent / 2**20:.0f} MiB"
        + (f" (model {sent_model / 2**20:.0f} MiB)" if model is not None else "")
    )
    if crossed is not None:
        log("    bytes on links: " + "; ".join(
            f"{node} upstream {c['upstream_rx'] / 2**20:.0f} MiB, LAN in "
            f"{c['lan_rx'] / 2**20:.0f} MiB, out {c['lan_tx'] / 2**20:.0f} MiB"
            for node, c in sorted(crossed.items())
        ))  # fmt: skip
    return StartupResult(
        mode, tier, timing.pull_s, timing.unpack_s, timing.start_s,
        timing.load_s + timing.first_answer_s, timing.total_s, sent, crossed,
        model_s=timing.model_s, model_phase_s=timing.model_phase_s,
        model_materialise_s=timing.model_materialise_s, upstream_model_bytes=sent_model,
        model_agent=timing.model_agent, node=stack.name, held=held,
    )  # fmt: skip


async def _prewarm_warm(stack: NodeStack, image: str, model: BenchModel | None) -> None:
    """This node's agent fetches the image's (and the model's) blobs into its store, from
    peers where they are: no containerd import, no materialisation (the warm tier)."""
    assert stack.agent is not None
    code, body = await asyncio.to_thread(stack.agent.prewarm, image)
    if code != 200:
        raise RuntimeError(f"prewarm on {stack.name} answered {code}: {body}")
    if model is not None:
        async with agent_client(stack.agent.url, stack.peer_token) as agent:
            await agent.prewarm(PrewarmRequest.of(model.reference, model=True))


async def _timed_model_prewarm(
    stack: NodeStack, model: BenchModel, upstream: RegistryProcess, tier: str, log: Log
) -> PrewarmResult:
    """A hot model pre-warm (``{"model": true, "hot": true}``) of ``stack`` from ``tier``."""
    assert stack.agent is not None
    mark = upstream.mark()
    started = time.monotonic()
    async with agent_client(stack.agent.url, stack.peer_token) as agent:
        answer = await agent.prewarm(PrewarmRequest.of(model.reference, model=True, hot=True))
    total = time.monotonic() - started
    return _model_prewarm_result(
        answer, tier, total, model.upstream_bytes(upstream.requests(since=mark)), stack.name, log
    )


def _model_prewarm_result(
    answer: PrewarmResponse, tier: str, total: float, upstream_bytes: int, node: str, log: Log
) -> PrewarmResult:
    made = answer.model
    result = PrewarmResult(
        WARMSTART,
        tier,
        fetch_s=float(answer.warm_seconds),
        link_s=float(made.seconds) if made else 0.0,
        import_s=0.0,
        unpack_s=0.0,
        total_s=total,
        upstream_bytes=upstream_bytes,
        linked=int(made.files) if made else 0,
        kind="model",
        linked_bytes=int(made.linked_bytes) if made else 0,
    )
    log(
        f"  {WARMSTART} model pre-warm from {tier} on {node}: {total:.2f} s (fetch "
        f"{result.fetch_s:.2f}, materialise {result.link_s:.3f}: {result.linked} files, "
        f"{result.linked_bytes / 2**20:.0f} MiB linked); upstream {upstream_bytes / 2**20:.0f} MiB"
    )
    return result


async def run_startup(
    stacks: list[NodeStack],
    mode: str,
    image: str,
    env: dict[str, str],
    upstream: RegistryProcess,
    log: Log,
    prewarms: list[PrewarmResult],
    links: LinkCounter | None = None,
    model: BenchModel | None = None,
) -> list[StartupResult]:
    """Each tier the mode has, on fresh containerd state where the tier says so; in warmstart
    mode also the hot pre-warm from each tier (into ``prewarms``), of the model too.

    cold: nothing anywhere (the first node). With a model, image-cached (baseline,
    registry-proxy): the first node again, its containerd still holding the image, its replica
    downloading the model again. warm: this node's mirror holds the image (registry-proxy: the
    first node, containerd emptied; warmstart: the second node, its agent pre-warmed without
    --hot, so the model is not materialised either). peer (warmstart): the second node with an
    emptied agent and containerd, the first's agent holding everything. hot: pre-warmed --hot
    ahead (the image unpacked, the model materialised), timed apart."""
    first = stacks[0]
    second = stacks[1] if len(stacks) > 1 else None

    async def start(
        stack: NodeStack, tier: str, counter: LinkCounter | None = None, since: int | None = None
    ) -> StartupResult:
        rid = f"{tier}-{run_id()}"
        return await _timed_start(
            stack, image, rid, env, upstream, mode, tier, log, counter,
            cluster=stacks, model=model, since=since,
        )  # fmt: skip

    results = [await start(first, "cold", links)]
    if model is not None and mode in (BASELINE, REGISTRY_PROXY):
        results.append(await start(first, IMAGE_CACHED))
    if mode == REGISTRY_PROXY:
        await asyncio.to_thread(first.reset_containerd)
        results.append(await start(first, "warm"))
    if mode == WARMSTART and second is not None:
        # (the upstream bytes of this pre-warm count with the warm start's: it is how the node
        # got warm)
        mark = upstream.mark()
        await _prewarm_warm(second, image, model)
        warm = await start(second, "warm", since=mark)
        results.append(warm)
        if warm.model_agent is not None:
            # The warm start's model request is a hot model pre-warm from warm (its blobs were
            # in this node's store): its materialisation is the model's warm -> hot.
            prewarms.append(
                _model_prewarm_result(
                    PrewarmResponse.model_validate(warm.model_agent), "warm",
                    warm.model_s or 0.0, warm.upstream_model_bytes, second.name, log,
                )
            )  # fmt: skip
        # peer: another node's agent holds it; this node holds nothing (its store emptied:
        # never the home of a blob it fetched for the cluster in the cold start, which would
        # be a warm start under the peer label); each row reports what every node held.
        await asyncio.to_thread(second.reset_containerd)
        await asyncio.to_thread(second.reset_agent_store)
        results.append(await start(second, "peer"))
        await asyncio.to_thread(second.reset_containerd)
        prewarms.append(await _timed_prewarm(second, image, upstream, mode, "warm", log))
        results.append(await start(second, "hot"))
        # What the hot pre-warm itself costs when this node's agent has nothing (peer), and
        # when no agent has anything (cold); the model's after the image's.
        await asyncio.to_thread(second.reset_containerd)
        await asyncio.to_thread(second.reset_agent_store)
        prewarms.append(await _timed_prewarm(second, image, upstream, mode, "peer", log))
        if model is not None:
            prewarms.append(await _timed_model_prewarm(second, model, upstream, "peer", log))
        await asyncio.to_thread(second.reset_containerd)
        for stack in stacks:
            await asyncio.to_thread(stack.reset_agent_store)
        prewarms.append(await _timed_prewarm(second, image, upstream, mode, "cold", log))
        if model is not None:
            prewarms.append(await _timed_model_prewarm(second, model, upstream, "cold", log))
    return results


async def run_spike(
    stacks: list[NodeStack],
    mode: str,
    image: str,
    plan: SpikePlan,
    config: ScaleoutConfig,
    upstream: RegistryProcess,
    work_dir: Path,
    log: Log,
    prewarm_spare: int | None = None,
    label: str | None = None,
    model: BenchModel | None = None,
    links: LinkCounter | None = None,
) -> SpikeResult:
    """``prewarm_spare``: the spec's setting (None: the product's default, or the config's).

    The endpoint runs one replica when the replay starts, and scales; in ``provisioned`` mode
    it runs ``max_replicas`` (one per node) from before the replay on (``min_replicas`` =
    ``max_replicas``: it never scales). With ``model``: in warmstart mode it is the endpoint's
    ``model`` (the product's path: the agents fetch, materialise and mount it, and pre-warm it
    ahead); in the other modes every replica downloads it itself at start. The upstream's
    bytes (and the links', with ``links``) are counted from before the endpoint opens."""
    spare = prewarm_spare if prewarm_spare is not None else config.prewarm_spare
    floor = len(stacks) if mode == PROVISIONED else 1
    env = bench_env(config, plan.time_scale)
    if model is not None and mode != WARMSTART:
        env.update(download_env(model))
    settings: dict[str, Any] = {
        "name": f"bench-{run_id()}",
        "image": image,
        "min_replicas": floor,
        "max_replicas": len(stacks),
        "target_concurrency": float(config.slots),
        # The trace is time-compressed: the autoscaler's windows are the endpoint's own.
        "stable_window": 20.0,
        "panic_window": 4.0,
        "scale_down_delay": 600.0,
        "replica_concurrency": config.slots,
        "replica_start_timeout": 900.0,
        "env": env,
    }
    if model is not None and mode == WARMSTART:
        settings["model"] = model.reference
    if spare is not None:  # otherwise the pre-warm policy is the product's default
        settings["prewarm_spare"] = spare
    spec = build_spec(settings)
    label = label or mode
    options = ServeOptions(
        spec=spec,
        nodes=[s.node_option(1) for s in stacks],
        work_dir=work_dir,
        namespace=stacks[0].namespace,  # the CRI's k8s.io with --puller cri
        insecure_registries=frozenset({upstream.host}),
        router=RouterConfig(queue_size=100_000, queue_timeout=600.0),
        interval=0.5,
        prewarm=True,
        agent_api=mode == WARMSTART,
        peer_token=stacks[0].peer_token,
    )
    mark = upstream.mark()
    links_before = await asyncio.to_thread(links) if links is not None else None
    service = EndpointService(options)
    controller = await service.open()
    runner = web.AppRunner(service.app(), handle_signals=False, access_log=None)
    await runner.setup()
    port = free_port()
    stop = asyncio.Event()
    loop_task: asyncio.Task[None] | None = None
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        loop_task = asyncio.create_task(controller.run(stop, options.interval))
        started = time.monotonic()
        while sum(r.state == "ready" for r in controller.replicas.values()) < floor:
            if time.monotonic() > started + 900:
                raise RuntimeError(f"{mode}: {floor} replica(s) did not become ready")
            await asyncio.sleep(0.2)
        if floor > 1:
            log(f"  {label}: {floor} replicas ready in {time.monotonic() - started:.0f} s")
        await asyncio.sleep(1.0)  # let the tiers settle (the first pull fed the peers)
        wanted = config.spare_nodes(spare)
        if options.prewarm and options.agent_api and wanted > 0:
            # The endpoint runs a while before the surge: the spare nodes get pre-warmed.
            t_prewarm = time.monotonic()
            while time.monotonic() < t_prewarm + 900:
                done = [e for e in controller.events if e.kind in ("prewarm", "prewarm-failed")]
                if len(done) >= wanted and not controller.prewarms_in_flight:
                    break
                await asyncio.sleep(0.5)
            log(
                f"  {label}: {wanted} spare node(s) pre-warmed in "
                f"{time.monotonic() - t_prewarm:.0f} s"
            )

        async def status() -> EndpointLoad:
            snap = service.router.snapshot()
            states = [r.state for r in controller.replicas.values()]
            return EndpointLoad(
                ready=states.count("ready"),
                starting=states.count("starting"),
                queue_length=snap.queue_length,
                in_flight=snap.in_flight,
                stopping=states.count("stopping"),
            )

        log(f"  {label} spike: replaying {len(plan.requests)} requests")
        replayed = await replay(
            f"http://127.0.0.1:{port}",
            plan.requests,
            LoadgenConfig(timeout_s=900.0),
            status,
            tail_s=1.0,
        )
    finally:
        stop.set()
        if loop_task is not None:
            with contextlib.suppress(Exception):
                await loop_task
        await service.close()
        await runner.cleanup()
    requests = upstream.requests(since=mark)
    sent = upstream_blob_bytes(requests)
    sent_model = model.upstream_bytes(requests) if model is not None else None
    crossed = None
    if links is not None and links_before is not None:
        crossed = link_bytes_delta(links_before, await asyncio.to_thread(links))
    costs = BenchCosts(time_scale=plan.time_scale)
    demand = offered_demand(replayed.records, costs.service_seconds)
    metrics = spike_metrics(
        replayed.records,
        replayed.timeline,
        smooth(demand, DEMAND_SMOOTHING_S),
        slots_per_replica=config.slots,
        burst_start_s=plan.burst_start_s,
        hold_s=config.hold_s,
        until_s=plan.burst_end_s,
    )
    ttc = metrics.time_to_capacity_s
    log(
        f"  {label} spike: P50 {metrics.p50_s or 0:.2f} s, P99 {metrics.p99_s or 0:.2f} s, "
        f"lost {metrics.lost}, time to capacity "
        f"{'never' if ttc is None else f'{ttc:.1f} s'}; upstream {sent / 2**20:.0f} MiB"
        + (f" (model {sent_model / 2**20:.0f} MiB)" if sent_model is not None else "")
    )
    events = [f"{e.kind}: {e.message}" for e in controller.events]
    log("    " + "\n    ".join(e for e in events if not e.startswith("stopped")))
    return SpikeResult(
        label, replayed.records, replayed.timeline, metrics, demand, sent, sent_model, crossed
    )
