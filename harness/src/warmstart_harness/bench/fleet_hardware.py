"""The fleet the simulator runs (pure): its parameters (:class:`FleetParams`: nodes, their
links, disks and hashing, the blobs every node wants) and its links built from them
(:class:`Fleet`), for :mod:`warmstart_harness.bench.fleet_sim`'s :class:`FlowSim`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from warmstart_harness.bench.fleet_flows import INF, Link

MiB = 1 << 20
SHA_NI_HASH_RATE = 1.7e9  # sha256 on one core with SHA extensions (B/s)
PLAIN_HASH_RATE = 390e6  # without them (this project's 2-core VM before SHA-NI, openssl speed)


@dataclass(frozen=True)
class FleetParams:
    """The nodes, their links and costs, and the blobs every node wants at time 0.

    Rates are bytes/s; ``None`` means unlimited. ``nic_rate`` is each node's NIC, the same up
    and down. What a node can take in is also bounded by ``disk_rate`` and by ``hash_cores``
    cores hashing at ``hash_rate`` each, and one stream (a whole blob, or one piece) is hashed on
    one core: at most ``hash_rate``. Traffic from the upstream crosses the node's NIC, unless
    ``wan_rate`` gives every node a separate path from the upstream (the network-namespace test
    bed: a shaped uplink per node, the LAN apart). ``upstream_rate`` bounds what the upstream
    registry sends in all. ``shared_cpus`` (test bed: every node on one machine) adds one CPU
    link of that many cores that every transfer uses, ``cpu_recv_per_byte`` (the receiver) plus
    ``cpu_send_per_byte`` (the sender) core-seconds per byte.

    Per-request costs (seconds before the first byte moves): ``request_latency`` for a GET to
    a peer, ``tracker_latency`` for asking the home who holds what, ``upstream_latency`` for the
    home's first byte from the registry (token, redirect, first byte).
    """

    nodes: int
    blob_sizes: tuple[int, ...]
    nic_rate: float | None
    upstream_rate: float | None = None
    wan_rate: float | None = None
    hash_rate: float = SHA_NI_HASH_RATE
    hash_cores: int = 4
    disk_rate: float | None = 4e9
    request_latency: float = 0.002
    tracker_latency: float = 0.002
    upstream_latency: float = 0.1
    shared_cpus: float | None = None
    cpu_recv_per_byte: float = 0.0
    cpu_send_per_byte: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError("a fleet needs at least one node")
        if not self.blob_sizes or any(s <= 0 for s in self.blob_sizes):
            raise ValueError("every blob needs a positive size")
        for name in ("nic_rate", "upstream_rate", "wan_rate", "disk_rate", "shared_cpus"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None")
        if not self.hash_rate > 0 or self.hash_cores < 1:
            raise ValueError("hash_rate must be positive and hash_cores at least 1")
        if min(self.request_latency, self.tracker_latency, self.upstream_latency) < 0:
            raise ValueError("latencies cannot be negative")

    @property
    def size(self) -> int:
        return sum(self.blob_sizes)

    @property
    def ingest_rate(self) -> float:
        """What one node can take in, NIC aside: disk writes and hashing on all its cores."""
        return min(self.disk_rate or INF, self.hash_cores * self.hash_rate)

    @property
    def floor_s(self) -> float:
        """No node can hold every byte sooner: the size over the slowest of the first hop's
        rates (upstream, the node's link from it, its ingest, one core's hash per blob)."""
        first_hop = min(
            self.upstream_rate or INF,
            self.wan_rate or self.nic_rate or INF,
            self.ingest_rate,
        )
        per_blob = max(s / min(first_hop, self.hash_rate) for s in self.blob_sizes)
        return max(self.size / first_hop, per_blob)


class Fleet:
    """The links of :class:`FleetParams`' nodes and the paths a transfer takes over them."""

    def __init__(self, params: FleetParams, hash_passes: int = 1) -> None:
        """``hash_passes``: how many times a node hashes each byte it takes in (2: pieces
        against the piece list, and the whole blob against its digest)."""
        p = params
        self.params = p
        n = p.nodes
        nic = p.nic_rate or INF
        self.upstream = Link("upstream", p.upstream_rate) if p.upstream_rate else None
        self.cpu = Link("cpu", p.shared_cpus) if p.shared_cpus else None
        self.up: list[Link | None] = [Link(f"up{i}", nic) if nic < INF else None for i in range(n)]
        ingest = min(p.disk_rate or INF, p.hash_cores * p.hash_rate / hash_passes)
        if p.wan_rate is None:  # upstream and LAN traffic share the NIC: one inbound link
            rx = min(nic, ingest)
            self.rx: list[Link | None] = [
                Link(f"rx{i}", rx) if rx < INF else None for i in range(n)
            ]
            self.lan_rx: list[Link | None] = [None] * n
            self.wan: list[Link | None] = [None] * n
        else:
            self.rx = [Link(f"ingest{i}", ingest) if ingest < INF else None for i in range(n)]
            self.lan_rx = [Link(f"lan{i}", nic) if nic < INF else None for i in range(n)]
            self.wan = [Link(f"wan{i}", p.wan_rate) for i in range(n)]

    def _path(
        self, links: Sequence[Link | None], send_cost: float
    ) -> tuple[tuple[Link, ...], tuple[float, ...] | None]:
        kept = tuple(link for link in links if link is not None)
        if self.cpu is None:
            return kept, None
        return (*kept, self.cpu), (*([1.0] * len(kept)), self.params.cpu_recv_per_byte + send_cost)

    def from_upstream(self, node: int) -> tuple[tuple[Link, ...], tuple[float, ...] | None]:
        """Links (and weights) of a transfer from the upstream registry to ``node``."""
        # The registry's sending is on the same machine in the test bed: it costs as a peer's.
        return self._path(
            (self.upstream, self.wan[node], self.rx[node]), self.params.cpu_send_per_byte
        )

    def between(self, src: int, dst: int) -> tuple[tuple[Link, ...], tuple[float, ...] | None]:
        """Links (and weights) of a transfer from node ``src`` to node ``dst``."""
        return self._path(
            (self.up[src], self.lan_rx[dst], self.rx[dst]), self.params.cpu_send_per_byte
        )
