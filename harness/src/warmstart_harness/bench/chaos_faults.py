"""The fault classes of ``warmstart bench chaos``: each injects its faults into a
:class:`~warmstart_harness.bench.chaos_run.Run` and records the pulls around them. The process
and network classes are here, the storage classes in :mod:`warmstart_harness.bench.chaos_disk`;
:data:`CLASSES` names them all."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence

import aiohttp

from warmstart.fetch import rendezvous
from warmstart.fetch.interfaces import PEER_TOKEN_HEADER
from warmstart_harness.bench.agent import upstream_blob_bytes
from warmstart_harness.bench.chaos_disk import count_corrupt, disk_corrupt, disk_full, store_budget
from warmstart_harness.bench.chaos_plan import (
    AGENT_CRASH,
    DISK_CORRUPT,
    DISK_FULL,
    FANOUT_CRASH,
    HOME_CRASH,
    HOT,
    PEER,
    STORE_BUDGET,
    STREAMED,
    UNCACHED,
    UPSTREAM_OUTAGE,
    WARM,
    WRONG_PEER,
    Injection,
    fake_peer_port,
)
from warmstart_harness.bench.chaos_report import (
    BASELINE,
    DURING,
    PROBE,
    SETUP,
    ClassResult,
    InjectionRecord,
    PullRecord,
)
from warmstart_harness.bench.chaos_run import REPOSITORY, Run
from warmstart_harness.bench.scaleout_nodes import NodeStack
from warmstart_harness.testbed.agent import AgentProcess
from warmstart_harness.testbed.wrong_peer import WrongBytesPeer

# -- the fault classes ----------------------------------------------------------------------


async def _set_link(run: Run, stack: NodeStack, on: bool) -> None:
    """Restart the node's agent with linking into containerd on (its default) or off."""
    agent = run.agent(stack)
    if on == ("containerd_link" not in agent.settings):
        return
    if on:
        agent.settings.pop("containerd_link", None)
    else:
        agent.settings["containerd_link"] = "off"
    await asyncio.to_thread(agent.restart)


async def agent_crash(run: Run, injections: Sequence[Injection], result: ClassResult) -> None:
    for inj in injections:
        try:
            await _agent_crash_once(run, inj, result)
        finally:
            await _set_link(run, run.stacks[inj.node], on=True)


async def _agent_crash_once(run: Run, inj: Injection, result: ClassResult) -> None:
    assert inj.image is not None and inj.twin is not None
    stack = run.stacks[inj.node]
    # streamed: containerd GETs every blob through the agent (for the twin too: same path)
    await _set_link(run, stack, on=inj.variant != STREAMED)
    twin = await run.pull(stack, inj.twin, fault=AGENT_CRASH, injection=inj.number, role=BASELINE)
    result.pulls.append(twin)
    digest, size = run.big(inj.image)
    threshold = int(size * inj.fraction)
    task = asyncio.create_task(
        run.pull(stack, inj.image, fault=AGENT_CRASH, injection=inj.number, role=DURING)
    )
    fired = await run.wait_for_bytes([stack], digest, threshold, task)
    start = end = None
    if fired:
        start, end = await run.crash_and_restart(stack)
        run.say(
            f"  agent on {stack.name} ({inj.variant}) killed at {inj.fraction:.0%} of "
            f"{digest[:19]} ({size >> 20} MiB), healthy again after {end - start:.1f} s"
        )
    rec = await task
    result.pulls.append(rec)
    result.injections.append(
        InjectionRecord(
            AGENT_CRASH, inj.number, stack.name, fired, start, end,
            {"variant": inj.variant, "fraction": inj.fraction, "blob": digest,
             "blob_bytes": size, "undisturbed_s": round(twin.seconds, 3),
             "disturbed_s": round(rec.seconds, 3), "attempts": rec.attempts},
        )
    )  # fmt: skip
    if fired:
        await run.probe(stack, inj.image, AGENT_CRASH, inj.number, result, after=end)


async def home_crash(run: Run, injections: Sequence[Injection], result: ClassResult) -> None:
    for inj in injections:
        assert inj.image is not None
        digest, size = run.big(inj.image)
        urls = run.agent_urls()
        home = rendezvous.home(digest, [rendezvous.node_key(u) for u in urls])
        victim = next(s for s in run.stacks if rendezvous.node_key(run.agent(s).url) == home)
        others = [s for s in run.stacks if s is not victim]
        tasks = [
            asyncio.create_task(
                run.pull(s, inj.image, fault=HOME_CRASH, injection=inj.number, role=DURING)
            )
            for s in others
        ]
        all_done = asyncio.create_task(asyncio.wait(tasks))
        fired = await run.wait_for_bytes(others, digest, int(size * inj.fraction), all_done)
        start = end = None
        if fired:
            start, end = await run.crash_and_restart(victim)
            run.say(
                f"  home of {digest[:19]} ({victim.name}) killed at {inj.fraction:.0%} while "
                f"{', '.join(s.name for s in others)} streamed it; healthy after "
                f"{end - start:.1f} s"
            )
        await all_done
        result.pulls.extend(t.result() for t in tasks)
        result.injections.append(
            InjectionRecord(
                HOME_CRASH, inj.number, victim.name, fired, start, end,
                {"fraction": inj.fraction, "blob": digest, "blob_bytes": size,
                 "streaming_nodes": [s.name for s in others]},
            )
        )  # fmt: skip
        if fired:
            await run.probe(victim, inj.image, HOME_CRASH, inj.number, result)


async def fanout_crash(run: Run, injections: Sequence[Injection], result: ClassResult) -> None:
    for inj in injections:
        assert inj.image is not None
        digest, size = run.big(inj.image)
        urls = run.agent_urls()
        home = rendezvous.home(digest, [rendezvous.node_key(u) for u in urls])
        others = [s for s in run.stacks if rendezvous.node_key(run.agent(s).url) != home]
        victim = others[inj.node % len(others)]
        mark = await asyncio.to_thread(run.upstream.mark)
        tasks = [
            asyncio.create_task(
                run.pull(s, inj.image, fault=FANOUT_CRASH, injection=inj.number, role=DURING)
            )
            for s in run.stacks
        ]
        all_done = asyncio.create_task(asyncio.wait(tasks))
        fired = await run.wait_for_bytes([victim], digest, int(size * inj.fraction), all_done)
        start = end = None
        if fired:
            start, end = await run.crash_and_restart(victim)
            run.say(
                f"  {victim.name} (not the home of {digest[:19]}) killed at {inj.fraction:.0%} "
                f"of the layer while every node fetched it; healthy after {end - start:.1f} s"
            )
        await all_done
        result.pulls.extend(t.result() for t in tasks)
        sent = await asyncio.to_thread(run.upstream.requests, mark)
        gets = [r for r in sent if r.method == "GET" and r.blob_digest == digest]
        # The agents' requests; the killed node's containerd falls back to the upstream
        # itself while its agent is down (hosts.toml), counted apart.
        layer_gets = [r for r in gets if not r.user_agent.startswith("containerd")]
        direct = sum(r.size for r in gets if r.user_agent.startswith("containerd"))
        result.injections.append(
            InjectionRecord(
                FANOUT_CRASH, inj.number, victim.name, fired, start, end,
                {"fraction": inj.fraction, "blob": digest, "blob_bytes": size,
                 "nodes": [s.name for s in run.stacks],
                 "upstream_layer_gets": len(layer_gets),
                 "upstream_layer_bytes": sum(r.size for r in layer_gets),
                 "containerd_direct_bytes": direct},
            )
        )  # fmt: skip
        run.say(
            f"  fan-out of {size >> 20} MiB: the upstream sent the agents the layer "
            f"{sum(r.size for r in layer_gets) / size:.2f} times ({len(layer_gets)} GETs); "
            f"containerd fetched {direct / size:.2f} times itself while its agent was down"
        )
        if fired:
            await run.probe(victim, inj.image, FANOUT_CRASH, inj.number, result, after=end)


async def _raw_blob_reads(url: str, digest: str, attempts: int, pause: float = 0.2) -> list[str]:
    """GET one blob from an agent as a plain client, hashing each body: "ok", "WRONG" (a
    complete body with the wrong bytes: served corrupt) or "error: ..."; stops at "ok"."""
    outcomes: list[str] = []
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        for _ in range(attempts):
            h = hashlib.sha256()
            try:
                async with session.get(url) as resp:
                    if resp.status != 200:
                        outcomes.append(f"error: HTTP {resp.status}")
                    else:
                        async for chunk in resp.content.iter_chunked(1 << 20):
                            h.update(chunk)
                        good = f"sha256:{h.hexdigest()}" == digest
                        outcomes.append("ok" if good else "WRONG")
                        if good:
                            return outcomes
            except (aiohttp.ClientError, TimeoutError) as e:
                outcomes.append(f"error: {type(e).__name__}")
            await asyncio.sleep(pause)
    return outcomes


async def _put_peers(agent: AgentProcess, peers: Sequence[str]) -> None:
    headers = {PEER_TOKEN_HEADER: agent.peer_token} if agent.peer_token else {}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.put(f"{agent.url}/peers", json={"peers": list(peers)}, headers=headers) as resp,
    ):
        body = await resp.text()
        if resp.status != 200:
            raise RuntimeError(f"PUT /peers on {agent.url} answered {resp.status}: {body[:200]}")


async def wrong_peer(run: Run, injections: Sequence[Injection], result: ClassResult) -> None:
    sizes = {
        str(d): s
        for image in run.images.values()
        for d, s in zip(
            (image.config_digest, *image.layer_digests),
            (image.config_size, *image.layer_sizes),
            strict=True,
        )
    }
    for inj in injections:
        assert inj.image is not None
        stack = run.stacks[inj.node]
        agent = run.agent(stack)
        digest, size = run.big(inj.image)
        port = fake_peer_port(digest, run.agent_urls(), "127.0.0.1")
        peer = WrongBytesPeer(sizes, port=port, netns=stack.node.netns).start()
        run.cleanup.callback(peer.stop)
        original = list(agent.peers)
        start = run.now()
        await _put_peers(agent, [*original, peer.url])
        run.say(f"  {stack.name} lists a wrong-bytes peer {peer.url}, home of {digest[:19]}")
        blob_url = f"{agent.url}/v2/{REPOSITORY}/blobs/{digest}?ns={run.upstream.host}"
        try:
            rec, reads = await asyncio.gather(
                run.pull(stack, inj.image, fault=WRONG_PEER, injection=inj.number, role=DURING),
                _raw_blob_reads(blob_url, digest, attempts=4),
            )
        finally:
            await _put_peers(agent, original)
            peer.stop()
        end = run.now()
        result.pulls.append(rec)
        served = reads.count("WRONG")
        result.injections.append(
            InjectionRecord(
                WRONG_PEER, inj.number, stack.name, peer.gets > 0, start, end,
                {"blob": digest, "blob_bytes": size, "peer_gets": peer.gets,
                 "peer_asked": list(peer.asked),
                 "peer_heads": peer.heads, "wrong_bytes_sent": peer.bytes_sent,
                 "client_reads": reads, "corrupt_served": served},
            )
        )  # fmt: skip
        result.notes.append(
            f"#{inj.number}: stand-in peer sent {peer.bytes_sent / 2**20:.0f} MiB of wrong bytes "
            f"({peer.gets} GETs); a client reading the blob meanwhile got {', '.join(reads)}"
        )
        await run.probe(stack, inj.image, WRONG_PEER, inj.number, result, after=end)


async def upstream_outage(run: Run, injections: Sequence[Injection], result: ClassResult) -> None:
    plan, cfg = run.plan, run.config
    hot_tag, warm_tag, none_tag = (plan.outage_images[t] for t in (HOT, WARM, UNCACHED))
    hot_node, warm_node = (run.stacks[plan.outage_holders[t]] for t in (HOT, WARM))
    result.pulls.append(
        await run.pull(hot_node, hot_tag, fault=UPSTREAM_OUTAGE, injection=1, role=SETUP)
    )
    result.pulls.append(
        await run.pull(warm_node, warm_tag, fault=UPSTREAM_OUTAGE, injection=1, role=SETUP)
    )
    await run.remove_from_containerd(warm_node, warm_tag)
    have: dict[tuple[str, str], str] = {(hot_node.name, hot_tag): HOT}
    have[(warm_node.name, warm_tag)] = WARM
    await asyncio.to_thread(run.upstream.stop)
    start = run.now()
    run.say(f"  upstream registry stopped for {cfg.outage_seconds:.0f} s")
    rounds = 0

    async def one_start(stack: NodeStack, tag: str) -> PullRecord:
        tier = UNCACHED if tag == none_tag else have.get((stack.name, tag), PEER)
        rec = await run.pull(
            stack, tag, fault=UPSTREAM_OUTAGE, injection=1, role=DURING, start=True, tier=tier
        )
        if rec.ok:
            have[(stack.name, tag)] = HOT
        return rec

    try:
        # Rounds of starts (every node, every image at once) while the outage lasts; a round
        # is begun only if it should end in time, so the outage is not stretched much.
        last = 0.0
        while rounds == 0 or run.now() + last < start + cfg.outage_seconds:
            rounds += 1
            began = run.now()
            result.pulls.extend(
                await asyncio.gather(
                    *(one_start(s, t) for s in run.stacks for t in (hot_tag, warm_tag, none_tag))
                )
            )
            last = run.now() - began
            await asyncio.sleep(min(1.0, max(0.0, start + cfg.outage_seconds - run.now())))
        await asyncio.sleep(max(0.0, start + cfg.outage_seconds - run.now()))
    finally:
        await asyncio.to_thread(run.upstream.start, same_port=True)
    end = run.now()
    run.say(f"  upstream registry back after {end - start:.1f} s ({rounds} rounds of starts)")
    result.injections.append(
        InjectionRecord(
            UPSTREAM_OUTAGE, 1, "all", True, start, end,
            {"seconds": round(end - start, 2), "rounds": rounds,
             "recovery_nodes": [s.name for s in run.stacks]},
        )
    )  # fmt: skip
    for rec in await asyncio.gather(
        *(
            run.pull(s, none_tag, fault=UPSTREAM_OUTAGE, injection=1, role=PROBE, start=True)
            for s in run.stacks
        )
    ):
        result.pulls.append(rec)


CLASSES: dict[str, Callable[[Run, Sequence[Injection], ClassResult], Awaitable[None]]] = {
    AGENT_CRASH: agent_crash,
    HOME_CRASH: home_crash,
    FANOUT_CRASH: fanout_crash,
    WRONG_PEER: wrong_peer,
    DISK_CORRUPT: disk_corrupt,
    UPSTREAM_OUTAGE: upstream_outage,
    STORE_BUDGET: store_budget,
    DISK_FULL: disk_full,
}


async def run_class(run: Run, fault: str) -> ClassResult:
    injections = run.plan.of(fault)
    result = ClassResult(fault, planned=len(injections))
    run.say(f"{fault}: {len(injections)} injection(s)")
    mark = await asyncio.to_thread(run.upstream.mark)
    try:
        await CLASSES[fault](run, injections, result)
    except Exception as e:  # a harness failure: report it, go on with the next class
        result.error = f"{type(e).__name__}: {e}"
        run.say(f"  {fault} stopped: {result.error}")
    finally:
        if not run.upstream.running:
            await asyncio.to_thread(run.upstream.start, same_port=True)
    checked, bad = await run.scan()
    count_corrupt(run, result, bad)
    earlier = len([b for b in bad if b not in result.corrupt_files])
    if earlier:
        result.notes.append(f"{earlier} corrupt file(s) from earlier classes still kept")
    sent = await asyncio.to_thread(run.upstream.requests, mark)
    result.upstream_bytes = upstream_blob_bytes(sent)
    result.upstream_direct_bytes = upstream_blob_bytes(
        r for r in sent if r.user_agent.startswith("containerd")
    )
    run.say(
        f"  {fault}: {checked} blob files re-hashed, {result.corrupt_kept} corrupt; upstream "
        f"{result.upstream_bytes / 2**20:.0f} MiB, of which containerd fetched "
        f"{result.upstream_direct_bytes / 2**20:.0f} MiB itself"
    )
    return result
