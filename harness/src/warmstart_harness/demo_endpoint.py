"""Demo step 6: an autoscaled endpoint under a burst of requests."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table

from warmstart.image.layers import DEFAULT_IMAGE_CACHE
from warmstart.serving.replicas import PHASES
from warmstart.units import format_size
from warmstart_harness.demo_report import (
    GETS,
    Claims,
    DemoFailed,
    add_row,
    heading,
    one_line,
    show,
    table,
)
from warmstart_harness.demo_steps import Witness, steps_table
from warmstart_harness.example_image.build import BuildOptions, build_example
from warmstart_harness.testbed.cluster import LocalCluster
from warmstart_harness.testbed.layout import push_layout
from warmstart_harness.testbed.registry import RegistryProcess
from warmstart_harness.testbed.serve_process import ServeError, ServeProcess

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
MAX_REPLICAS = 2
# One request: (800 * 0.25 ms + 200 * 28 ms) * 0.1 = 0.58 s of a replica slot, so one replica
# (2 slots) serves about 3.4 requests a second and the burst's 6 a second need two.
BODY = {"input_tokens": 800, "output_tokens": 200}


# -- step 6: an autoscaled endpoint --------------------------------------------------------------


def image_cache() -> Path:
    """Where the example image's build cache lives ($WARMSTART_IMAGE_CACHE, read now)."""
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


def replicas_table(replicas: Sequence[Mapping[str, Any]]) -> Table:
    # "model" only for an endpoint with a model (its replicas report that phase)
    has_model = any("model" in (r.get("phases") or {}) for r in replicas)
    shown = [k for k in PHASES if k != "model" or has_model]
    t = table(
        "replicas (tier: where the image's bytes were when the replica started; wait: for a "
        "pre-warm of its node in flight)",
        "replica",
        "node",
        "state",
        "tier at start",
        *(f"{k} s" for k in shown),
        "ready s",
    )
    for r in replicas:
        p = r.get("phases") or {}
        add_row(
            t,
            r.get("id"),
            r.get("node"),
            r.get("state"),
            r.get("tier"),
            *(f"{float(p.get(k, 0)):.2f}" for k in shown),
            f"{float(r.get('ready_seconds') or 0):.2f}",
        )
    return t


def burst_table(results: Sequence[tuple[int, float, str]], upstream_gets: int) -> Table:
    ok = [lat for code, lat, _ in results if code == 200]
    by_replica: dict[str, int] = {}
    for _, _, replica in results:
        by_replica[replica] = by_replica.get(replica, 0) + 1
    t = table("the burst", "measure", "value")
    add_row(t, "requests answered 200", f"{len(ok)} of {len(results)}")
    if ok:
        add_row(t, "latency P50 / max", f"{statistics.median(ok):.2f} s / {max(ok):.2f} s")
    add_row(t, "answered by", ", ".join(f"{k}: {v}" for k, v in sorted(by_replica.items())))
    add_row(t, "upstream blob GETs during the burst", upstream_gets)
    return t


def endpoint_step(console: Console, base: Path, registry: RegistryProcess, claims: Claims) -> None:
    heading(console, "6. an autoscaled endpoint: a burst scales it out from the cluster's cache")
    started = time.perf_counter()
    build = build_example(
        BuildOptions(cache=image_cache(), tag="demo", layout=base / "example-oci"),
        log=lambda line: show(console, f"  {line}"),
    )
    ref = f"{registry.host}/warmstart/example-minilm:demo"
    push_layout(build.layout, "demo", ref)
    show(
        console,
        f"built and pushed {ref} ({format_size(build.total_size)}, {len(build.layers)} layers) "
        f"in {time.perf_counter() - started:.0f} s",
    )
    blobs = len({build.manifest.config_digest, *(layer.digest for layer in build.manifest.layers)})
    spec = base / "embed.toml"
    spec.write_text(SPEC.format(image=ref))
    results: list[tuple[int, float, str]] = []
    serving: list[ServeProcess] = []
    with LocalCluster({registry.host: registry.url}, slots=1, base=base / "c6") as cluster:
        urls = {n: node.agent.url for n, node in cluster.nodes.items()}
        witness = Witness(console, registry, urls)

        def start_serve() -> None:
            serve = ServeProcess(
                spec,
                cluster.node_options(),
                base / "serve.log",
                extra_args=("--interval", "0.5", "--insecure-registry", registry.host),
            )
            serving.append(serve)
            show(console, f"warmstart serve: router on {serve.url}; waiting for the first replica")
            _serve_wait(
                console,
                serve,
                lambda: len(serve.ready()) >= 1,
                180,
                "the first replica to be ready",
            )

        try:
            a = witness.step("6a warmstart serve starts, the first replica", ref, start_serve)
            serve = serving[0]
            first = {r["id"] for r in serve.ready()}
            show(
                console,
                f"burst: {BURST_REQUESTS} requests over {BURST_SECONDS:.0f} s "
                "(about twice what one replica serves)",
            )

            def burst_and_drain() -> None:
                results.extend(asyncio.run(burst(serve.url, BURST_REQUESTS, BURST_SECONDS)))
                _serve_wait(
                    console,
                    serve,
                    lambda: (s := serve.status())["queue_length"] == 0 and s["in_flight"] == 0,
                    60,
                    "the queue to drain",
                )

            b = witness.step("6b the burst", ref, burst_and_drain)
            status = serve.status()
        finally:
            code = serving[0].stop() if serving else None
    replicas = status["replicas"]
    console.print(replicas_table(replicas))
    console.print(burst_table(results, b.upstream_blob_gets))
    console.print(steps_table("6. the agents of the endpoint's nodes", witness.steps))
    bad_events = [e for e in status["events"] if e["kind"] in {"failed", "crashed"}]
    for e in status["events"]:
        if e["kind"] in {"scale", "ready", "prewarm", "prewarm-failed", "failed", "crashed"}:
            show(console, f"  {e['kind']}: {e['message']}")

    claims.equal(
        f"6a. the first replica and the pre-warm GET each of the image's {blobs} blobs upstream once",
        a.upstream_blob_gets,
        blobs,
        GETS,
    )
    ready = [r for r in replicas if r.get("state") == "ready"]
    claims.equal(
        f"6. the burst scales the endpoint out to {MAX_REPLICAS} replicas",
        len(ready),
        MAX_REPLICAS,
        "ready replicas",
    )
    claims.check(
        "6. every replica the endpoint started is ready (none failed or crashed)",
        f"{len(ready)} of {len(replicas)} ready, {len(bad_events)} failed/crashed events",
        len(ready) == len(replicas) and not bad_events,
    )
    added = [r for r in replicas if r.get("id") not in first]
    claims.check(
        "6. the scale-out replica starts from the cluster's cache (tier not cold)",
        ", ".join(f"{r.get('id')} on {r.get('node')}: {r.get('tier')}" for r in added)
        or "no replica added",
        bool(added) and all(r.get("tier") != "cold" for r in added),
    )
    claims.equal("6. the scale-out GETs no blob upstream", b.upstream_blob_gets, 0, GETS)
    answered = sum(1 for status_code, _, _ in results if status_code == 200)
    claims.check(
        "6. every request of the burst is answered (HTTP 200)",
        f"{answered} of {len(results)}",
        bool(results) and answered == len(results),
    )
    claims.check(
        "6. warmstart serve drains and exits 0 on SIGTERM", f"exit status {code}", code == 0
    )


def _serve_wait(
    console: Console,
    serve: ServeProcess,
    predicate: Callable[[], object],
    timeout: float,
    what: str,
) -> None:
    try:
        serve.wait(predicate, timeout, what)
    except ServeError as e:
        show(console, str(e))  # with the serve log's tail
        raise DemoFailed(one_line(str(e).splitlines()[0] if str(e) else what)) from None
