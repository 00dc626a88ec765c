"""``warmstart bench scaleout``: the cluster in a box, three ways to pull, three scenarios.

Testbed (:class:`~warmstart_harness.testbed.netcluster.NetCluster`): the upstream ``docker-registry`` in
its own network namespace; N nodes, each a namespace with its own containerd (and, by mode, its
mirror), whose downloads from the upstream are shaped (``tbf``, default 100 MB/s per node); the
nodes share an unshaped LAN; the controller, router and load generator run in the root
namespace. The image is the example model image with an incompressible padding layer standing
in for the weights of a large model (default 2 GiB). With ``model_bytes`` (``--model-size``) the
weights are a separate model artifact as well (:mod:`warmstart_harness.bench.scaleout_model`): stand-in
safetensors shards pushed upstream as a CNCF ModelPack; the padding then stands for the rest of
a large image (its CUDA and Python stack), as in the published case (17.7 GB image, ~16 GB of
weights). warmstart's replicas get the model through the agents (fetched beside the pull,
materialised, mounted at /opt/ml/model); every other mode's replicas download it themselves
from the upstream at start, over their node's shaped link.

Modes (:mod:`warmstart_harness.bench.scaleout_nodes`): ``baseline`` (containerd pulls straight from the
upstream), ``registry-proxy`` (a docker-registry pull-through cache per node), ``warmstart``
(agents, peers, pre-warm ahead, cache-aware placement). The same autoscaler and trace run in
every mode. ``provisioned`` runs only the spike, under the same trace: one replica per node
ready before the replay and no scaling, the latency floor and the most expensive option; every
spike run's replica-seconds are compared with its.

Scenarios:

- ``startup``: one replica, start -> first request answered, split into pull, unpack, start and
  model load (and with a model its fetch), from each tier the mode has (baseline: cold;
  registry-proxy: cold, warm; warmstart: cold, peer, warm, hot; with a model, baseline and
  registry-proxy also image-cached: the image still in containerd, the model downloaded);
- ``fanout``: every node starts the same image at once: wall time, bytes from the upstream;
- ``spike``: the endpoint sits at one replica under a lead-in of trace traffic, then the trace's
  busiest stretch arrives time-compressed; latency percentiles, losses, time to capacity, the
  replica timeline. Replicas run the model server's bench mode: each serves at most K requests
  at once with a service time from the request's token counts (an 8B model on one GPU), while
  its start still pulls, unpacks and reads every weight byte for real. What each mode pays:
  replica-seconds (:func:`warmstart_harness.bench.spike_metrics.replica_seconds`).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from warmstart_harness.bench.scaleout_config import (
    SCENARIOS,
    ScaleoutConfig,
    default_trace,
    piece_settings,
)
from warmstart_harness.bench.scaleout_fanout import FETCH_MODES, run_fanout, run_fanout_fetch
from warmstart_harness.bench.scaleout_model import BenchModel, prepare_model
from warmstart_harness.bench.scaleout_nodes import (
    close_nodes,
    start_nodes,
)
from warmstart_harness.bench.scaleout_report import environment_info, write_report
from warmstart_harness.bench.scaleout_scenarios import bench_env, run_spike, run_startup
from warmstart_harness.bench.scaleout_types import (
    FANOUT_FETCH,
    MODES,
    PROVISIONED,
    WARMSTART,
    WARMSTART_SPARE0,
    ScaleoutResults,
)
from warmstart_harness.bench.spike_plan import SpikePlan, plan_spike
from warmstart_harness.bench.trace import read_trace
from warmstart_harness.example_image.build import BuildOptions, build_example
from warmstart_harness.testbed.layout import push_layout
from warmstart_harness.testbed.netcluster import NetCluster
from warmstart_harness.testbed.registry import RegistryProcess

Log = Callable[[str], None]

REPOSITORY = "warmstart/example-minilm"


# -- the image --------------------------------------------------------------------------------


def server_fingerprint() -> str:
    """8 hex digits of the model server's source (what the image's ``server`` layer holds)."""
    import hashlib

    import warmstart_harness.model_server as pkg

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


# -- all of it --------------------------------------------------------------------------------


def mode_scenarios(mode: str, scenarios: tuple[str, ...]) -> tuple[str, ...]:
    """The scenarios ``mode`` runs of those asked for: ``provisioned`` only the spike (its
    replicas are up before the replay; it has no startup or fan-out of its own);
    ``fanout-fetch`` only baseline and warmstart (agents, or skopeo from the upstream)."""
    if mode == PROVISIONED:
        return tuple(s for s in scenarios if s == "spike")
    return tuple(s for s in scenarios if s != FANOUT_FETCH or mode in FETCH_MODES)


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
    model: BenchModel | None = None,
) -> None:
    """startup, then spike on the same nodes (the endpoint's first node holds the image, as
    after the startup runs; every other node's containerd is emptied first, and with a model
    every agent's store, so the spike's upstream bytes show what one cluster fetches); fanout
    on fresh nodes. ``provisioned`` runs the spike only."""
    # asyncio.to_thread's default pool has min(32, cores + 4) threads, 6 on 2 cores: the
    # nodes' blocking calls (a pre-warm, a CRI pull, a skopeo copy) would go six at a time.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(4 * len(net.nodes) + 4, thread_name_prefix="scaleout")
    )
    env = bench_env(config, plan.time_scale if plan else 0.05)
    scenarios = mode_scenarios(mode, config.scenarios)
    if not scenarios:
        log(f"{mode}: runs only the spike scenario; skipped")
    if "startup" in scenarios or "spike" in scenarios:
        stacks = await asyncio.to_thread(
            start_nodes, net, mode, upstream, config.puller, config.agent_settings
        )
        try:
            if "startup" in scenarios:
                log(f"{mode}: startup")
                results.startup += await run_startup(
                    stacks, mode, image, env, upstream, log, results.prewarm, net.link_bytes,
                    model,
                )  # fmt: skip
            if "spike" in scenarios:
                assert plan is not None
                log(f"{mode}: spike")
                for stack in stacks[1:]:
                    await asyncio.to_thread(stack.reset_containerd)
                if model is not None:
                    for stack in stacks:
                        await asyncio.to_thread(stack.reset_agent_store)
                results.spike.append(
                    await run_spike(
                        stacks, mode, image, plan, config, upstream, work / f"spike-{mode}", log,
                        model=model, links=net.link_bytes,
                    )
                )  # fmt: skip
                if mode == WARMSTART and config.spike_spare0 and config.prewarm_spare != 0:
                    log(f"{mode}: spike with prewarm_spare = 0 (demand-driven pre-warm only)")
                    for stack in stacks[1:]:
                        await asyncio.to_thread(stack.reset_containerd)
                    if model is not None:
                        for stack in stacks:
                            await asyncio.to_thread(stack.reset_agent_store)
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
                            model=model,
                            links=net.link_bytes,
                        )
                    )
        finally:
            await asyncio.to_thread(close_nodes, stacks)
    if "fanout" in scenarios:
        log(f"{mode}: fanout")
        stacks = await asyncio.to_thread(
            start_nodes, net, mode, upstream, config.puller, config.agent_settings
        )
        try:
            results.fanout.append(
                await run_fanout(
                    stacks, mode, image, image_bytes, env, upstream, log, model, net.link_bytes
                )
            )
        finally:
            await asyncio.to_thread(close_nodes, stacks)
    if FANOUT_FETCH in scenarios:
        log(f"{mode}: fanout-fetch (no containerd)")
        results.fanout.append(
            await run_fanout_fetch(
                net, mode, image, image_bytes, upstream, work, log, config.agent_settings
            )
        )


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
        model = None
        if config.model_bytes > 0:
            model = prepare_model(config.image_cache, config.model_bytes, upstream.host, log)
        for mode in config.modes:
            asyncio.run(
                _run_mode(
                    net, mode, upstream, image, image_bytes, plan, config, work, results, log,
                    model,
                )
            )  # fmt: skip
    results.params = {
        "nodes": config.nodes,
        "rate": config.rate,
        "upstream_rate": config.upstream_rate,
        "lan_rate": config.lan_rate,
        "image": image,
        "image_bytes": image_bytes,
        "padding_bytes": config.padding_bytes,
        "agent_settings": dict(config.agent_settings),
        # the piece settings the agents ran with (defaults and --agent-setting)
        "agent_piece_settings": piece_settings(config.agent_settings),
        "model": model.reference if model else None,
        "model_bytes": model.bytes if model else 0,
        "model_files": model.files if model else 0,
        "slots_per_replica": config.slots,
        "prewarm_spare": "default" if config.prewarm_spare is None else config.prewarm_spare,
        "spike_prewarm_spare_0": config.spike_spare0,
        "trace": str(trace_path) if trace_path else None,
        "spike": plan.to_dict() if plan else None,
        "quick": config.quick,
        "puller": config.puller,
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
                f"startup {mode}: "
                + ", ".join(
                    f"{r.tier} {r.total_s:.1f} s"
                    + (f" (model {r.model_s:.1f} s)" if r.model_s is not None else "")
                    for r in tiers
                )
            )
    for f in results.fanout:
        lines.append(
            f"fanout {f.mode}: {f.wall_s:.1f} s, upstream {f.upstream_bytes / f.image_bytes:.2f}x"
        )
    for s in results.spike:
        m = s.metrics
        ttc = "never" if m.time_to_capacity_s is None else f"{m.time_to_capacity_s:.1f} s"
        cost = "-" if m.replica_seconds is None else f"{m.replica_seconds:.0f}"
        lines.append(
            f"spike {s.mode}: P50 {m.p50_s or math.nan:.2f} s, P90 {m.p90_s or math.nan:.2f} s, "
            f"P99 {m.p99_s or math.nan:.2f} s, lost {m.lost}, time to capacity {ttc}, "
            f"replica-seconds {cost}"
        )
    return lines


def write_outputs(
    results: ScaleoutResults, json_path: Path | None, out_dir: Path | None
) -> list[Path]:
    return write_report(results, json_path, out_dir)
