"""Fan-out of one big layer to N agents at once, whole-blob path against pieces.

N agents in network namespaces (``warmstart_harness.testbed.netcluster``: 800mbit uplinks to the
upstream registry and 800mbit LAN links by default), one image whose only layer is SIZE MiB of
random bytes, pre-warmed (warm: every blob in each agent's store, no containerd) on all N at
once, once per mode (``pieces = false`` / ``true``, fresh stores each time). Prints the wall
time, the upstream bytes of the layer, what each node sent its peers (whole blobs, pieces) and
the CPU the agents and the whole machine used.

    sudo PYTHONPATH=src:. .venv/bin/python scripts/fanout-pieces.py WORKDIR [--nodes 8]
        [--size-mib 512] [--modes whole,pieces] [--lan-rate 800mbit]

Needs root (namespaces, tc), docker-registry, skopeo and umoci, like the other benchmarks.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import tests.support.images as images

from warmstart.fetch.rendezvous import home
from warmstart_harness.testbed.agent import AgentProcess
from warmstart_harness.testbed.netcluster import NetCluster

MiB = 1 << 20


def metric(agent: AgentProcess, name: str, labels: str) -> float:
    _, body = agent.get("/metrics")
    m = re.search(re.escape(name + "{" + labels + "}") + r" (\S+)", body.decode())
    return float(m.group(1)) if m else 0.0


def agent_cpu(agents: list[AgentProcess]) -> float:
    total = 0
    for a in agents:
        with open(f"/proc/{a.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> float:
    with open("/proc/stat") as f:
        v = list(map(int, f.readline().split()[1:]))
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", type=Path)
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--modes", default="whole,pieces")
    ap.add_argument("--rate", default="800mbit")
    ap.add_argument("--lan-rate", default="800mbit")
    args = ap.parse_args()
    work: Path = args.work
    (work / "build").mkdir(parents=True, exist_ok=True)
    # random bytes straight from the kernel (Random.randbytes stops at 256 MiB)
    images.payload = lambda seed, size: os.urandom(size)  # type: ignore[assignment]
    with NetCluster(args.nodes, rate=args.rate, lan_rate=args.lan_rate) as net:
        up = net.start_upstream_registry(work / "upstream")
        image = images.build_image(
            up, "fan/big", "v1", [args.size_mib * MiB], workdir=work / "build"
        )
        layer = max(image.blobs, key=lambda d: image.blobs[d])
        size = image.blobs[layer]
        print(f"{args.nodes} nodes, layer {size / MiB:.0f} MiB, sha_ni: "
              f"{'sha_ni' in Path('/proc/cpuinfo').read_text()}", flush=True)  # fmt: skip
        urls = [f"http://{n.lan_addr}:5050" for n in net.nodes]
        for mode in args.modes.split(","):
            agents = [
                net.track(
                    AgentProcess(
                        work / f"{mode}-agent{i}",
                        upstreams={up.host: up.url},
                        peers=urls,
                        port=5050,
                        netns=node.netns,
                        listen_host=node.lan_addr,
                        settings={
                            "node_id": f"node{i}",
                            "peer_token": "t",
                            "pieces": mode == "pieces",
                        },
                    )
                )
                for i, node in enumerate(net.nodes)
            ]
            mark = up.mark()
            cpu0, all0 = agent_cpu(agents), machine_cpu()
            results: list[Any] = [None] * len(agents)

            def one(i: int, agents: list[AgentProcess] = agents, out: list[Any] = results) -> None:
                out[i] = agents[i].prewarm(image.reference)

            threads = [threading.Thread(target=one, args=(i,)) for i in range(len(agents))]
            started = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.monotonic() - started
            cpu, busy = agent_cpu(agents) - cpu0, machine_cpu() - all0
            failed = [r for r in results if r[0] != 200]
            up_bytes = sum(
                r.size for r in up.blob_get_requests(layer, since=mark, successful_only=True)
            )
            home_url = home(layer, urls)
            print(f"{mode}: {'ok' if not failed else f'FAILED {failed[:1]}'}; every node holds "
                  f"the layer after {wall:.1f} s; upstream {up_bytes / size:.2f}x the layer; "
                  f"CPU: agents {cpu:.0f} s, machine busy {busy:.0f} of {2 * wall:.0f} s",
                  flush=True)  # fmt: skip
            for i, a in enumerate(agents):
                piece = metric(a, "warmstart_agent_peer_served_bytes_total", 'kind="piece"')
                whole = metric(a, "warmstart_agent_peer_served_bytes_total", 'kind="blob"')
                mark_home = " (home)" if urls[i] == home_url else ""
                print(f"  node{i}{mark_home}: sent {whole / size:.2f}x whole, "
                      f"{piece / size:.2f}x as pieces", flush=True)  # fmt: skip
            for a in agents:
                a.stop()
                shutil.rmtree(a.store, ignore_errors=True)


if __name__ == "__main__":
    main()
