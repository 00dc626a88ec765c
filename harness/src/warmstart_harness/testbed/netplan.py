"""The cluster's address plan (a free 10.B.0.0/16, chosen under a lock) and the names of its
namespaces and interfaces (unique per instance, within IFNAMSIZ)."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from warmstart_harness.testbed.netns import NETNS_DIR, run_cmd

if TYPE_CHECKING:
    pass

IFNAMSIZ = 15  # longest interface name Linux accepts
MAX_NODES = 200
# Second octets tried for 10.B.0.0/16, in order. 10.213/16 belongs to bench.agent.ShapedLink.
RESERVED_OCTETS = frozenset({213})
CANDIDATE_OCTETS: tuple[int, ...] = (*range(214, 255), *range(150, 213))
_LOCK_FILE = (
    Path("/run/lock") if Path("/run/lock").is_dir() else Path(tempfile.gettempdir())
) / "warmstart-netcluster.lock"
_instance_counter = iter(range(1, 1 << 30))


# -- addresses and names --------------------------------------------------------------------------


@dataclass(frozen=True)
class AddressPlan:
    """Every address of one cluster, all inside ``10.<octet>.0.0/16``."""

    octet: int

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.{self.octet}.0.0/16")

    def _ip(self, third: int, fourth: int) -> str:
        return f"10.{self.octet}.{third}.{fourth}"

    @property
    def upstream_addr(self) -> str:
        """The registry's address (a /32 on the upstream namespace's lo)."""
        return self._ip(0, 1)

    @property
    def trunk_upstream(self) -> str:
        return self._ip(1, 1)

    @property
    def trunk_wan(self) -> str:
        return self._ip(1, 2)

    @property
    def ctl_root(self) -> str:
        """The root namespace's end of its unshaped link to the upstream."""
        return self._ip(2, 1)

    @property
    def ctl_upstream(self) -> str:
        return self._ip(2, 2)

    @property
    def control_addr(self) -> str:
        """The root namespace's address on the LAN."""
        return self._ip(3, 1)

    def lan_addr(self, index: int) -> str:
        return self._ip(3, 10 + index)

    def uplink_gateway(self, index: int) -> str:
        """The wan router's end of node ``index``'s uplink."""
        return self._ip(16 + index, 1)

    def uplink_addr(self, index: int) -> str:
        return self._ip(16 + index, 2)


def used_networks() -> list[ipaddress.IPv4Network]:
    """IPv4 networks of the root namespace's addresses and routes (all tables, no default)."""
    nets: list[ipaddress.IPv4Network] = []
    for entry in json.loads(run_cmd(["ip", "-j", "-4", "addr", "show"]).stdout or "[]"):
        for info in entry.get("addr_info", []):
            iface = ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}")
            nets.append(iface.network)
    for route in json.loads(
        run_cmd(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout or "[]"
    ):
        dst = route.get("dst", "default")
        if dst != "default":
            nets.append(ipaddress.IPv4Network(dst, strict=False))
    return nets


def choose_octet(used: Iterable[ipaddress.IPv4Network]) -> int:
    """The first candidate ``B`` whose 10.B.0.0/16 overlaps none of ``used``."""
    used = list(used)
    for octet in CANDIDATE_OCTETS:
        if octet in RESERVED_OCTETS:
            continue
        subnet = AddressPlan(octet).subnet
        if not any(subnet.overlaps(net) for net in used):
            return octet
    raise RuntimeError("no free 10.x.0.0/16 for the network cluster (every candidate in use)")


def _to_base(n: int, digits: str) -> str:
    out = ""
    while True:
        n, r = divmod(n, len(digits))
        out = digits[r] + out
        if n == 0:
            return out


@dataclass(frozen=True)
class Names:
    """Namespace and interface names of one cluster, derived from ``ws<pid hex>k<counter hex>``.

    Namespace names have no length limit; the two root-namespace interfaces stay within 15
    characters. Interfaces inside the cluster's own namespaces use fixed short names.
    """

    tag: str

    @classmethod
    def for_instance(cls, pid: int, counter: int) -> Names:
        return cls(f"ws{pid:x}k{_to_base(counter, '0123456789abcdef')}")

    @property
    def upstream_ns(self) -> str:
        return f"{self.tag}-up"

    @property
    def wan_ns(self) -> str:
        return f"{self.tag}-wan"

    @property
    def lan_ns(self) -> str:
        return f"{self.tag}-lan"

    def node_ns(self, index: int) -> str:
        return f"{self.tag}-n{index}"

    @property
    def root_ctl_if(self) -> str:
        """Root end of the unshaped root<->upstream link."""
        return f"{self.tag}c"

    @property
    def root_lan_if(self) -> str:
        """Root end of the root<->LAN-bridge link."""
        return f"{self.tag}l"

    def namespaces(self, nodes: int) -> list[str]:
        return [self.upstream_ns, self.wan_ns, self.lan_ns, *map(self.node_ns, range(nodes))]

    def in_use(self, nodes: int) -> bool:
        """Whether any of these names exists already (a leftover of a dead process)."""
        if any((NETNS_DIR / ns).exists() for ns in self.namespaces(nodes)):
            return True
        return any(Path("/sys/class/net", i).exists() for i in (self.root_ctl_if, self.root_lan_if))


def unique_names(nodes: int) -> Names:
    for _ in range(1000):
        names = Names.for_instance(os.getpid(), next(_instance_counter))
        if len(names.root_ctl_if) > IFNAMSIZ:
            break
        if not names.in_use(nodes):
            return names
    raise RuntimeError("could not find unused names for the network cluster")


@contextlib.contextmanager
def subnet_lock() -> Iterator[None]:
    """Serialise choosing a subnet and claiming it with root addresses, across processes."""
    with open(_LOCK_FILE, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
