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
from warmstart.agent.config import AgentConfig
from warmstart.fetch.pieces import piece_size_for
from warmstart_harness.testbed.agent import AgentProcess
from warmstart_harness.testbed.net import LOOPBACK, free_port
from warmstart_harness.testbed.registry import RegistryProcess

MiB = 1 << 20
PIECE_DOWNLOADS = 4  # the agent's default piece_downloads: pieces one node fetches at once
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


def start_fan_out(
    nodes: Sequence[AgentProcess], reference: str
) -> tuple[list[tuple[int, Any]], list[threading.Thread]]:
    results: list[tuple[int, Any]] = [(0, None)] * len(nodes)

    def one(i: int) -> None:
        try:
            results[i] = nodes[i].prewarm(reference)
        except OSError as e:  # the agent was killed under it
            results[i] = (-1, str(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(nodes))]
    for t in threads:
        t.start()
    return results, threads


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_a_peer_sending_a_corrupt_piece_is_refused_and_not_asked_again(
    registry: RegistryProcess, image_builder: Any, fault_proxy: Any, agents: Any
) -> None:
    from warmstart.fetch.rendezvous import home

    size = 48 * MiB
    image = image_builder.build(registry, "fan/liar", "v1", layer_sizes=[size])
    layer = big_layer(image)
    slow = fault_proxy(registry)
    slow.throttle(40 * MiB, path_contains="/blobs/")
    ports = [free_port() for _ in range(5)]
    real = [f"http://{LOOPBACK}:{p}" for p in ports]
    # One node is reached by the others only through a proxy that flips a byte of every blob
    # answer it gives (its pieces); it must not be the layer's home.
    liar = liar_proxy = None
    for attempt in range(20):  # a proxy's port is random: so is whether it is the home
        i = 1 + attempt % 4
        proxy = fault_proxy(real[i])
        urls = [*real[:i], proxy.url, *real[i + 1 :]]
        if home(layer, urls) != proxy.url:
            liar, liar_proxy = i, proxy
            break
    assert liar is not None and liar_proxy is not None
    liar_proxy.corrupt(path_contains="/blobs/", times=None)
    nodes = []
    for i, port in enumerate(ports):
        extra: dict[str, Any] = {"advertise_url": liar_proxy.url} if i == liar else {}
        # One upload at a time everywhere: the honest holders are busy often enough that the
        # others turn to the liar (with the default 4 slots they could serve everything alone).
        extra["piece_uploads"] = 1
        nodes.append(
            agents(
                upstreams={registry.host: slow.url},
                peers=urls,
                port=port,
                settings=piece_settings(node_id=f"node{i}", **extra),
            )
        )
    mark = registry.mark()
    results = prewarm_all(nodes, f"{registry.host}/fan/liar:v1")
    assert all(code == 200 for code, _ in results), results
    assert_every_node_holds(nodes, image)  # nothing bad kept anywhere
    assert registry.blob_gets(layer, since=mark, successful_only=True) == 1
    asked = [r for r in liar_proxy.requests_matching(layer, "GET") if r.header("Range")]
    assert any(r.fault == "corrupt" for r in asked), "nobody asked the liar for a piece"
    # each node that got a corrupt piece from it asked it no more: only requests already in
    # flight when the first bad piece was found (a node has at most PIECE_DOWNLOADS at once,
    # usually one per peer) can still reach it
    by_node: dict[str, int] = {}
    for r in asked:
        node = r.header("X-Warmstart-Peer") or "?"
        by_node[node] = by_node.get(node, 0) + 1
    assert by_node and all(n <= PIECE_DOWNLOADS for n in by_node.values()), by_node
    for i, node in enumerate(nodes):
        if f"node{i}" in by_node:
            assert "is not asked for this blob again" in node.log.read_text()


def test_a_peer_killed_mid_fan_out_costs_only_its_pieces(
    registry: RegistryProcess, image_builder: Any, fault_proxy: Any, agents: Any
) -> None:
    size = 64 * MiB
    image = image_builder.build(registry, "fan/crash", "v1", layer_sizes=[size])
    layer = big_layer(image)
    slow = fault_proxy(registry)
    slow.throttle(24 * MiB, path_contains="/blobs/")  # ~2.7 s from the upstream
    nodes = cluster(agents, 5, slow.url, registry)
    home = home_of(nodes, layer)
    victim = next(n for n in nodes if n is not home)
    mark = registry.mark()
    results, threads = start_fan_out(nodes, f"{registry.host}/fan/crash:v1")
    # kill it while it holds pieces and serves them to the others
    wait_until(lambda: sent_to_peers(victim)[0] >= 4 * MiB, 30, "the victim to serve pieces")
    victim.kill()
    for t in threads:
        t.join(300)
    survivors = [n for n in nodes if n is not victim]
    for node, (code, body) in zip(nodes, results, strict=True):
        if node is not victim:
            assert code == 200, body
    assert_every_node_holds(survivors, image)
    # the home held every piece: the upstream was not asked again
    assert registry.blob_gets(layer, since=mark, successful_only=True) == 1


def test_the_home_killed_mid_fan_out_leaves_the_others_to_finish(
    registry: RegistryProcess, image_builder: Any, fault_proxy: Any, agents: Any
) -> None:
    size = 64 * MiB
    image = image_builder.build(registry, "fan/home", "v1", layer_sizes=[size])
    layer = big_layer(image)
    slow = fault_proxy(registry)
    slow.throttle(16 * MiB, path_contains="/blobs/")  # ~4 s from the upstream
    nodes = cluster(agents, 5, slow.url, registry)
    home = home_of(nodes, layer)
    mark = registry.mark()
    results, threads = start_fan_out(nodes, f"{registry.host}/fan/home:v1")
    # Bytes sent are not pieces held: with `piece_uploads` pieces in flight at once, each may be
    # partly sent. (uploads + 2) pieces' worth sent means at least two whole pieces went out.
    piece, uploads = 8 * MiB, AgentConfig().piece_uploads
    assert piece_size_for(size) == piece
    enough = (uploads + 2) * piece
    wait_until(lambda: sent_to_peers(home)[0] >= enough, 60, "the home to serve pieces")
    home.kill()
    for t in threads:
        t.join(300)
    survivors = [n for n in nodes if n is not home]
    for node, (code, body) in zip(nodes, results, strict=True):
        if node is not home:
            assert code == 200, body
    assert_every_node_holds(survivors, image)
    gets = registry.blob_get_requests(layer, since=mark, successful_only=True)
    # the home's own GET, then ranged GETs by the node standing in for it, for the pieces
    # nobody else held: at least one whole piece was held elsewhere and not asked for again
    assert len(gets) >= 2 and gets[0].status == 200, gets
    assert all(g.status == 206 for g in gets[1:]), gets
    assert sum(g.size for g in gets[1:]) <= size - piece, gets


@pytest.mark.timeout(300)
def test_containerd_pulls_an_ordinary_stream_of_a_blob_arriving_as_pieces(
    registry: RegistryProcess,
    image_builder: Any,
    fault_proxy: Any,
    agents: Any,
    containerd: Any,
    tmp_path: Any,
) -> None:
    from tests.support.containerd import ctr_pull, image_state, write_hosts

    size = 40 * MiB
    image = image_builder.build(registry, "fan/ctr", "v1", layer_sizes=[size, 200_000])
    layer = big_layer(image)
    slow = fault_proxy(registry)
    slow.throttle(30 * MiB, path_contains="/blobs/")
    nodes = cluster(agents, 4, slow.url, registry)
    puller = next(n for n in nodes if n is not home_of(nodes, layer))
    others = [n for n in nodes if n is not puller]
    hosts = write_hosts(tmp_path / "hosts", registry.host, puller.url, slow.url)
    ctd = containerd()
    mark = registry.mark()
    # the other nodes pre-warm while containerd pulls through one that is not the home (no
    # containerd link on these agents: containerd reads the blob from the agent's stream)
    results, threads = start_fan_out(others, image.reference)
    result, _ = ctr_pull(ctd, image.reference, hosts)
    for t in threads:
        t.join(300)
    assert result.returncode == 0, result.stderr
    assert all(code == 200 for code, _ in results), results
    state = image_state(ctd, image.reference)
    assert state is not None and state.digest == image.manifest_digest
    assert_every_node_holds(nodes, image)
    assert registry.blob_gets(layer, since=mark, successful_only=True) == 1
    # the puller's copy came as pieces: its peers answered piece requests, not whole blobs
    # (containerd verified the stream it got against the layer's digest itself)
    got = metric(puller, "warmstart_agent_fetched_bytes_total", 'source="peer"')
    assert got >= image.blobs[layer], got
    assert sum(sent_to_peers(n)[0] for n in others) >= image.blobs[layer]
    ctr_gets = [
        line
        for line in puller.log.read_text().splitlines()
        if f"GET /v2/fan/ctr/blobs/{layer}" in line and "containerd" in line
    ]
    assert ctr_gets and all('HTTP/1.1" 200 ' in line for line in ctr_gets), ctr_gets


def test_the_home_killed_when_the_next_node_takes_no_part(
    registry: RegistryProcess, image_builder: Any, fault_proxy: Any, agents: Any
) -> None:
    """The node next in rendezvous order after the home pre-warms nothing: it keeps no piece
    list to answer with. The others still finish: from each other, and from the upstream for
    what nobody held (each on its own, so the upstream may be asked more than once)."""
    from warmstart.fetch.rendezvous import rank

    size = 48 * MiB
    image = image_builder.build(registry, "fan/idle", "v1", layer_sizes=[size])
    layer = big_layer(image)
    slow = fault_proxy(registry)
    slow.throttle(12 * MiB, path_contains="/blobs/")  # ~4 s from the upstream
    nodes = cluster(agents, 5, slow.url, registry)
    ranked = rank(layer, [n.url for n in nodes])
    home = next(n for n in nodes if n.url == ranked[0])
    idle = next(n for n in nodes if n.url == ranked[1])
    busy = [n for n in nodes if n is not idle]
    results, threads = start_fan_out(busy, f"{registry.host}/fan/idle:v1")
    wait_until(lambda: sent_to_peers(home)[0] >= 8 * MiB, 60, "the home to serve pieces")
    home.kill()
    for t in threads:
        t.join(300)
    survivors = [n for n in busy if n is not home]
    for node, (code, body) in zip(busy, results, strict=True):
        if node is not home:
            assert code == 200, body
    assert_every_node_holds(survivors, image)
    assert stored_blob(idle, layer) is None  # it took no part
