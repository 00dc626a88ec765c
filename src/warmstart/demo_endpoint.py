"""``make demo``, part 2: an autoscaled endpoint on a two-node cluster, and a burst against it.

The example model image (Debian minbase + python3, onnxruntime, the int8 all-MiniLM-L6-v2) is
built once (debootstrap and wheels are cached in ``$WARMSTART_IMAGE_CACHE``, default
``/var/cache/warmstart/example-image``) and pushed to the local upstream registry. Two nodes,
each a containerd and a warmstart agent, run ``warmstart serve`` with one replica slot each. The
replicas run the server's bench mode (a simulated 8B model: at most 2 requests at once, service
time from token counts, time-compressed 10x) so that two CPU cores can stand for two GPUs.

What it shows: the first replica starts cold (from the upstream); the burst scales the endpoint
out; the second replica starts on the other node from the cluster's cache (zero upstream blob
GETs) and is pre-warmed hot ahead of it; every request is answered.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path

import aiohttp
from rich.console import Console
from rich.table import Table

from warmstart.image.build import BuildOptions, build_example
from warmstart.serving.controller import PHASES
from warmstart.testbed.cluster import LocalCluster
from warmstart.testbed.layout import push_layout
from warmstart.testbed.registry import RegistryProcess
from warmstart.testbed.serve_process import ServeProcess

DEFAULT_IMAGE_CACHE = Path("/var/cache/warmstart/example-image")
BURST_REQUESTS = 100
BURST_SECONDS = 16.0
SPEC = """
name = "embed"
image = "{image}"
min_replicas = 1
max_replicas = 2
target_concurrency = 2
stable_window = 10
panic_window = 2
scale_down_delay = 300
replica_start_timeout = 180

[env]
WARMSTART_BENCH_MODE = "1"
MAX_CONCURRENCY = "2"
WARMSTART_BENCH_TIME_SCALE = "0.1"
"""
# One request: (800 * 0.25 ms + 200 * 28 ms) * 0.1 = 0.58 s of a replica slot, so one replica
# (2 slots) serves about 3.4 requests a second and the burst's 6 a second need two.
BODY = {"input_tokens": 800, "output_tokens": 200}


def image_cache() -> Path:
    return Path(os.environ.get("WARMSTART_IMAGE_CACHE") or DEFAULT_IMAGE_CACHE)


async def burst(url: str, count: int, seconds: float) -> list[tuple[int, float, str]]:
    """``count`` requests evenly over ``seconds`` (open loop); (status, latency, replica)."""
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(i: int) -> tuple[int, float, str]:
            await asyncio.sleep(i * seconds / count)
            started = time.perf_counter()
            try:
                async with session.post(url + "/invocations", json=BODY) as resp:
                    await resp.read()
                    replica = resp.headers.get("X-Warmstart-Replica", "-")
                    return resp.status, time.perf_counter() - started, replica
            except (aiohttp.ClientError, TimeoutError) as e:
                return 0, time.perf_counter() - started, type(e).__name__

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def run_endpoint_demo(console: Console, base: Path, registry: RegistryProcess) -> None:
    console.print("\n[bold]6. an autoscaled endpoint: a burst scales it out from the cache")
    started = time.perf_counter()
    build = build_example(
        BuildOptions(cache=image_cache(), tag="demo", layout=base / "example-oci"),
        log=lambda line: console.print(f"  {line}", markup=False),
    )
    ref = f"{registry.host}/warmstart/example-minilm:demo"
    push_layout(build.layout, "demo", ref)
    console.print(
        f"built and pushed {ref} ({build.total_size / 1e6:.0f} MB, "
        f"{len(build.layers)} layers) in {time.perf_counter() - started:.0f} s"
    )
    spec = base / "embed.toml"
    spec.write_text(SPEC.format(image=ref))
    with LocalCluster({registry.host: registry.url}, slots=1, base=base / "cluster") as cluster:
        serve = ServeProcess(
            spec,
            cluster.node_options(),
            base / "serve.log",
            extra_args=("--interval", "0.5", "--insecure-registry", registry.host),
        )
        try:
            console.print(f"warmstart serve: router on {serve.url}; waiting for the first replica")
            serve.wait(lambda: len(serve.ready()) >= 1, 180, "the first replica")
            mark = registry.mark()
            console.print(
                f"burst: {BURST_REQUESTS} requests over {BURST_SECONDS:.0f} s "
                "(about twice what one replica serves)"
            )
            results = asyncio.run(burst(serve.url, BURST_REQUESTS, BURST_SECONDS))
            serve.wait(
                lambda: (s := serve.status())["queue_length"] == 0 and s["in_flight"] == 0,
                60,
                "the queue to drain",
            )
            status = serve.status()
            scale_out_blob_gets = registry.blob_gets(since=mark)
        finally:
            code = serve.stop()
        if code != 0:
            raise SystemExit(f"demo failed: warmstart serve exited {code}:\n{serve.log_tail()}")

    replicas = Table(
        "replica", "node", "tier at start", *(f"{k} s" for k in PHASES), "ready s",
        title="replicas (tier: where the image's bytes were when the replica started; wait: for "
        "a pre-warm of its node in flight)",
    )  # fmt: skip
    for r in status["replicas"]:
        p = r.get("phases") or {}
        replicas.add_row(
            r["id"], r["node"], r["tier"],
            *(f"{p.get(k, 0):.2f}" for k in PHASES),
            f"{r.get('ready_seconds') or 0:.2f}",
        )  # fmt: skip
    console.print(replicas)
    ok = [lat for code, lat, _ in results if code == 200]
    by_replica: dict[str, int] = {}
    for _, _, replica in results:
        by_replica[replica] = by_replica.get(replica, 0) + 1
    summary = Table("burst", "value")
    summary.add_row("requests answered 200", f"{len(ok)} of {len(results)}")
    if ok:
        summary.add_row("latency P50 / max", f"{statistics.median(ok):.2f} s / {max(ok):.2f} s")
    summary.add_row("answered by", ", ".join(f"{k}: {v}" for k, v in sorted(by_replica.items())))
    summary.add_row("upstream blob GETs during the scale-out", str(scale_out_blob_gets))
    console.print(summary)
    for e in status["events"]:
        if e["kind"] in {"scale", "ready", "prewarm", "failed", "crashed"}:
            console.print(f"  {e['kind']}: {e['message']}", markup=False)
    if len(ok) != len(results):
        raise SystemExit("demo failed: some requests of the burst were not answered")
