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
   second image is pre-warmed ``--hot`` on node B, and its ``ctr pull`` there has nothing to do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.table import Table

from warmstart.testbed.agent import AgentProcess
from warmstart.testbed.containerd import ContainerdProcess
from warmstart.testbed.layout import LayerSpec, push_layout, write_image
from warmstart.testbed.net import free_port
from warmstart.testbed.registry import RegistryProcess
from warmstart.units import format_size

WEIGHTS_BYTES = 256 << 20


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
                LayerSpec(tuple((f"usr/lib/base/file{i}.so", 64 << 10) for i in range(64)), seed=1),
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
        rows: list[tuple[str, str, str, str]] = []
        store = base / "store"
        common = ["--store", str(store), "--insecure-registry", registry.host]

        console.print("[bold]1. cold pull into an empty store")
        mark = registry.mark()
        t = time.perf_counter()
        console.print(_check(_warmstart("pull", ref, *common), "cold pull").strip())
        rows.append(
            (
                "cold pull",
                f"{time.perf_counter() - t:.2f}s",
                str(registry.blob_gets(since=mark)),
                "upstream",
            )
        )

        console.print("\n[bold]2. the same pull again")
        mark = registry.mark()
        t = time.perf_counter()
        console.print(_check(_warmstart("pull", ref, *common), "warm pull").strip())
        rows.append(
            (
                "warm pull",
                f"{time.perf_counter() - t:.2f}s",
                str(registry.blob_gets(since=mark)),
                "local store",
            )
        )

        console.print("\n[bold]3. four pull processes at once into a new store")
        store2 = base / "store2"
        mark = registry.mark()
        t = time.perf_counter()
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "warmstart.cli.main",
                    "pull",
                    ref,
                    "--store",
                    str(store2),
                    "--insecure-registry",
                    registry.host,
                    "--quiet",
                ],
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
        gets = registry.blob_gets(since=mark)
        blobs = len(image.layer_digests) + 1
        console.print(f"4 processes done; upstream blob GETs: {gets} for {blobs} blobs")
        rows.append(
            (
                "4 concurrent pulls",
                f"{time.perf_counter() - t:.2f}s",
                str(gets),
                "one transfer per blob",
            )
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
        console.print(
            "next: autoscaled endpoints that start replicas where the bytes are — see README."
        )
    finally:
        registry.stop()
        if not os.environ.get("WARMSTART_DEMO_KEEP"):
            shutil.rmtree(base, ignore_errors=True)


def _ctr_pull(ctd: ContainerdProcess, hosts: Path, ref: str) -> float:
    t = time.perf_counter()
    ctd.ctr("images", "pull", "--hosts-dir", str(hosts), ref)
    return time.perf_counter() - t


def cluster(
    console: Console, base: Path, registry: RegistryProcess, ref: str
) -> list[tuple[str, str, str, str]]:
    """Two nodes, each a containerd and an agent; the agents are peers."""
    console.print("\n[bold]5. a two-node cluster: containerd pulls through the node agents")
    rows: list[tuple[str, str, str, str]] = []
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

        mark = registry.mark()
        seconds = _ctr_pull(nodes["node-a"], base / "node-a-hosts", ref)
        rows.append(
            (
                "node-a: ctr pull via agent",
                f"{seconds:.2f}s",
                str(registry.blob_gets(since=mark)),
                "upstream, once",
            )
        )
        mark = registry.mark()
        seconds = _ctr_pull(nodes["node-b"], base / "node-b-hosts", ref)
        rows.append(
            (
                "node-b: ctr pull via agent",
                f"{seconds:.2f}s",
                str(registry.blob_gets(since=mark)),
                "peer node-a",
            )
        )

        ref2 = ref.rsplit(":", 1)[0] + ":v2"
        image2 = write_image(
            base / "layout",
            "v2",
            [
                LayerSpec(tuple((f"usr/lib/base/file{i}.so", 64 << 10) for i in range(64)), seed=1),
                LayerSpec((("opt/ml/model/weights.safetensors", WEIGHTS_BYTES // 2),), seed=4),
            ],
        )
        push_layout(image2.layout, "v2", ref2)
        mark = registry.mark()
        t = time.perf_counter()
        out = _check(
            _warmstart("prewarm", ref2, "--agent", urls["node-b"], "--hot", quiet=True),
            "prewarm --hot",
        )
        console.print(out.strip())
        rows.append(
            (
                "node-b: prewarm --hot v2",
                f"{time.perf_counter() - t:.2f}s",
                str(registry.blob_gets(since=mark)),
                "upstream + unpack",
            )
        )
        mark = registry.mark()
        seconds = _ctr_pull(nodes["node-b"], base / "node-b-hosts", ref2)
        rows.append(
            (
                "node-b: ctr pull v2 (hot)",
                f"{seconds:.2f}s",
                str(registry.blob_gets(since=mark)),
                "already unpacked",
            )
        )
        status = json.loads(urllib.request.urlopen(urls["node-b"] + "/status", timeout=10).read())
        tiers = {i.get("reference"): i.get("tier") for i in status.get("images", [])}
        console.print(f"node-b /status tiers: {tiers}")
    finally:
        for agent in agents.values():
            agent.stop()
        for ctd in nodes.values():
            ctd.wipe()
    return rows


if __name__ == "__main__":
    main()
