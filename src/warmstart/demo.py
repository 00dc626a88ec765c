"""``make demo``: pull an example image through everything built so far and report what happened.

A local ``docker-registry`` stands in for the remote registry. An example image (a base layer of
small files, an application layer, and a 256 MiB model-weights layer of incompressible bytes) is
pushed to it with skopeo. Then, with the registry's own access log as the witness:

1. a cold ``warmstart pull`` into an empty store (progress bar per layer);
2. the same pull again: served from the store, no blob requests upstream;
3. four ``warmstart pull`` processes at once into a second empty store: one upstream GET per blob;
4. ``warmstart store ls`` and ``warmstart store verify``;
5. a two-node cluster: on each node a containerd and a ``warmstart agent`` (peers of each other);
   node A's containerd pulls through its agent (each blob once from upstream), node B's pulls the
   same image from its agent, which gets it from node A (zero upstream blob requests); then a
   second image is pre-warmed ``--hot`` on node B, and its ``ctr pull`` there has nothing to do;
6. an autoscaled endpoint (``warmstart serve``) of the example model image on two nodes: a burst
   scales it out, and the new replica starts from the cluster's cache (see ``demo_endpoint``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from warmstart.agent.api import StatusResponse
from warmstart.agent.client import AgentClient
from warmstart.demo_endpoint import run_endpoint_demo
from warmstart.testbed.agent import AgentProcess
from warmstart.testbed.containerd import ContainerdProcess
from warmstart.testbed.layout import LayerSpec, push_layout, write_image
from warmstart.testbed.net import free_port
from warmstart.testbed.registry import RegistryProcess
from warmstart.units import format_size

WEIGHTS_BYTES = 256 << 20
Row = tuple[str, str, str, str]  # step, wall time, upstream blob GETs, served from
# Shared by both example images, so the second one reuses it.
BASE_LAYER = LayerSpec(tuple((f"usr/lib/base/file{i}.so", 64 << 10) for i in range(64)), seed=1)


def _warmstart(*args: str, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "warmstart.cli.main", *args]
    if quiet:
        return subprocess.run(cmd, capture_output=True, text=True)
    return subprocess.run(cmd, text=True, stdout=subprocess.PIPE)


def _check(proc: subprocess.CompletedProcess[str], what: str) -> str:
    if proc.returncode != 0:
        raise SystemExit(
            f"demo failed at {what}: {(proc.stderr or proc.stdout or '').strip()[-500:]}"
        )
    return proc.stdout or ""


def main() -> None:
    console = Console()
    base = Path(tempfile.mkdtemp(prefix="warmstart-demo-"))
    registry = RegistryProcess(base / "registry")
    try:
        console.rule("[bold]warmstart demo: pull through the core stack")
        console.print(f"upstream: docker-registry at {registry.url} (state in {base})")
        started = time.perf_counter()
        image = write_image(
            base / "layout",
            "v1",
            [
                BASE_LAYER,
                LayerSpec(
                    (("app/server.py", 32 << 10), ("app/requirements.lock", 4 << 10)), seed=2
                ),
                LayerSpec((("opt/ml/model/weights.safetensors", WEIGHTS_BYTES),), seed=3),
            ],
            entrypoint=("serve",),
        )
        ref = f"{registry.host}/demo/embedder:v1"
        push_layout(image.layout, "v1", ref)
        console.print(
            f"built and pushed {ref}: {len(image.layer_digests)} layers, "
            f"{format_size(image.total_size)} ({time.perf_counter() - started:.1f}s)\n"
        )
        rows: list[Row] = []
        store = base / "store"
        common = ["--store", str(store), "--insecure-registry", registry.host]

        def pull_into(label: str) -> None:
            console.print(_check(_warmstart("pull", ref, *common), label).strip())

        console.print("[bold]1. cold pull into an empty store")
        _step(rows, registry, "cold pull", "upstream", lambda: pull_into("cold pull"))
        console.print("\n[bold]2. the same pull again")
        _step(rows, registry, "warm pull", "local store", lambda: pull_into("warm pull"))

        console.print("\n[bold]3. four pull processes at once into a new store")
        pull2 = ("pull", ref, "--store", str(base / "store2"), "--insecure-registry", registry.host)

        def four_at_once() -> None:
            procs = [
                subprocess.Popen(
                    [sys.executable, "-m", "warmstart.cli.main", *pull2, "--quiet"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(4)
            ]
            for p in procs:
                _out, err = p.communicate()
                if p.returncode != 0:
                    raise SystemExit(f"demo failed at concurrent pulls: {err.strip()[-500:]}")

        _step(rows, registry, "4 concurrent pulls", "one transfer per blob", four_at_once)
        console.print(
            f"4 processes done; upstream blob GETs: {rows[-1][2]} "
            f"for {len(image.layer_digests) + 1} blobs"
        )

        console.print("\n[bold]4. the store")
        console.print(
            _check(_warmstart("store", "ls", "--store", str(store), quiet=True), "store ls")
        )
        console.print(
            _check(_warmstart("store", "verify", "--store", str(store), quiet=True), "verify")
        )

        rows += cluster(console, base, registry, ref)

        table = Table(
            "step", "wall time", "upstream blob GETs", "served from", title="what happened"
        )
        for row in rows:
            table.add_row(*row)
        console.print(table)

        run_endpoint_demo(console, base, registry)
    finally:
        registry.stop()
        if not os.environ.get("WARMSTART_DEMO_KEEP"):
            shutil.rmtree(base, ignore_errors=True)


def _step(
    rows: list[Row],
    registry: RegistryProcess,
    label: str,
    source: str,
    action: Callable[[], object],
) -> None:
    """Run one demo step and record its wall time and the upstream blob GETs it caused."""
    mark = registry.mark()
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    rows.append((label, f"{seconds:.2f}s", str(registry.blob_gets(since=mark)), source))


def _ctr_pull(ctd: ContainerdProcess, hosts: Path, ref: str) -> None:
    ctd.ctr("images", "pull", "--hosts-dir", str(hosts), ref)


async def agent_status(url: str) -> StatusResponse:
    async with AgentClient(url, timeout=10) as agent:
        return await agent.status()


def cluster(console: Console, base: Path, registry: RegistryProcess, ref: str) -> list[Row]:
    """Two nodes, each a containerd and an agent; the agents are peers."""
    console.print("\n[bold]5. a two-node cluster: containerd pulls through the node agents")
    rows: list[Row] = []
    ports = {"node-a": free_port(), "node-b": free_port()}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    agents: dict[str, AgentProcess] = {}
    nodes: dict[str, ContainerdProcess] = {}
    try:
        for name in ports:
            ctd = ContainerdProcess(base / f"{name}-ctd", namespace="demo").start()
            nodes[name] = ctd
            agents[name] = AgentProcess(
                base / f"{name}-agent",
                upstreams={registry.host: registry.url},
                peers=[u for n, u in urls.items() if n != name],
                port=ports[name],
                settings={
                    "node_id": name,
                    "containerd_socket": str(ctd.socket),
                    "containerd_namespace": "demo",
                },
            )
            hosts = base / f"{name}-hosts"
            _check(
                _warmstart(
                    "containerd-config",
                    "--mirror",
                    urls[name],
                    "--out",
                    str(hosts),
                    "--insecure",
                    registry.host,
                    registry.host,
                    quiet=True,
                ),
                "containerd-config",
            )
        console.print(
            f"agents: {urls['node-a']} (node-a), {urls['node-b']} (node-b); hosts.toml written"
        )
        console.print((base / "node-a-hosts" / registry.host / "hosts.toml").read_text().strip())

        for name, source in (("node-a", "upstream, once"), ("node-b", "peer node-a")):
            _step(
                rows,
                registry,
                f"{name}: ctr pull via agent",
                source,
                lambda n=name: _ctr_pull(nodes[n], base / f"{n}-hosts", ref),
            )

        ref2 = ref.rsplit(":", 1)[0] + ":v2"
        image2 = write_image(
            base / "layout",
            "v2",
            [
                BASE_LAYER,
                LayerSpec((("opt/ml/model/weights.safetensors", WEIGHTS_BYTES // 2),), seed=4),
            ],
        )
        push_layout(image2.layout, "v2", ref2)
        prewarm = ("prewarm", ref2, "--agent", urls["node-b"], "--hot")
        _step(
            rows,
            registry,
            "node-b: prewarm --hot v2",
            "upstream + unpack",
            lambda: console.print(_check(_warmstart(*prewarm, quiet=True), "prewarm").strip()),
        )
        _step(
            rows,
            registry,
            "node-b: ctr pull v2 (hot)",
            "already unpacked",
            lambda: _ctr_pull(nodes["node-b"], base / "node-b-hosts", ref2),
        )
        status = asyncio.run(agent_status(urls["node-b"]))
        tiers = {i.reference: i.tier for i in status.images}
        console.print(f"node-b /status tiers: {tiers}", markup=False)
    finally:
        for agent in agents.values():
            agent.stop()
        for ctd in nodes.values():
            ctd.wipe()
    return rows


if __name__ == "__main__":
    main()
