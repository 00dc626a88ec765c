"""A cluster in network namespaces: one remote registry host and N cloud nodes, on one machine.

:class:`NetCluster` builds this topology (``B`` is the second octet of a ``10.B.0.0/16`` that no
address or route of the machine uses, chosen when it opens; 10.213/16 is never used, the shaped
link of ``bench/agent.py`` lives there)::

    root ns ── ctl veth, unshaped ───────────────────── [upstream ns]  10.B.0.1/32 on lo
      │ 10.B.2.1 (route 10.B.0.1/32 via 10.B.2.2)        │  (the registry listens here)
      │                                                  │ trunk 10.B.1.1   tbf upstream_rate
      │                                                  │ trunk 10.B.1.2   (optional: every
      │                                              [wan ns] router        node shares it)
      │                                        n0 10.B.16.1 … nK 10.B.(16+K).1   tbf rate
      │                                              │ uplink 10.B.(16+i).2
      │ 10.B.3.1/24 (control_addr)             [node i ns]  route 10.B.0.1/32 via uplink
      └── [lan ns: bridge br0] ── n{i} ───────── lan 10.B.3.(10+i)/24   (tbf lan_rate, optional)

- Each node *receives* from the upstream through its own ``tbf`` (on the wan side of its
  uplink, ``NetNode.shaped_dev`` in :attr:`NetCluster.wan_netns`), default 800mbit = 100 MB/s.
- ``upstream_rate`` caps what all nodes together receive: the registry sits behind one ``trunk``
  veth whose upstream end carries a ``tbf``; every node's traffic crosses it before the wan
  router splits it to the per-node uplinks.
- The root namespace reaches the registry over its own unshaped ``ctl`` link (pushing test images
  with skopeo, barrier requests), and every node's LAN address over the LAN; nodes reach each
  other over the LAN. The LAN bridge lives in its own namespace rather than the root one: with
  ``br_netfilter`` loaded (Docker hosts) bridged frames in the root namespace go through the
  root's iptables FORWARD chain, which Docker sets to DROP. The root only gets two veth ends.
- ``lan_rate`` (optional) shapes each node's LAN link in both directions (what it receives, on
  the bridge port; what it sends, on the node's ``lan``).

:meth:`NetCluster.close` stops the processes started through the cluster (by PID), then deletes
the namespaces it created (their veths, qdiscs and routes go with them) and the two root veth
ends if they are still there. It runs after a partial open, is idempotent, runs from a weakref
finalizer (garbage collection and interpreter exit) and, through a SIGTERM/SIGHUP handler that
turns the signal into ``SystemExit`` (installed only where the handler is still the default),
when the benchmark is terminated; Ctrl-C raises ``KeyboardInterrupt`` and unwinds the same way.
Nothing is deleted that this instance did not create.
"""

from __future__ import annotations

import re
import subprocess
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from warmstart_harness.testbed.netcluster_cleanup import (
    EXIT_SIGNALS,
    Resources,
    S,
    cleanup_resources,
)
from warmstart_harness.testbed.netns import (
    link_stats,
    netns_path,
    nsenter_prefix,
    run_cmd,
    run_in_netns,
)
from warmstart_harness.testbed.netplan import (
    MAX_NODES,
    AddressPlan,
    Names,
    choose_octet,
    subnet_lock,
    unique_names,
    used_networks,
)

if TYPE_CHECKING:
    from warmstart_harness.testbed.registry import RegistryProcess

DEFAULT_RATE = "800mbit"  # 100 MB/s
TBF_LATENCY = "50ms"


# -- rates ----------------------------------------------------------------------------------------

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_RATE_UNITS = {  # tc(8) units, in bits per second
    "": 1,
    "bit": 1,
    "kbit": 10**3,
    "mbit": 10**6,
    "gbit": 10**9,
    "kibit": 2**10,
    "mibit": 2**20,
    "gibit": 2**30,
    "bps": 8,
    "kbps": 8 * 10**3,
    "mbps": 8 * 10**6,
    "gbps": 8 * 10**9,
    "kibps": 8 * 2**10,
    "mibps": 8 * 2**20,
    "gibps": 8 * 2**30,
}


def parse_rate(rate: str) -> int:
    """Bits per second of a tc rate such as ``800mbit`` or ``100mbps`` (= megabytes/s)."""
    m = _RATE.match(rate)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _RATE_UNITS:
        raise ValueError(f"not a tc rate: {rate!r} (examples: 800mbit, 1gbit, 100mbps)")
    bits = int(float(m.group(1)) * _RATE_UNITS[unit])
    if bits <= 0:
        raise ValueError(f"rate must be positive: {rate!r}")
    return bits


def tbf_burst(rate: str) -> int:
    """Bucket size in bytes for ``rate``: 10 ms worth of bytes, at least 64 KiB (one GSO frame)."""
    return max(parse_rate(rate) // 8 // 100, 64 * 1024)


# -- nodes ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetNode:
    """One node: its namespace, its LAN address and its shaped uplink to the upstream."""

    index: int
    netns: str
    lan_addr: str  # reachable from the root namespace and from the other nodes
    uplink_addr: str  # the node's source address towards the upstream
    uplink_gateway: str
    shaped_dev: str  # device in the wan namespace whose egress (= this node's download) is shaped

    @property
    def name(self) -> str:
        return f"node{self.index}"

    @property
    def netns_path(self) -> str:
        return netns_path(self.netns)

    @property
    def prefix(self) -> list[str]:
        """``["nsenter", "--net=/run/netns/NAME"]``: prepend to run a command on this node."""
        return nsenter_prefix(self.netns)

    def command(self, *args: str) -> list[str]:
        return [*self.prefix, *args]


# -- the cluster ----------------------------------------------------------------------------------


class NetCluster:
    """A remote registry host and ``nodes`` cloud nodes in network namespaces (see module doc).

    ``rate`` shapes what each node receives from the upstream, ``upstream_rate`` (optional) what
    all nodes together receive, ``lan_rate`` (optional) each node's LAN link both ways.
    """

    def __init__(
        self,
        nodes: int = 4,
        *,
        rate: str = DEFAULT_RATE,
        upstream_rate: str | None = None,
        lan_rate: str | None = None,
    ) -> None:
        if not 1 <= nodes <= MAX_NODES:
            raise ValueError(f"nodes must be between 1 and {MAX_NODES}, not {nodes}")
        for r in (rate, upstream_rate, lan_rate):
            if r is not None:
                parse_rate(r)
        self.node_count = nodes
        self.rate = rate
        self.upstream_rate = upstream_rate
        self.lan_rate = lan_rate
        self.names: Names | None = None
        self.plan: AddressPlan | None = None
        self.nodes: list[NetNode] = []
        self._resources = Resources()
        self._finalizer: weakref.finalize[[Resources], NetCluster] | None = None
        self._signals_held = False

    # -- addresses ---------------------------------------------------------------------------
    def _require_open(self) -> tuple[Names, AddressPlan]:
        if self.names is None or self.plan is None:
            raise RuntimeError("the network cluster is not open")
        return self.names, self.plan

    @property
    def upstream_addr(self) -> str:
        """The registry's address; every node and the root namespace reach it."""
        return self._require_open()[1].upstream_addr

    @property
    def control_addr(self) -> str:
        """The root namespace's LAN address (controller, router); every node reaches it."""
        return self._require_open()[1].control_addr

    @property
    def upstream_netns(self) -> str:
        """Where the upstream registry runs."""
        return self._require_open()[0].upstream_ns

    def link_bytes(self) -> dict[str, dict[str, int]]:
        """Bytes that crossed each node's links so far (kernel counters): ``upstream_rx``
        (received through its shaped uplink), ``lan_rx`` and ``lan_tx`` (its LAN link)."""
        out: dict[str, dict[str, int]] = {}
        for node in self.nodes:
            uplink = link_stats(self.wan_netns, node.shaped_dev)
            lan = link_stats(node.netns, "lan")
            out[node.name] = {
                "upstream_rx": uplink.get("tx", 0),  # the wan side sends what the node receives
                "lan_rx": lan.get("rx", 0),
                "lan_tx": lan.get("tx", 0),
            }
        return out

    @property
    def wan_netns(self) -> str:
        """The router between the upstream and the nodes' shaped uplinks."""
        return self._require_open()[0].wan_ns

    @property
    def lan_netns(self) -> str:
        """Holds the LAN bridge ``br0``."""
        return self._require_open()[0].lan_ns

    @property
    def namespaces(self) -> list[str]:
        """Every namespace of the cluster (upstream, wan, lan, nodes)."""
        return self._require_open()[0].namespaces(self.node_count)

    @property
    def root_links(self) -> list[str]:
        """The cluster's interfaces in the root namespace."""
        names = self._require_open()[0]
        return [names.root_ctl_if, names.root_lan_if]

    @property
    def is_open(self) -> bool:
        return self.names is not None

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> Self:
        """Create the namespaces, links, addresses, routes and qdiscs; on failure undo all."""
        if self.is_open:
            return self
        self._finalizer = weakref.finalize(self, cleanup_resources, self._resources)
        EXIT_SIGNALS.acquire()
        self._signals_held = True
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        names = self.names = unique_names(self.node_count)
        for ns in names.namespaces(self.node_count):
            self._add_netns(ns)
        with subnet_lock():
            plan = self.plan = AddressPlan(choose_octet(used_networks()))
            self._build_root_links(names, plan)
        self._build_upstream(names, plan)
        self._build_lan(names)
        for i in range(self.node_count):
            self.nodes.append(self._build_node(i, names, plan))

    def _add_netns(self, ns: str) -> None:
        run_cmd(["ip", "netns", "add", ns])
        self._resources.namespaces.append(ns)
        run_cmd(["ip", "-n", ns, "link", "set", "lo", "up"])

    def _add_veth(self, name: str, peer: str, peer_ns: str, ns: str | None = None) -> None:
        """``name`` in ``ns`` (root if None) paired with ``peer`` in ``peer_ns``."""
        where = ["-n", ns] if ns else []
        run_cmd(["ip", *where, "link", "add", name, "type", "veth", "peer", "name", peer,
              "netns", peer_ns])  # fmt: skip
        if ns is None:
            self._resources.root_links.append(name)

    @staticmethod
    def _ip(ns: str | None, *args: str) -> None:
        run_cmd(["ip", *(["-n", ns] if ns else []), *args])

    def _addr_up(self, ns: str | None, dev: str, cidr: str) -> None:
        self._ip(ns, "addr", "add", cidr, "dev", dev)
        self._ip(ns, "link", "set", dev, "up")

    @staticmethod
    def _tbf(ns: str, dev: str, rate: str) -> None:
        run_cmd(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
              "burst", str(tbf_burst(rate)), "latency", TBF_LATENCY])  # fmt: skip

    def _build_root_links(self, names: Names, plan: AddressPlan) -> None:
        """The root's two veth ends (claiming the subnet) and its route to the upstream."""
        self._add_veth(names.root_ctl_if, "ctl", names.upstream_ns)
        self._addr_up(None, names.root_ctl_if, f"{plan.ctl_root}/30")
        self._ip(None, "route", "add", f"{plan.upstream_addr}/32", "via", plan.ctl_upstream,
                 "dev", names.root_ctl_if)  # fmt: skip
        self._add_veth(names.root_lan_if, "root", names.lan_ns)
        self._addr_up(None, names.root_lan_if, f"{plan.control_addr}/24")

    def _build_upstream(self, names: Names, plan: AddressPlan) -> None:
        """The upstream address, its end of the ctl link, the trunk to the wan router."""
        up, wan = names.upstream_ns, names.wan_ns
        self._ip(up, "addr", "add", f"{plan.upstream_addr}/32", "dev", "lo")
        self._addr_up(up, "ctl", f"{plan.ctl_upstream}/30")
        self._add_veth("trunk", "trunk", wan, ns=up)
        self._addr_up(up, "trunk", f"{plan.trunk_upstream}/30")
        self._addr_up(wan, "trunk", f"{plan.trunk_wan}/30")
        self._ip(up, "route", "add", "default", "via", plan.trunk_wan, "dev", "trunk")
        self._ip(wan, "route", "add", f"{plan.upstream_addr}/32", "via", plan.trunk_upstream)
        run_in_netns(wan, lambda: Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n"))
        if self.upstream_rate is not None:
            self._tbf(up, "trunk", self.upstream_rate)

    def _build_lan(self, names: Names) -> None:
        lan = names.lan_ns
        self._ip(lan, "link", "add", "br0", "type", "bridge")
        self._ip(lan, "link", "set", "br0", "up")
        self._ip(lan, "link", "set", "root", "master", "br0", "up")

    def _build_node(self, i: int, names: Names, plan: AddressPlan) -> NetNode:
        ns, wan, lan = names.node_ns(i), names.wan_ns, names.lan_ns
        port = f"n{i}"
        self._add_veth(port, "uplink", ns, ns=wan)
        self._addr_up(wan, port, f"{plan.uplink_gateway(i)}/30")
        self._addr_up(ns, "uplink", f"{plan.uplink_addr(i)}/30")
        self._ip(ns, "route", "add", f"{plan.upstream_addr}/32", "via", plan.uplink_gateway(i))
        self._tbf(wan, port, self.rate)
        self._add_veth("lan", port, lan, ns=ns)
        self._addr_up(ns, "lan", f"{plan.lan_addr(i)}/24")
        self._ip(lan, "link", "set", port, "master", "br0", "up")
        if self.lan_rate is not None:
            self._tbf(lan, port, self.lan_rate)
            self._tbf(ns, "lan", self.lan_rate)
        return NetNode(i, ns, plan.lan_addr(i), plan.uplink_addr(i), plan.uplink_gateway(i), port)

    def close(self) -> None:
        """Stop tracked processes and delete everything this cluster created (idempotent)."""
        try:
            self._resources.cleanup()
        finally:
            if self._resources.empty and self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
            if self._signals_held:
                self._signals_held = False
                EXIT_SIGNALS.release()
            self.names = self.plan = None
            self.nodes = []

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running things inside ---------------------------------------------------------------
    def run(
        self, netns: str, *args: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion inside ``netns`` (stdout/stderr captured as text)."""
        return run_cmd([*nsenter_prefix(netns), *args], check=check, timeout=timeout)

    def popen(self, netns: str, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a process inside ``netns``; :meth:`close` stops it (by PID) if still running."""
        self._require_open()
        proc = subprocess.Popen([*nsenter_prefix(netns), *args], **kwargs)
        self._resources.processes.append(proc)
        return proc

    def track(self, process: S) -> S:
        """Have :meth:`close` call ``process.stop()`` first (an AgentProcess, ContainerdProcess)."""
        self._resources.processes.append(process)
        return process

    def start_upstream_registry(
        self, workdir: Path | None = None, **kwargs: Any
    ) -> RegistryProcess:
        """A docker-registry in the upstream namespace on ``upstream_addr`` (stopped by close)."""
        from warmstart_harness.testbed.registry import RegistryProcess

        self._require_open()
        return self.track(
            RegistryProcess(
                workdir, netns=self.upstream_netns, bind_host=self.upstream_addr, **kwargs
            )
        )

    def start_node_proxy(
        self,
        node: NetNode,
        upstream: RegistryProcess,
        workdir: Path | None = None,
        *,
        on_lan: bool = False,
        **kwargs: Any,
    ) -> RegistryProcess:
        """A pull-through docker-registry on ``node`` (its 127.0.0.1, or its LAN address with
        ``on_lan``) whose proxy.remoteurl is ``upstream`` (fetched through the shaped uplink)."""
        from warmstart_harness.testbed.registry import RegistryProcess

        self._require_open()
        return self.track(
            RegistryProcess(
                workdir,
                netns=node.netns,
                bind_host=node.lan_addr if on_lan else "127.0.0.1",
                proxy_remoteurl=upstream.url,
                **kwargs,
            )
        )
