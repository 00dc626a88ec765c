"""``warmstart bench scaleout``: the cluster in a box, three ways to pull, three scenarios.

Testbed (:class:`~warmstart.testbed.netcluster.NetCluster`): the upstream ``docker-registry`` in
its own network namespace; N nodes, each a namespace with its own containerd (and, by mode, its
mirror), whose downloads from the upstream are shaped (``tbf``, default 100 MB/s per node); the
nodes share an unshaped LAN; the controller, router and load generator run in the root
namespace. The image is the example model image with an incompressible padding layer standing
in for the weights of a large model (default 2 GiB).

Modes (:mod:`warmstart.bench.scaleout_nodes`): ``baseline`` (containerd pulls straight from the
upstream), ``registry-proxy`` (a docker-registry pull-through cache per node), ``warmstart``
(agents, peers, pre-warm ahead, cache-aware placement). The same autoscaler and trace run in
every mode.

Scenarios:

- ``startup``: one replica, start -> first request answered, split into pull, unpack, start and
  model load, from each tier the mode has (baseline: cold; registry-proxy: cold, warm;
  warmstart: cold, peer, warm, hot);
- ``fanout``: every node starts the same image at once: wall time, bytes from the upstream;
- ``spike``: the endpoint sits at one replica under a lead-in of trace traffic, then the trace's
  busiest stretch arrives time-compressed; latency percentiles, losses, time to capacity, the
  replica timeline. Replicas run the model server's bench mode: each serves at most K requests
  at once with a service time from the request's token counts (an 8B model on one GPU), while
  its start still pulls, unpacks and reads every weight byte for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from warmstart.bench.agent import upstream_blob_bytes
from warmstart.bench.loadgen import LoadgenConfig, replay
from warmstart.bench.scaleout_nodes import (
    NAMESPACE,
    NodeStack,
    close_nodes,
    start_nodes,
    start_replica,
    stop_replica,
)
from warmstart.bench.scaleout_report import environment_info, write_report
from warmstart.bench.scaleout_types import (
    MODES,
    REGISTRY_PROXY,
    WARMSTART,
    WARMSTART_SPARE0,
    DemandPoint,
    FanoutResult,
    PrewarmResult,
    ReplicaStatus,
    ScaleoutResults,
    SpikeResult,
    StartupResult,
)
from warmstart.bench.spike_metrics import offered_demand, spike_metrics
from warmstart.bench.trace import TraceRequest, busiest_window, compress, read_trace, select_window
from warmstart.image.build import DEFAULT_IMAGE_CACHE, BuildOptions, build_example
from warmstart.model_server.config import BenchCosts
from warmstart.serving.router import RouterConfig
from warmstart.serving.serve import EndpointService, ServeOptions
from warmstart.serving.spec import build_spec
from warmstart.testbed.layout import push_layout
from warmstart.testbed.net import free_port
from warmstart.testbed.netcluster import NetCluster, link_bytes_delta
from warmstart.testbed.registry import RegistryProcess

Log = Callable[[str], None]
LinkCounter = Callable[[], dict[str, dict[str, int]]]
SCENARIOS = ("startup", "fanout", "spike")
BUNDLED_TRACE = Path(__file__).resolve().parent / "traces" / "azure-llm-2023-conv.csv"
REPOSITORY = "warmstart/example-minilm"


@dataclass
class ScaleoutConfig:
    nodes: int = 4
    rate: str = "800mbit"  # each node's download from the upstream (100 MB/s)
    upstream_rate: str | None = None
    lan_rate: str | None = None
    padding_bytes: int = 2 << 30
    modes: tuple[str, ...] = MODES
    scenarios: tuple[str, ...] = SCENARIOS
    trace: Path | None = None
    factor: float = 4.0  # time compression of the burst
    burst_s: float = 60.0  # replayed seconds of the burst
    lead_s: float = 30.0  # replayed seconds of lead-in before it
    slots: int = 4  # K: requests one replica serves at once
    burst_load: float = 0.85  # burst demand as a share of all nodes' capacity
    lead_load: float = 0.7  # lead-in demand as a share of one replica's capacity
    hold_s: float = 5.0
    # The endpoint spec's prewarm_spare; None: the product's default (every node the endpoint
    # may scale to). The spike runs once more with 0 when ``spike_spare0`` is set.
    prewarm_spare: int | None = None
    spike_spare0: bool = True

    def spare_nodes(self, prewarm_spare: int | None = None) -> int:
        """Idle nodes the endpoint keeps hot before the surge (its first node runs it)."""
        spare = self.prewarm_spare if prewarm_spare is None else prewarm_spare
        return self.nodes - 1 if spare is None else min(spare, self.nodes - 1)

    image_cache: Path = DEFAULT_IMAGE_CACHE
    quick: bool = False

    @classmethod
    def quick_config(cls, **overrides: Any) -> ScaleoutConfig:
        # About 3 minutes on 2 cores: two nodes, a small padding layer, a short spike, and no
        # fanout (with two nodes it shows little that startup and spike do not).
        values: dict[str, Any] = {
            "nodes": 2,
            "padding_bytes": 64 << 20,
            "burst_s": 10.0,
            "lead_s": 5.0,
            "scenarios": ("startup", "spike"),
            "spike_spare0": False,
            "quick": True,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def default_trace() -> Path:
    """The Azure LLM conversation trace shipped with warmstart (CC-BY 4.0; see its README)."""
    path = BUNDLED_TRACE
    if not path.exists():
        raise FileNotFoundError(
            f"the bundled trace {path} is missing: give --trace PATH "
            "(a CSV with TIMESTAMP,ContextTokens,GeneratedTokens)"
        )
    return path


# -- the spike's load (pure) ------------------------------------------------------------------

# Time to capacity compares ready capacity with the offered load averaged over this long: the
# per-second load of a real trace jitters above its mean, and a replica is not added for that.
DEMAND_SMOOTHING_S = 10.0


def smooth(demand: Sequence[DemandPoint], window_s: float) -> list[DemandPoint]:
    """Trailing mean of a demand series over ``window_s`` (points keep their times)."""
    out: list[DemandPoint] = []
    total = 0.0
    start = 0
    for i, point in enumerate(demand):
        total += point.slots
        while demand[start].t_s <= point.t_s - window_s:
            total -= demand[start].slots
            start += 1
        out.append(DemandPoint(point.t_s, total / (i - start + 1)))
    return out


@dataclass(frozen=True)
class SpikePlan:
    requests: list[TraceRequest]
    burst_start_s: float
    burst_end_s: float
    time_scale: float  # service-time scale given to the replicas
    lead_factor: float
    burst_factor: float
    burst_slots: float  # offered load of the burst, in slots
    lead_slots: float
    trace_burst_start_s: float  # where the burst is in the trace

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("requests")
        out["requests"] = len(self.requests)
        return out


def _load(requests: Sequence[TraceRequest], seconds: float, costs: BenchCosts) -> float:
    """Offered load in slots (Erlangs) of ``requests`` spread over ``seconds`` at ``costs``."""
    work = sum(costs.service_seconds(r.input_tokens, r.output_tokens) for r in requests)
    return work / seconds if seconds > 0 else 0.0


def plan_spike(trace: Sequence[TraceRequest], config: ScaleoutConfig) -> SpikePlan:
    """The busiest stretch of the trace as the burst (compressed ``factor`` times) after a
    lead-in of the trace just before it, compressed so it loads one replica to ``lead_load``.
    The replicas' service-time scale is chosen so the burst offers ``burst_load`` of the whole
    cluster's capacity (``nodes`` replicas of ``slots``)."""
    burst_trace_s = config.burst_s * config.factor
    window = busiest_window(trace, burst_trace_s)
    burst = select_window(trace, window.start_s, burst_trace_s)
    unit = BenchCosts(time_scale=1.0)
    burst_slots = config.burst_load * config.nodes * config.slots
    time_scale = burst_slots / _load(burst, config.burst_s, unit)
    costs = BenchCosts(time_scale=time_scale)
    lead_slots = config.lead_load * config.slots
    # The lead-in: the trace before the burst, replayed slower so it loads one replica.
    lead_factor = config.factor

    def lead_at(factor: float) -> list[TraceRequest]:
        start = max(0.0, window.start_s - config.lead_s * factor)
        if window.start_s - start <= 0:
            return []  # the burst opens the trace: no lead-in traffic
        chosen = compress(select_window(trace, start, window.start_s - start), factor)
        gap = config.lead_s - (window.start_s - start) / factor  # > 0 if the trace is short
        return [TraceRequest(r.offset_s + gap, r.input_tokens, r.output_tokens) for r in chosen]

    lead = lead_at(lead_factor)
    for _ in range(40):  # solve load(lead_factor) = lead_slots; the load grows with the factor
        load = _load(lead, config.lead_s, costs)
        if load <= 0 or abs(lead_slots / load - 1) < 0.02:
            break
        lead_factor *= lead_slots / load
        lead = lead_at(lead_factor)
    shifted_burst = [
        TraceRequest(config.lead_s + r.offset_s, r.input_tokens, r.output_tokens)
        for r in compress(burst, config.factor)
    ]
    return SpikePlan(
        requests=lead + shifted_burst,
        burst_start_s=config.lead_s,
        burst_end_s=config.lead_s + config.burst_s,
        time_scale=time_scale,
        lead_factor=lead_factor,
        burst_factor=config.factor,
        burst_slots=burst_slots,
        lead_slots=_load(lead, config.lead_s, costs),
        trace_burst_start_s=window.start_s,
    )


# -- the image --------------------------------------------------------------------------------


def server_fingerprint() -> str:
    """8 hex digits of the model server's source (what the image's ``server`` layer holds)."""
    import hashlib

    import warmstart.model_server as pkg

    digest = hashlib.sha256()
    for path in sorted(Path(pkg.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:8]


def prepare_image(config: ScaleoutConfig, upstream: RegistryProcess, log: Log) -> tuple[str, int]:
    """Build (or reuse) the example image with the padding layer and push it upstream."""
    # The server's code is baked into the image: a changed server is a new image.
    tag = f"pad{config.padding_bytes >> 20}m-{server_fingerprint()}"
    layout = config.image_cache / f"bench-{tag}"
    marker = layout / "built.json"
    if marker.exists():
        log(f"image: reusing {layout}")
    else:
        log(f"image: building the example image with {config.padding_bytes >> 20} MiB padding")
        result = build_example(
            BuildOptions(
                cache=config.image_cache,
                tag=tag,
                padding_bytes=config.padding_bytes,
                layout=layout / "oci",
            ),
            log=lambda line: log(f"  {line}"),
        )
        info = {"layers": [layer.name for layer in result.layers]}
        marker.write_text(json.dumps(info))
    ref = f"{upstream.host}/{REPOSITORY}:{tag}"
    started = time.monotonic()
    push_layout(layout / "oci", tag, ref)
    log(f"image: pushed {ref} in {time.monotonic() - started:.1f} s")
    return ref, layout_blob_bytes(layout / "oci", tag)


def layout_blob_bytes(layout: Path, tag: str) -> int:
    """Bytes of the config and layer blobs of ``layout:tag`` (what a pull draws upstream)."""
    index = json.loads((layout / "index.json").read_text())
    for entry in index.get("manifests", []):
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            algo, _, hexd = entry["digest"].partition(":")
            manifest = json.loads((layout / "blobs" / algo / hexd).read_text())
            return int(manifest["config"]["size"]) + sum(
                int(layer["size"]) for layer in manifest["layers"]
            )
    raise FileNotFoundError(f"{layout} has no image tagged {tag}")


# -- scenarios --------------------------------------------------------------------------------


def _bench_env(config: ScaleoutConfig, time_scale: float) -> dict[str, str]:
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
) -> StartupResult:
    mark = upstream.mark()
    before = await asyncio.to_thread(links) if links is not None else None
    timing, replica = await start_replica(stack, image, rid, env)
    crossed = None
    if links is not None and before is not None:
        crossed = link_bytes_delta(before, await asyncio.to_thread(links))
    await stop_replica(stack, replica)
    sent = upstream_blob_bytes(upstream.requests(since=mark))
    log(
        f"  {mode} {tier} on {stack.name}: {timing.total_s:.1f} s (pull {timing.pull_s:.1f}, "
        f"unpack {timing.unpack_s:.1f}, start {timing.start_s:.2f}, load {timing.load_s:.1f}); "
        f"upstream {sent / 2**20:.0f} MiB"
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
    )  # fmt: skip


async def run_startup(
    stacks: list[NodeStack],
    mode: str,
    image: str,
    env: dict[str, str],
    upstream: RegistryProcess,
    log: Log,
    prewarms: list[PrewarmResult],
    links: LinkCounter | None = None,
) -> list[StartupResult]:
    """Each tier the mode has, on fresh containerd state where the tier says so; in warmstart
    mode also the hot pre-warm from each tier (into ``prewarms``)."""
    first = stacks[0]
    second = stacks[1] if len(stacks) > 1 else None
    results = [await _timed_start(first, image, "cold", env, upstream, mode, "cold", log, links)]
    if mode in (REGISTRY_PROXY, WARMSTART):
        # warm: the node's mirror holds the image, containerd does not.
        first.reset_containerd()
        results.append(await _timed_start(first, image, "warm", env, upstream, mode, "warm", log))
    if mode == WARMSTART and second is not None:
        # peer: another node's agent holds it; this node has nothing.
        results.append(await _timed_start(second, image, "peer", env, upstream, mode, "peer", log))
        # hot: pre-warmed --hot ahead (it happens before the replica is needed; timed apart).
        await asyncio.to_thread(second.reset_containerd)
        prewarms.append(await _timed_prewarm(second, image, upstream, mode, "warm", log))
        results.append(await _timed_start(second, image, "hot", env, upstream, mode, "hot", log))
        # What the hot pre-warm itself costs when this node's agent has nothing (peer), and
        # when no agent has anything (cold).
        await asyncio.to_thread(second.reset_containerd)
        await asyncio.to_thread(second.reset_agent_store)
        prewarms.append(await _timed_prewarm(second, image, upstream, mode, "peer", log))
        await asyncio.to_thread(second.reset_containerd)
        for stack in stacks:
            await asyncio.to_thread(stack.reset_agent_store)
        prewarms.append(await _timed_prewarm(second, image, upstream, mode, "cold", log))
    return results


async def run_fanout(
    stacks: list[NodeStack],
    mode: str,
    image: str,
    image_bytes: int,
    env: dict[str, str],
    upstream: RegistryProcess,
    log: Log,
) -> FanoutResult:
    mark = upstream.mark()
    started = time.monotonic()
    outcomes = await asyncio.gather(
        *(start_replica(s, image, f"fan{i}", env) for i, s in enumerate(stacks)),
        return_exceptions=True,
    )
    wall = time.monotonic() - started
    fetch = 0.0
    for stack, outcome in zip(stacks, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            raise RuntimeError(f"fanout on {stack.name} failed: {outcome}")
        fetch = max(fetch, outcome[0].pull_s)  # every node's pull began at ``started``
        await stop_replica(stack, outcome[1])
    sent = upstream_blob_bytes(upstream.requests(since=mark))
    log(
        f"  {mode} fanout x{len(stacks)}: {wall:.1f} s (all bytes on every node after "
        f"{fetch:.1f} s), upstream {sent / 2**20:.0f} MiB ({sent / image_bytes:.2f}x the image)"
    )
    return FanoutResult(mode, len(stacks), wall, sent, image_bytes, fetch)


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
) -> SpikeResult:
    """``prewarm_spare``: the spec's setting (None: the product's default, or the config's)."""
    spare = prewarm_spare if prewarm_spare is not None else config.prewarm_spare
    settings: dict[str, Any] = {
        "name": "bench",
        "image": image,
        "min_replicas": 1,
        "max_replicas": len(stacks),
        "target_concurrency": float(config.slots),
        # The trace is time-compressed: the autoscaler's windows are the endpoint's own.
        "stable_window": 20.0,
        "panic_window": 4.0,
        "scale_down_delay": 600.0,
        "replica_concurrency": config.slots,
        "replica_start_timeout": 900.0,
        "env": _bench_env(config, plan.time_scale),
    }
    if spare is not None:  # otherwise the pre-warm policy is the product's default
        settings["prewarm_spare"] = spare
    spec = build_spec(settings)
    label = label or mode
    options = ServeOptions(
        spec=spec,
        nodes=[s.node_option(1) for s in stacks],
        work_dir=work_dir,
        namespace=NAMESPACE,
        insecure_registries=frozenset({upstream.host}),
        router=RouterConfig(queue_size=100_000, queue_timeout=600.0),
        interval=0.5,
        prewarm=True,
        agent_api=mode == WARMSTART,
        peer_token=stacks[0].peer_token,
    )
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
        deadline = time.monotonic() + 900
        while not any(r.state == "ready" for r in controller.replicas.values()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{mode}: the first replica did not become ready")
            await asyncio.sleep(0.2)
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

        async def status() -> ReplicaStatus:
            snap = service.router.snapshot()
            states = [r.state for r in controller.replicas.values()]
            return ReplicaStatus(
                ready=states.count("ready"),
                starting=states.count("starting"),
                queue_length=snap.queue_length,
                in_flight=snap.in_flight,
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
        f"{'never' if ttc is None else f'{ttc:.1f} s'}"
    )
    events = [f"{e.kind}: {e.message}" for e in controller.events]
    log("    " + "\n    ".join(e for e in events if not e.startswith("stopped")))
    return SpikeResult(label, replayed.records, replayed.timeline, metrics, demand)


# -- all of it --------------------------------------------------------------------------------


async def _run_mode(
    net: NetCluster,
    mode: str,
    upstream: RegistryProcess,
    image: str,
    image_bytes: int,
    plan: SpikePlan | None,
    config: ScaleoutConfig,
    work: Path,
    results: ScaleoutResults,
    log: Log,
) -> None:
    """startup, then spike on the same nodes (the endpoint's first node holds the image, as
    after the startup runs; every other node's containerd is emptied first); fanout on fresh
    nodes."""
    env = _bench_env(config, plan.time_scale if plan else 0.05)
    if "startup" in config.scenarios or "spike" in config.scenarios:
        stacks = await asyncio.to_thread(start_nodes, net, mode, upstream)
        try:
            if "startup" in config.scenarios:
                log(f"{mode}: startup")
                results.startup += await run_startup(
                    stacks, mode, image, env, upstream, log, results.prewarm, net.link_bytes
                )
            if "spike" in config.scenarios:
                assert plan is not None
                log(f"{mode}: spike")
                for stack in stacks[1:]:
                    await asyncio.to_thread(stack.reset_containerd)
                results.spike.append(
                    await run_spike(
                        stacks, mode, image, plan, config, upstream, work / f"spike-{mode}", log
                    )
                )
                if mode == WARMSTART and config.spike_spare0 and config.prewarm_spare != 0:
                    log(f"{mode}: spike with prewarm_spare = 0 (demand-driven pre-warm only)")
                    for stack in stacks[1:]:
                        await asyncio.to_thread(stack.reset_containerd)
                    results.spike.append(
                        await run_spike(
                            stacks,
                            mode,
                            image,
                            plan,
                            config,
                            upstream,
                            work / f"spike-{WARMSTART_SPARE0}",
                            log,
                            prewarm_spare=0,
                            label=WARMSTART_SPARE0,
                        )
                    )
        finally:
            await asyncio.to_thread(close_nodes, stacks)
    if "fanout" in config.scenarios:
        log(f"{mode}: fanout")
        stacks = await asyncio.to_thread(start_nodes, net, mode, upstream)
        try:
            results.fanout.append(
                await run_fanout(stacks, mode, image, image_bytes, env, upstream, log)
            )
        finally:
            await asyncio.to_thread(close_nodes, stacks)


def run_scaleout(config: ScaleoutConfig, work: Path, log: Log = print) -> ScaleoutResults:
    unknown = [m for m in config.modes if m not in MODES]
    unknown += [s for s in config.scenarios if s not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown mode or scenario {', '.join(unknown)}")
    plan = None
    trace_path = None
    if "spike" in config.scenarios:
        trace_path = config.trace or default_trace()
        plan = plan_spike(read_trace(trace_path), config)
        log(
            f"spike: {len(plan.requests)} requests; lead-in {config.lead_s:.0f} s at "
            f"{plan.lead_slots:.1f} slots, burst {config.burst_s:.0f} s at "
            f"{plan.burst_slots:.1f} slots (K={config.slots}, service-time scale "
            f"{plan.time_scale:.4f})"
        )
    results = ScaleoutResults(modes=tuple(config.modes))
    started = time.monotonic()
    with NetCluster(
        config.nodes, rate=config.rate, upstream_rate=config.upstream_rate, lan_rate=config.lan_rate
    ) as net:
        upstream = net.start_upstream_registry(work / "upstream")
        image, image_bytes = prepare_image(config, upstream, log)
        for mode in config.modes:
            asyncio.run(
                _run_mode(net, mode, upstream, image, image_bytes, plan, config, work, results, log)
            )
    results.params = {
        "nodes": config.nodes,
        "rate": config.rate,
        "upstream_rate": config.upstream_rate,
        "lan_rate": config.lan_rate,
        "image": image,
        "image_bytes": image_bytes,
        "padding_bytes": config.padding_bytes,
        "slots_per_replica": config.slots,
        "prewarm_spare": "default" if config.prewarm_spare is None else config.prewarm_spare,
        "spike_prewarm_spare_0": config.spike_spare0,
        "trace": str(trace_path) if trace_path else None,
        "spike": plan.to_dict() if plan else None,
        "quick": config.quick,
        "wall_s": round(time.monotonic() - started, 1),
    }
    results.environment = environment_info()
    return results


def summary_lines(results: ScaleoutResults) -> list[str]:
    """A few lines for the terminal: medians per mode and tier, fanout, spike."""
    lines = []
    for mode in results.modes:
        tiers = [r for r in results.startup if r.mode == mode]
        if tiers:
            lines.append(
                f"startup {mode}: " + ", ".join(f"{r.tier} {r.total_s:.1f} s" for r in tiers)
            )
    for f in results.fanout:
        lines.append(
            f"fanout {f.mode}: {f.wall_s:.1f} s, upstream {f.upstream_bytes / f.image_bytes:.2f}x"
        )
    for s in results.spike:
        m = s.metrics
        ttc = "never" if m.time_to_capacity_s is None else f"{m.time_to_capacity_s:.1f} s"
        lines.append(
            f"spike {s.mode}: P50 {m.p50_s or math.nan:.2f} s, P90 {m.p90_s or math.nan:.2f} s, "
            f"P99 {m.p99_s or math.nan:.2f} s, lost {m.lost}, time to capacity {ttc}"
        )
    return lines


def write_outputs(
    results: ScaleoutResults, json_path: Path | None, out_dir: Path | None
) -> list[Path]:
    return write_report(results, json_path, out_dir)
