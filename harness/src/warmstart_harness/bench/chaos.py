"""``warmstart bench chaos``: faults injected into a cluster in a box while it pulls images.

Testbed: a :class:`~warmstart_harness.testbed.netcluster.NetCluster` (default 3 nodes), the upstream
``docker-registry`` in its namespace, on every node a containerd and a ``warmstart agent`` with
the other agents as peers (:mod:`warmstart_harness.bench.scaleout_nodes`, mode ``warmstart``). The
images are generated (:mod:`warmstart_harness.testbed.layout`): a base layer with ``/bin/true`` and its
libraries (shared by all), one big layer of random bytes and a small one, so a pull moves real
bytes and a start really runs a container.

Every pull is ``ctr images pull`` through the node's agent (``hosts.toml``, as the runtime
does: :meth:`ContainerdRuntime.pull`), under a deadline; a pull whose body broke is retried up
to ``pull_retries`` times, as warmstart's runtime will (ctr itself does not). A start is a pull
and ``ctr run --rm`` of the image's ``/bin/true``. The fault classes and what is random about
them are described in :mod:`warmstart_harness.bench.chaos_plan`; outcomes, rows and targets in
:mod:`warmstart_harness.bench.chaos_report`.

After each class every blob file of every agent store and every containerd content store
(``<root>/io.containerd.content.v1.content/blobs/sha256/*``) is hashed again; a file whose
bytes do not hash to its name is a corrupt blob kept (counted in the class that left it).
Upstream bytes per class are the blob GET bodies in the registry's access log.

The soak: one more agent (on the root namespace's loopback, not in the cluster), its store
pre-warmed with 4 of the images; 8 clients pull them (manifest and blobs through ``/v2/``,
every body hashed; one blob read in 8 is given up after its first chunk) for ``soak_seconds``.
The agent's RSS and open fds are read from ``/proc`` at the start and end, both taken with the
clients idle and connected (after a warm-up pass), and every ``sample_every`` seconds under load.

Cleanup: the cluster's :meth:`NetCluster.close` (processes by PID, namespaces), the node stacks
(containers, containerd state, agents) and everything registered on the run's exit stack
(tmpfs mounts, the stand-in peer, the soak agent) are undone also on failure and on
SIGTERM/Ctrl-C (the cluster turns those into ``SystemExit`` while it is open).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from warmstart_harness.bench.chaos_faults import CLASSES, run_class
from warmstart_harness.bench.chaos_plan import (
    ChaosConfig,
    plan_chaos,
)
from warmstart_harness.bench.chaos_report import (
    ChaosResults,
)
from warmstart_harness.bench.chaos_run import Run, build_images
from warmstart_harness.bench.chaos_soak import run_soak, start_soak_agent
from warmstart_harness.bench.scaleout_nodes import AGENT_PORT, NodeStack, close_nodes, start_nodes
from warmstart_harness.bench.scaleout_report import environment_info
from warmstart_harness.bench.scaleout_types import WARMSTART
from warmstart_harness.testbed.agent import AgentProcess
from warmstart_harness.testbed.netcluster import NetCluster

Log = Callable[[str], None]


# -- all of it --------------------------------------------------------------------------------


def keep_logs(stacks: Sequence[NodeStack], dest: Path) -> None:
    """Copy every node's agent and containerd log to ``dest`` (the nodes' dirs go away)."""
    dest.mkdir(parents=True, exist_ok=True)
    for s in stacks:
        for name, log in (
            ("agent", s.agent.log if s.agent else None),
            ("containerd", s.containerd.log),
        ):
            if log is not None and log.exists():
                with contextlib.suppress(OSError):
                    shutil.copyfile(log, dest / f"{s.name}-{name}.log")


def cpu_sha_ni() -> int:
    """Lines of /proc/cpuinfo with the sha_ni flag (what ``grep -c sha_ni`` counts)."""
    try:
        with open("/proc/cpuinfo") as f:
            return sum(1 for line in f if "sha_ni" in line)
    except OSError:
        return 0


async def _main(run: Run, soak_agent: AgentProcess, results: ChaosResults) -> None:
    cfg = run.config
    deadline = run.t0 + cfg.time_limit
    soak_reserve = cfg.soak_seconds + 15  # the soak, its warm-up and the last samples
    for fault in CLASSES:
        if fault not in cfg.classes:
            continue
        if time.monotonic() > deadline - soak_reserve:
            results.skipped.append(fault)
            run.say(f"{fault}: skipped (time limit)")
            continue
        results.classes.append(await run_class(run, fault))
    left = deadline - time.monotonic() - 10
    seconds = max(5.0, min(cfg.soak_seconds, left))
    run.say(
        f"soak: {cfg.soak_clients} clients, {len(run.plan.soak_images)} images, {seconds:.0f} s"
    )
    soak_images = [run.images[t] for t in run.plan.soak_images]
    results.soak = await run_soak(soak_agent, soak_images, run.upstream.host, cfg, seconds, run.say)
    _, bad = await run.scan()
    new = [b for b in bad if b not in run.corrupt_seen]
    if new:
        results.soak.first_errors.append(f"corrupt blob files after the soak: {', '.join(new)}")


def run_chaos(config: ChaosConfig, work: Path, log: Log = print) -> ChaosResults:
    plan = plan_chaos(config)
    results = ChaosResults()
    t0 = time.monotonic()
    stacks: list[NodeStack] = []
    # The exit stack closes first (nodes, mounts, the stand-in peer, the soak agent), then the
    # cluster (its tracked processes, then the namespaces).
    with (
        NetCluster(config.nodes, rate=config.rate, lan_rate=config.lan_rate) as net,
        contextlib.ExitStack() as cleanup,
    ):
        upstream = net.start_upstream_registry(work / "upstream")
        images = build_images(plan, work / "layout", upstream.host, log)
        stacks = start_nodes(net, WARMSTART, upstream)
        cleanup.callback(close_nodes, stacks)
        cleanup.callback(keep_logs, stacks, work / "logs")
        run = Run(config, plan, net, upstream, stacks, images, work, log, t0, cleanup)
        soak_agent = start_soak_agent(run)
        cleanup.callback(soak_agent.cleanup)
        run.say(
            f"cluster up: {config.nodes} nodes ({', '.join(s.node.lan_addr for s in stacks)}), "
            f"agents on port {AGENT_PORT}, upstream {upstream.url}"
        )
        asyncio.run(_main(run, soak_agent, results))
    results.params = {
        "seed": config.seed,
        "nodes": config.nodes,
        "quick": config.quick,
        "rate": config.rate,
        "lan_rate": config.lan_rate,
        "soak_seconds": config.soak_seconds,
        "outage_seconds": config.outage_seconds,
        "layer_mib": list(config.layer_mib),
        "pull_timeout": config.pull_timeout,
        "pull_retries": config.pull_retries,
        "flat_tolerance": config.flat_tolerance,
        "time_limit": config.time_limit,
        "images": {s.tag: s.big_bytes for s in plan.images},
        "wall_s": round(time.monotonic() - t0, 1),
    }
    results.environment = environment_info({"sha_ni": cpu_sha_ni()})
    return results


def write_outputs(
    results: ChaosResults, json_path: Path | None, out_dir: Path | None
) -> list[Path]:
    from warmstart_harness.bench.chaos_report import markdown, to_json

    written: list[Path] = []
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(to_json(results), indent=2) + "\n")
        written.append(json_path)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "chaos.md"
        path.write_text(markdown(results))
        written.append(path)
    return written
