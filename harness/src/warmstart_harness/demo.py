"""``make demo``: the whole stack on one machine; every figure it prints is measured, and what it
claims is checked.

Witnesses: a local ``docker-registry`` stands in for the remote registry and its access log counts
the blob GETs that reach it; each node agent's ``GET /metrics`` is read before and after a step
(bytes served and fetched by source, blob GETs that reached the agent, blobs linked into
containerd) and its ``GET /status`` gives the image's tier there.

1. a cold ``warmstart pull`` into an empty store: one upstream GET per blob;
2. the same pull again: from the store, no upstream blob GET;
3. four ``warmstart pull`` processes at once into a second empty store: one upstream GET per blob;
4. ``warmstart store ls`` and ``warmstart store verify``;
5. a two-node cluster, each node a containerd and a ``warmstart agent`` (peers of each other),
   containerd pointed at its agent with ``warmstart containerd-config``:

   a. node-a ``ctr images pull`` v1, cold: each blob GET from the upstream once;
   b. node-b ``ctr images pull`` v1, which node-a pulled: no upstream blob GET;
   c. node-a's containerd drops v1 (``ctr images rm --sync``); the agent keeps it (tier warm);
      ``ctr images pull`` again: no blob GET at the agent, every blob linked into containerd;
   d. ``warmstart prewarm --hot`` v2 (v1's base layer plus new weights) on node-b: only v2's new
      blobs from the upstream; the agent's link / pull / unpack split;
   e. node-b ``ctr images pull`` v2, already hot: no blob GET upstream or at the agent;
6. an autoscaled endpoint (``warmstart serve``) of the example model image on a fresh two-node
   cluster (the image is built once; debootstrap and wheels are cached in
   ``$WARMSTART_IMAGE_CACHE``, default ``warmstart.image.layers.DEFAULT_IMAGE_CACHE``). The
   replicas run the model server's bench mode (a simulated 8B model: at most 2 requests at once,
   service time from token counts, time-compressed 10x) so two CPU cores can stand for two GPUs.
   The first replica (and the pre-warm of the other node) GET each blob upstream once; a burst
   of twice what one replica serves scales it out; the new replica starts from the cluster's
   cache (no upstream blob GET); every request is answered.

At the end the claims are printed as a table (claim, measured, held). If one did not hold, or a
step could not run, the last line is ``demo failed: ...`` and the exit status is 1.

Everything printed is data first: it goes through a console that reads no rich markup or emoji
codes (a ``hosts.toml``'s ``[host."http://..."]`` line and ``http://[fe80::1]`` stay intact);
only headings are styled, as ``Text`` objects.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.text import Text

from warmstart_harness.demo_endpoint import endpoint_step
from warmstart_harness.demo_report import Claims, DemoFailed, demo_console, one_line, show
from warmstart_harness.demo_steps import cluster_steps, store_steps
from warmstart_harness.testbed.registry import RegistryProcess

# -- the demo ------------------------------------------------------------------------------------


def run(console: Console, base: Path, claims: Claims) -> None:
    registry = RegistryProcess(base / "registry")
    try:
        console.rule(Text("warmstart demo", style="bold"))
        show(console, f"upstream: docker-registry at {registry.url} (state in {base})")
        ref, v1 = store_steps(console, base, registry, claims)
        cluster_steps(console, base, registry, ref, v1, claims)
        endpoint_step(console, base, registry, claims)
    finally:
        registry.stop()


def main() -> None:
    console = demo_console()
    claims = Claims()
    base = Path(tempfile.mkdtemp(prefix="warmstart-demo-"))
    failure: str | None = None
    try:
        run(console, base, claims)
    except DemoFailed as e:
        failure = f"demo failed: {one_line(str(e))}"
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as e:
        failure = f"demo failed: {type(e).__name__}: {one_line(str(e))}"
    finally:
        if not os.environ.get("WARMSTART_DEMO_KEEP"):
            shutil.rmtree(base, ignore_errors=True)
    if claims.items:
        console.print()
        console.print(claims.table())
    failure = failure or claims.failure_line()
    if failure:
        print(failure, file=sys.stderr, flush=True)
        sys.exit(1)
    show(console, f"demo done: all {len(claims.items)} claims held")


if __name__ == "__main__":
    main()
