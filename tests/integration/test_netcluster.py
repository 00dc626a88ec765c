"""The network-namespace cluster testbed: reachability, shaping placement, and cleanup.

Everything here is real (``ip netns``, veths, a bridge, ``tc tbf``, docker-registry, skopeo);
nothing is timed except one informational throughput print.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.images import ImageBuilder, push_blob
from tests.support.tools import in_ci, require_tool
from warmstart_harness.testbed.net import port_open, wait_until
from warmstart_harness.testbed.netcluster import NetCluster, NetNode, parse_rate
from warmstart_harness.testbed.netns import nsenter_prefix
from warmstart_harness.testbed.netplan import IFNAMSIZ, AddressPlan, choose_octet, used_networks
from warmstart_harness.testbed.registry import RegistryProcess

RATE = "200mbit"
UPSTREAM_RATE = "400mbit"
LAN_PORT = 8080
# Run inside a namespace: GET argv[1] without any proxy, print "<status> <body>".
FETCH = (
    "import sys, urllib.request as u\n"
    "r = u.build_opener(u.ProxyHandler({})).open(sys.argv[1], timeout=10)\n"
    "print(r.status, r.read().decode())\n"
)


def _require_netns_tools() -> None:
    for tool in ("ip", "tc", "nsenter", "docker-registry"):
        require_tool(tool)
    if os.geteuid() != 0:
        message = "network namespaces need root"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="module")
def cluster() -> Iterator[NetCluster]:
    """A 2-node cluster, per-node rate 200mbit, aggregate upstream cap 400mbit."""
    _require_netns_tools()
    with NetCluster(2, rate=RATE, upstream_rate=UPSTREAM_RATE) as c:
        with pytest.MonkeyPatch.context() as mp:
            # skopeo and curl honour *_PROXY; the cluster's addresses must never go through one
            no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY"), str(c.plan.subnet)]))
            mp.setenv("NO_PROXY", no_proxy)
            mp.setenv("no_proxy", no_proxy)
            yield c


@pytest.fixture(scope="module")
def upstream(cluster: NetCluster) -> RegistryProcess:
    """The upstream registry on ``cluster.upstream_addr`` (stopped by the cluster's close)."""
    return cluster.start_upstream_registry()


@pytest.fixture(scope="module")
def lan_servers(cluster: NetCluster) -> Iterator[None]:
    """``python -m http.server`` on every node's LAN address, serving ``whoami`` = node name."""
    with tempfile.TemporaryDirectory(prefix="ws-netcluster-") as tmp:
        for node in cluster.nodes:
            root = Path(tmp, node.name)
            root.mkdir()
            (root / "whoami").write_text(node.name)
            cluster.popen(
                node.netns,
                [sys.executable, "-m", "http.server", "--bind", node.lan_addr,
                 "--directory", str(root), str(LAN_PORT)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        for node in cluster.nodes:
            assert wait_until(lambda n=node: port_open(LAN_PORT, n.lan_addr), 10), node
        yield


def _get(host: str, port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _fetch_from(node: NetNode, url: str) -> str:
    proc = subprocess.run(
        [*node.prefix, sys.executable, "-c", FETCH, url], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def _tbf_rate(cluster: NetCluster, netns: str, dev: str) -> int | None:
    """The rate (bit/s) of the tbf qdisc on ``dev`` in ``netns``, or None if it has none."""
    out = cluster.run(netns, "tc", "qdisc", "show", "dev", dev).stdout
    m = re.search(r"qdisc tbf \S+ .*?\brate (\S+)", out)
    return parse_rate(m.group(1)) if m else None


def _leftovers(tag: str) -> tuple[list[str], list[str]]:
    """Namespaces and root links whose names start with ``tag``."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    ns = [line.split()[0] for line in netns.splitlines() if line.startswith(tag)]
    ifs = [
        m.group(1)
        for m in re.finditer(r"^\d+: ([^:@\s]+)", links, re.M)
        if m.group(1).startswith(tag)
    ]
    return ns, ifs


# -- addresses and names (pure) ----------------------------------------------------------------


def test_subnet_choice_skips_used_and_reserved_ranges() -> None:
    assert choose_octet([]) == 214
    used = [ipaddress.IPv4Network("10.214.0.0/16"), ipaddress.IPv4Network("10.215.3.0/24")]
    assert choose_octet(used) == 216
    assert 213 not in {
        choose_octet([ipaddress.IPv4Network(f"10.{b}.0.0/16") for b in range(214, 255)])
    }
    with pytest.raises(RuntimeError, match="no free"):
        choose_octet([ipaddress.IPv4Network("10.0.0.0/8")])


def test_rates_parse_like_tc() -> None:
    assert parse_rate("800mbit") == 800_000_000
    assert parse_rate("100mbps") == 800_000_000
    assert parse_rate("1gbit") == 10**9
    with pytest.raises(ValueError):
        parse_rate("fast")
    with pytest.raises(ValueError):
        NetCluster(2, rate="fast")


# -- the running cluster -------------------------------------------------------------------------


def test_names_and_addresses(cluster: NetCluster) -> None:
    assert cluster.plan is not None and cluster.plan.octet != 213
    assert cluster.upstream_addr == f"10.{cluster.plan.octet}.0.1"
    assert all(len(name) <= IFNAMSIZ for name in cluster.root_links)
    assert [n.netns_path for n in cluster.nodes] == [
        f"/run/netns/{ns}" for ns in cluster.namespaces[3:]
    ]
    assert cluster.nodes[0].prefix == nsenter_prefix(cluster.nodes[0].netns)
    assert cluster.nodes[0].prefix == ["nsenter", f"--net=/run/netns/{cluster.nodes[0].netns}"]
    # no address of the machine outside the cluster's own links falls into its subnet
    own = {cluster.plan.ctl_root, cluster.plan.control_addr}
    out = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True).stdout
    foreign = [
        a["local"]
        for entry in json.loads(out)
        for a in entry["addr_info"]
        if ipaddress.IPv4Address(a["local"]) in cluster.plan.subnet and a["local"] not in own
    ]
    assert foreign == []


def test_root_reaches_every_node_lan_address(cluster: NetCluster, lan_servers: None) -> None:
    for node in cluster.nodes:
        assert _get(node.lan_addr, LAN_PORT, "/whoami") == (200, node.name.encode())


def test_nodes_reach_each_other_over_the_lan(cluster: NetCluster, lan_servers: None) -> None:
    a, b = cluster.nodes
    assert _fetch_from(a, f"http://{b.lan_addr}:{LAN_PORT}/whoami") == f"200 {b.name}"
    assert _fetch_from(b, f"http://{a.lan_addr}:{LAN_PORT}/whoami") == f"200 {a.name}"


def test_nodes_reach_the_control_address(cluster: NetCluster) -> None:
    """A controller in the root namespace listening on control_addr is reachable from nodes."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "whoami").write_text("controller")

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, directory=tmp, **kwargs)  # type: ignore[arg-type]

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer((cluster.control_addr, 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://{cluster.control_addr}:{server.server_port}/whoami"
            for node in cluster.nodes:
                assert _fetch_from(node, url) == "200 controller"
        finally:
            server.shutdown()
            server.server_close()


def test_nodes_reach_the_upstream_registry(cluster: NetCluster, upstream: RegistryProcess) -> None:
    assert upstream.host.startswith(f"{cluster.upstream_addr}:")
    mark = upstream.mark()  # barrier request from inside the upstream namespace
    for node in cluster.nodes:
        assert _fetch_from(node, f"{upstream.url}/v2/") == "200 {}"
    assert [r.path for r in upstream.requests(mark)] == ["/v2/", "/v2/"]
    # the root namespace reaches it too, over its unshaped link
    assert _get(cluster.upstream_addr, upstream.port, "/v2/")[0] == 200


def test_tbf_shapes_what_each_node_receives(cluster: NetCluster) -> None:
    for node in cluster.nodes:
        # the wan router's end of the uplink: its egress is what the node receives
        assert _tbf_rate(cluster, cluster.wan_netns, node.shaped_dev) == parse_rate(RATE)
        # the node's own end (what it sends) and its LAN link are not shaped
        assert _tbf_rate(cluster, node.netns, "uplink") is None
        assert _tbf_rate(cluster, node.netns, "lan") is None
    # the aggregate cap: the upstream's end of the one trunk every node's download crosses
    assert _tbf_rate(cluster, cluster.upstream_netns, "trunk") == parse_rate(UPSTREAM_RATE)
    assert _tbf_rate(cluster, cluster.upstream_netns, "ctl") is None


def test_skopeo_push_from_root_and_pull_through_a_node_proxy(
    cluster: NetCluster, upstream: RegistryProcess, image_builder: ImageBuilder
) -> None:
    image = image_builder.build(upstream, "netcluster/app", "v1", layer_sizes=[1 << 20])
    node = cluster.nodes[0]
    proxy = cluster.start_node_proxy(node, upstream)
    assert proxy.host.startswith("127.0.0.1:")  # the node's loopback, not the root's
    assert not port_open(proxy.port)  # ... so the root namespace cannot see it
    mark = upstream.mark()
    layer = image.layer_digests[0]
    status, _, body = proxy.http("GET", f"/v2/netcluster/app/blobs/{layer}")
    assert status == 200 and len(body) == image.layer_sizes[0]
    assert upstream.blob_gets(layer, since=mark, successful_only=True) >= 1
    # again: the node's proxy serves it from its own cache
    mark = upstream.mark()
    assert proxy.http("GET", f"/v2/netcluster/app/blobs/{layer}")[0] == 200
    assert upstream.blob_gets(layer, since=mark) == 0


def test_a_node_proxy_on_the_lan(cluster: NetCluster, upstream: RegistryProcess) -> None:
    a, b = cluster.nodes
    proxy = cluster.start_node_proxy(b, upstream, on_lan=True)
    assert proxy.host == f"{b.lan_addr}:{proxy.port}"
    assert _get(b.lan_addr, proxy.port, "/v2/")[0] == 200  # from the root namespace
    assert _fetch_from(a, f"{proxy.url}/v2/") == "200 {}"  # from the other node


def test_informational_throughput(cluster: NetCluster, upstream: RegistryProcess) -> None:
    """Prints the rate one node downloads at through its shaped uplink (no assertion on it)."""
    size = 8 << 20
    digest = push_blob(upstream, "netcluster/blob", os.urandom(size))
    script = (
        "import sys, time, urllib.request as u\n"
        "t = time.perf_counter()\n"
        "n = len(u.build_opener(u.ProxyHandler({})).open(sys.argv[1], timeout=60).read())\n"
        "print(n, time.perf_counter() - t)\n"
    )
    url = f"{upstream.url}/v2/netcluster/blob/blobs/{digest}"
    out = cluster.run(cluster.nodes[1].netns, sys.executable, "-c", script, url).stdout.split()
    assert int(out[0]) == size
    print(f"\nnode download at {RATE}: {size / float(out[1]) / 1e6:.1f} MB/s")


def test_a_second_cluster_gets_its_own_names_and_subnet(cluster: NetCluster) -> None:
    with NetCluster(1) as other:
        assert other.plan is not None and cluster.plan is not None
        assert not other.plan.subnet.overlaps(cluster.plan.subnet)
        assert set(other.namespaces).isdisjoint(cluster.namespaces)
        assert set(other.root_links).isdisjoint(cluster.root_links)
        # each cluster's subnet is in use now, so a third would avoid both
        assert choose_octet(used_networks()) not in {other.plan.octet, cluster.plan.octet}


# -- cleanup -------------------------------------------------------------------------------------


def test_close_removes_everything_after_an_exception_in_with() -> None:
    _require_netns_tools()
    c = NetCluster(2, lan_rate="1gbit", upstream_rate="1gbit")
    with pytest.raises(ZeroDivisionError), c:
        assert c.names is not None
        tag = c.names.tag
        ns, ifs = _leftovers(tag)
        assert len(ns) == 5 and sorted(ifs) == sorted(c.root_links)
        assert _tbf_rate(c, c.lan_netns, "n0") == parse_rate("1gbit")
        sleeper = c.popen(c.nodes[0].netns, ["sleep", "60"])
        _ = 1 / 0
    assert sleeper.poll() is not None
    assert _leftovers(tag) == ([], [])
    c.close()  # idempotent
    assert not c.is_open


def test_close_after_a_partial_open(monkeypatch: pytest.MonkeyPatch) -> None:
    _require_netns_tools()
    real = NetCluster._build_node
    seen: list[str] = []

    def failing(self: NetCluster, i: int, names: object, plan: AddressPlan) -> NetNode:
        assert self.names is not None
        seen.append(self.names.tag)
        if i == 1:
            raise RuntimeError("injected failure while building node 1")
        return real(self, i, names, plan)  # type: ignore[arg-type]

    monkeypatch.setattr(NetCluster, "_build_node", failing)
    with pytest.raises(RuntimeError, match="injected"):
        NetCluster(3).open()
    assert seen and _leftovers(seen[0]) == ([], [])


_CHILD = """
import json, sys, time
from warmstart_harness.testbed.netcluster import NetCluster
c = NetCluster(1).open()
print(json.dumps({"tag": c.names.tag, "pid": c.popen(c.nodes[0].netns, ["sleep", "60"]).pid}))
sys.stdout.flush()
time.sleep(60)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_process_removes_everything(sig: signal.Signals) -> None:
    _require_netns_tools()
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        started = json.loads(child.stdout.readline())
        assert _leftovers(started["tag"])[0]
        os.kill(child.pid, sig)
        child.wait(timeout=30)
        # SIGTERM became SystemExit(128 + 15); Ctrl-C a KeyboardInterrupt (Python then re-raises
        # SIGINT on itself after the atexit hooks ran)
        assert child.returncode == (128 + sig if sig == signal.SIGTERM else -sig)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert _leftovers(started["tag"]) == ([], []), child.stderr.read() if child.stderr else ""
    assert not Path(f"/proc/{started['pid']}").exists() or _is_zombie(started["pid"])


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True
