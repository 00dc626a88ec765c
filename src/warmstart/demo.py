"""``make demo``: pull an example image through everything built so far and report what happened.

A local ``docker-registry`` stands in for the remote registry. An example image (a base layer of
small files, an application layer, and a 256 MiB model-weights layer of incompressible bytes) is
pushed to it with skopeo. Then, with the registry's own access log as the witness:

1. a cold ``warmstart pull`` into an empty store (progress bar per layer);
2. the same pull again: served from the store, no blob requests upstream;
3. four ``warmstart pull`` processes at once into a second empty store: one upstream GET per blob;
4. ``warmstart store ls`` and ``warmstart store verify``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from warmstart.testbed.layout import LayerSpec, push_layout, write_image
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

        table = Table(
            "step", "wall time", "upstream blob GETs", "served from", title="what happened"
        )
        for row in rows:
            table.add_row(*row)
        console.print(table)
        console.print(
            "next: the node agent (containerd mirror, peers, pre-warm) and autoscaled endpoints — see README."
        )
    finally:
        registry.stop()
        if not os.environ.get("WARMSTART_DEMO_KEEP"):
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
