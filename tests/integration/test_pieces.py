"""Pieces with real agents (``warmstart agent`` processes) and a real docker-registry: a big
blob fanned out to every node at once travels between the nodes as pieces.

Upstream GETs are counted from the registry's log; what each node sent to its peers from its
``warmstart_agent_peer_served_bytes`` metric (piece and whole-blob requests).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tests.support.images import BuiltImage
from warmstart.testbed.agent import AgentProcess
from warmstart.testbed.net import LOOPBACK, free_port
from warmstart.testbed.registry import RegistryProcess

MiB = 1 << 20
TOKEN = "pieces-secret"


def piece_settings(**extra: Any) -> dict[str, Any]:
    return {
        "peer_token": TOKEN,
        "piece_threshold": "16MiB",
        "piece_min": "1MiB",
        "piece_max": "1MiB",
        "peer_timeout": 0.5,
        **extra,
    }


def cluster(
    agents: Callable[..., AgentProcess],
    n: int,
    upstream: str,
    registry: RegistryProcess,
    **extra: Any,
) -> list[AgentProcess]:
    ports = [free_port() for _ in range(n)]
    urls = [f"http://{LOOPBACK}:{p}" for p in ports]
    return [
        agents(
            upstreams={registry.host: upstream},
            peers=urls,
            port=port,
            settings=piece_settings(node_id=f"node{i}", **extra),
        )
        for i, port in enumerate(ports)
    ]


def metric(agent: AgentProcess, name: str, labels: str = "") -> float:
    status, body = agent.get("/metrics")
    assert status == 200
    pattern = re.escape(name) + (re.escape("{" + labels + "}") if labels else "") + r" (\S+)"
    m = re.search(pattern, body.decode(), re.M)
    return float(m.group(1)) if m else 0.0


def sent_to_peers(agent: AgentProcess) -> tuple[float, float]:
    name = "warmstart_agent_peer_served_bytes_total"
    return metric(agent, name, 'kind="piece"'), metric(agent, name, 'kind="blob"')


def prewarm_all(nodes: Sequence[AgentProcess], reference: str) -> list[tuple[int, Any]]:
    results: list[tuple[int, Any]] = [(0, None)] * len(nodes)

    def one(i: int) -> None:
        results[i] = nodes[i].prewarm(reference)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(nodes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return results


def stored_blob(agent: AgentProcess, digest: str) -> bytes | None:
    path = agent.store / "blobs" / "sha256" / digest.removeprefix("sha256:")
    return path.read_bytes() if path.is_file() else None


def assert_every_node_holds(nodes: Sequence[AgentProcess], image: BuiltImage) -> None:
    for node in nodes:
        for digest in image.blobs:
            data = stored_blob(node, digest)
            assert data is not None, f"{node.url} lacks {digest}"
            assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
        leftovers = [p.name for p in (node.store / "ingest").iterdir()]
        assert leftovers == [], f"{node.url}: {leftovers}"


def big_layer(image: BuiltImage) -> str:
    return max(image.blobs, key=lambda d: image.blobs[d])


def home_of(nodes: Sequence[AgentProcess], digest: str) -> AgentProcess:
    from warmstart.fetch.rendezvous import home

    url = home(digest, [n.url for n in nodes])
    return next(n for n in nodes if n.url == url)


# -- tests -------------------------------------------------------------------------------


def test_fan_out_travels_as_pieces_from_many_holders(
    registry: RegistryProcess, image_builder: Any, fault_proxy: Any, agents: Any
) -> None:
    size = 80 * MiB
    image = image_builder.build(registry, "fan/out", "v1", layer_sizes=[size, 300_000])
    slow = fault_proxy(registry)
    slow.throttle(60 * MiB, path_contains="/blobs/")  # the home's upstream fetch takes a while
    nodes = cluster(agents, 5, slow.url, registry)
    mark = registry.mark()
    started = time.monotonic()
    results = prewarm_all(nodes, f"{registry.host}/fan/out:v1")
    elapsed = time.monotonic() - started
    assert all(code == 200 for code, _ in results), results
    assert_every_node_holds(nodes, image)
    layer = big_layer(image)
    # the upstream was asked for each blob once for the whole cluster
    for digest in image.blobs:
        assert registry.blob_gets(digest, since=mark, successful_only=True) == 1, digest
    sent = [sent_to_peers(n) for n in nodes]
    pieces_sent = [p for p, _ in sent]
    home = home_of(nodes, layer)
    home_sent = pieces_sent[nodes.index(home)]
    # the big layer went between nodes as pieces: four copies, from several senders
    assert sum(pieces_sent) == pytest.approx(4 * size, rel=0.05), sent
    assert sum(1 for p in pieces_sent if p > 0) >= 3, sent
    # no node sent the layer to everyone: the home (the only one that had it first) sent it
    # well under the 4 times it did before
    assert max(pieces_sent) <= 2.5 * size, sent
    assert home_sent < 3 * size, sent
    print(f"fan-out of {size >> 20} MiB to 5 nodes: {elapsed:.1f} s; sent {sent}")
