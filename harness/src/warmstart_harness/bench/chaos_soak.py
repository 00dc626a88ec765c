"""The soak of ``warmstart bench chaos``: one agent under load from many clients, its RSS and
open fds read from ``/proc``."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp

from warmstart.oci import mediatypes as mt
from warmstart_harness.bench.chaos_plan import (
    ChaosConfig,
)
from warmstart_harness.bench.chaos_report import (
    Sample,
    SoakResult,
)
from warmstart_harness.bench.chaos_run import REPOSITORY, Run
from warmstart_harness.testbed.agent import AgentProcess
from warmstart_harness.testbed.layout import LayoutImage

Log = Callable[[str], None]


SOAK_ABORT_ONE_IN = 8


# -- the soak --------------------------------------------------------------------------------


def read_proc(pid: int) -> tuple[int, int]:
    """(VmRSS in KiB, open file descriptors) of a process."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
                break
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class _SoakBlob:
    digest: str
    size: int


async def _soak_client(
    session: aiohttp.ClientSession,
    base: str,
    pulls: Sequence[tuple[str, list[_SoakBlob]]],
    rng: random.Random,
    stop: asyncio.Event,
    soak: SoakResult,
    *,
    once: bool,
) -> None:
    """Pull images (manifest by digest, then every blob, bodies hashed) until ``stop``; with
    ``once`` each image once, in order, with no aborted reads."""
    order = list(pulls)
    while not stop.is_set():
        if not once:
            rng.shuffle(order)
        for manifest, blobs in order:
            if stop.is_set():
                return
            await _soak_get(session, f"{base}/manifests/{manifest}", manifest, soak, False)
            for blob in blobs:
                abort = not once and rng.randrange(SOAK_ABORT_ONE_IN) == 0
                await _soak_get(session, f"{base}/blobs/{blob.digest}", blob.digest, soak, abort)
            soak.pulls += 1
        if once:
            return


async def _soak_get(
    session: aiohttp.ClientSession, url: str, digest: str, soak: SoakResult, abort: bool
) -> None:
    headers = {"Accept": ", ".join(mt.MANIFEST_ACCEPT)} if "/manifests/" in url else {}
    h = hashlib.sha256()
    try:
        async with session.get(url, headers=headers) as resp:
            if resp.status != 200:
                soak.errors += 1
                if len(soak.first_errors) < 5:
                    soak.first_errors.append(f"{url}: HTTP {resp.status}")
                await resp.read()
                return
            if "/blobs/" in url:
                soak.blob_gets += 1
            async for chunk in resp.content.iter_chunked(1 << 20):
                soak.bytes += len(chunk)
                if abort:
                    soak.aborted_gets += 1
                    resp.close()
                    return
                h.update(chunk)
        if f"sha256:{h.hexdigest()}" != digest:
            soak.corrupt_served += 1
    except (aiohttp.ClientError, TimeoutError) as e:
        soak.errors += 1
        if len(soak.first_errors) < 5:
            soak.first_errors.append(f"{url}: {type(e).__name__}: {e}")


async def _quiet_sample(pid: int, t0: float) -> Sample:
    await asyncio.sleep(0.5)  # let responses and closes settle
    rss, fds = await asyncio.to_thread(read_proc, pid)
    return Sample(round(time.monotonic() - t0, 2), rss, fds)


async def run_soak(
    agent: AgentProcess,
    images: Sequence[LayoutImage],
    registry: str,
    config: ChaosConfig,
    seconds: float,
    log: Log,
) -> SoakResult:
    assert agent.pid is not None
    pid = agent.pid
    soak = SoakResult(seconds, config.soak_clients, len(images))
    pulls = [
        (
            str(i.manifest_digest),
            [_SoakBlob(str(i.config_digest), i.config_size)]
            + [_SoakBlob(str(d), s) for d, s in zip(i.layer_digests, i.layer_sizes, strict=True)],
        )
        for i in images
    ]
    base = f"{agent.url}/v2/{REPOSITORY}"
    rng = random.Random(config.seed)
    stop = asyncio.Event()
    t0 = time.monotonic()
    sessions = [
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1),
            timeout=aiohttp.ClientTimeout(total=120),
            auto_decompress=False,
        )
        for _ in range(config.soak_clients)
    ]
    try:
        # Warm-up: every client pulls every image once (connections open, caches filled).
        await asyncio.gather(
            *(_soak_client(s, base, pulls, rng, stop, soak, once=True) for s in sessions)
        )
        soak.warmup_s = time.monotonic() - t0
        soak.start = await _quiet_sample(pid, t0)
        log(f"  soak: start RSS {soak.start.rss_kib / 1024:.1f} MiB, {soak.start.fds} fds")

        async def sampler() -> None:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), config.sample_every)
                if stop.is_set():
                    return
                rss, fds = await asyncio.to_thread(read_proc, pid)
                soak.samples.append(Sample(round(time.monotonic() - t0, 2), rss, fds))

        clients = [
            asyncio.create_task(
                _soak_client(s, base, pulls, random.Random(rng.random()), stop, soak, once=False)
            )
            for s in sessions
        ]
        sampling = asyncio.create_task(sampler())
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*clients, sampling)
        # The same state as at the start: every client connected and idle.
        stop.clear()
        await asyncio.gather(
            *(
                _soak_get(s, f"{base}/manifests/{pulls[0][0]}", pulls[0][0], soak, False)
                for s in sessions
            )
        )
        soak.end = await _quiet_sample(pid, t0)
        log(
            f"  soak: end RSS {soak.end.rss_kib / 1024:.1f} MiB, {soak.end.fds} fds; "
            f"{soak.pulls} pulls, {soak.bytes / 2**30:.1f} GiB, {soak.errors} errors"
        )
    finally:
        for s in sessions:
            await s.close()
    soak.seconds = seconds
    return soak


def start_soak_agent(run: Run) -> AgentProcess:
    """An agent on the root namespace's loopback (not in the cluster), its store pre-warmed
    with the soak's images before any fault runs."""
    agent = run.net.track(
        AgentProcess(
            run.work / "soak-agent",
            upstreams={run.upstream.host: run.upstream.url},
            settings={"node_id": "soak", "containerd_link": "off"},
        )
    )
    for tag in run.plan.soak_images:
        code, body = agent.prewarm(run.ref(tag))
        if code != 200:
            raise RuntimeError(f"pre-warming the soak agent with {tag} answered {code}: {body}")
    run.extra_stores["soak/agent"] = agent.store
    return agent
