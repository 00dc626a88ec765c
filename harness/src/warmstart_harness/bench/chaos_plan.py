"""What the chaos soak does, drawn from a seed (pure: no clock, no I/O).

:func:`plan_chaos` decides everything random before the run starts: the images (the size of
each one's big layer and the seeds of its bytes) and, for every fault injection, the node it
hits, the image whose pull it disturbs and the point where it fires (a fraction of a blob's
bytes, a byte offset, which blob). The same seed and configuration give the same plan, so a
run that found something can be repeated.

Fault classes (one table row each), in the order they run:

- ``agent-crash``: SIGKILL of a node's agent while it streams a layer for a containerd pull on
  that node, restarted at once (as systemd or a DaemonSet would); the same pull of a twin image
  (same layer sizes, other bytes) runs undisturbed first, for the 2x target. Two variants, in
  turn: ``linked`` (the product's default: the agent fetches the image's blobs into its store
  and hard-links them into containerd while containerd's manifest request waits) and
  ``streamed`` (linking off: containerd GETs every blob through the agent, which streams it
  while it arrives);
- ``home-crash``: SIGKILL of a layer's home agent (rendezvous hashing, as the agents compute
  it) while the other nodes stream that layer from it, restarted at once;
- ``fanout-crash``: every node pulls the same image at once (a fan-out: its big layer, above
  the agents' piece threshold, travels between the nodes as pieces) and a node that is not the
  layer's home is SIGKILLed once it holds part of the layer (and serves it to the others),
  restarted at once; the others must finish without asking the upstream again;
- ``wrong-peer``: a stand-in peer that answers blob GETs with bytes of the right length but the
  wrong content, made the home of a layer in one agent's peer list;
- ``disk-corrupt``: bytes of a stored blob overwritten behind the agent's back, then
  ``warmstart store verify``; once for a blob only the agent holds, once for one it has
  hard-linked into containerd (one inode, two names);
- ``upstream-outage``: the upstream registry stopped for a while and started again; cached
  images (hot, warm, on a peer only) are started on every node meanwhile, and an uncached one;
- ``store-budget``: a pull storm on a node whose agent has a small store budget;
- ``disk-full``: a pull storm on a node whose agent's store is a tiny tmpfs.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from warmstart.fetch import rendezvous

AGENT_CRASH = "agent-crash"
HOME_CRASH = "home-crash"
FANOUT_CRASH = "fanout-crash"
WRONG_PEER = "wrong-peer"
DISK_CORRUPT = "disk-corrupt"
UPSTREAM_OUTAGE = "upstream-outage"
STORE_BUDGET = "store-budget"
DISK_FULL = "disk-full"
FAULT_CLASSES = (
    AGENT_CRASH,
    HOME_CRASH,
    FANOUT_CRASH,
    WRONG_PEER,
    DISK_CORRUPT,
    UPSTREAM_OUTAGE,
    STORE_BUDGET,
    DISK_FULL,
)
# disk-corrupt variants
AGENT_ONLY = "agent-only"  # containerd holds no link to the blob
LINKED = "linked"  # the agent's file is also containerd's (hard link)
# agent-crash variants: LINKED (blobs linked into containerd, the default) or
STREAMED = "streamed"  # linking off: containerd streams every blob through the agent
# upstream-outage: what each start finds
HOT = "hot"  # unpacked in the node's containerd
WARM = "warm"  # in the node's agent store only
PEER = "peer"  # in another node's agent only
UNCACHED = "uncached"  # nowhere but the (stopped) upstream

MIB = 1 << 20
SMALL_LAYER = 2 * MIB  # every image: a shared base layer, one big layer and one small one
FRACTION_RANGE = (0.2, 0.8)  # where in a blob a kill fires
FANOUT_LAYER = 72 * MIB  # the fan-out's big layer: above the agents' default piece threshold


@dataclass(frozen=True)
class ChaosConfig:
    seed: int = 0
    nodes: int = 3
    quick: bool = False
    soak_seconds: float = 300.0
    outage_seconds: float = 30.0
    layer_mib: tuple[int, int] = (32, 96)  # the big layer of each image: drawn in this range
    crash_injections: int = 4  # agent-crash (the variants in turn)
    home_injections: int = 3  # home-crash
    fanout_injections: int = 2  # fanout-crash
    peer_injections: int = 2  # wrong-peer
    pull_timeout: float = 60.0  # one pull or start, retries included: later than this is hung
    pull_retries: int = 3  # retries of a pull whose body broke (as the runtime will)
    rate: str = "400mbit"  # each node's download from the upstream (50 MB/s)
    lan_rate: str | None = "400mbit"  # each node's LAN link (a peer transfer takes a while)
    storm: int = 4  # concurrent pulls of the store-budget and disk-full storms
    soak_clients: int = 8
    soak_images: int = 4
    sample_every: float = 5.0  # soak: RSS and fd sampling period
    flat_tolerance: float = 0.10
    time_limit: float = 600.0  # the whole run; classes not started by then are skipped
    classes: tuple[str, ...] = FAULT_CLASSES  # which fault classes run (all, by default)

    @classmethod
    def quick_config(cls, **overrides: Any) -> ChaosConfig:
        """About 2 minutes: one injection per class, 32 MiB layers, 10 s outage, 30 s soak."""
        values: dict[str, Any] = {
            "quick": True,
            "soak_seconds": 30.0,
            "outage_seconds": 10.0,
            "layer_mib": (24, 32),
            "crash_injections": 2,
            "home_injections": 1,
            "fanout_injections": 1,
            "peer_injections": 1,
            "pull_timeout": 30.0,
            "storm": 3,
            "sample_every": 2.0,
            "time_limit": 120.0,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def __post_init__(self) -> None:
        if self.nodes < 3:
            raise ValueError("the chaos soak needs at least 3 nodes (a home, a puller, a third)")
        low, high = self.layer_mib
        if not 1 <= low <= high:
            raise ValueError(f"layer sizes {self.layer_mib} must be 1 <= low <= high (MiB)")
        for name in ("soak_seconds", "outage_seconds", "pull_timeout", "sample_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        unknown = [c for c in self.classes if c not in FAULT_CLASSES]
        if unknown:
            raise ValueError(f"unknown fault class(es) {', '.join(unknown)}")
        counts = (
            self.crash_injections,
            self.home_injections,
            self.fanout_injections,
            self.peer_injections,
        )
        if min(counts) < 1 or self.storm < 2:
            raise ValueError("at least one injection per class and a storm of 2 or more")


@dataclass(frozen=True)
class ImageSpec:
    """One generated image: a shared base layer (``/bin/true`` and its libraries), a big layer
    of ``big_bytes`` random bytes and a small one, tagged ``tag`` in one repository."""

    tag: str
    big_bytes: int
    seed: int
    small_bytes: int = SMALL_LAYER


@dataclass(frozen=True)
class Injection:
    """One fault. ``node`` is the index of the node it hits (the puller for agent-crash and
    wrong-peer, the storm's node for the store classes, the victim's store for disk-corrupt;
    home-crash finds its victim from the layer, the outage hits every node)."""

    fault: str
    number: int  # 1-based within its class
    node: int
    image: str | None = None  # tag of the image whose pull it disturbs
    twin: str | None = None  # agent-crash: the undisturbed twin's tag
    fraction: float = 0.5  # how far into the blob the fault fires (or the corrupt offset)
    variant: str | None = None  # agent-crash: LINKED or STREAMED; disk-corrupt: AGENT_ONLY, LINKED
    layer: str = "big"  # which layer: "big" or "small"
    images: tuple[str, ...] = ()  # storms: the images pulled at once


@dataclass(frozen=True)
class ChaosPlan:
    config: ChaosConfig
    images: tuple[ImageSpec, ...]
    injections: tuple[Injection, ...]
    outage_images: dict[str, str] = field(default_factory=dict)  # HOT/WARM/UNCACHED: tag
    outage_holders: dict[str, int] = field(default_factory=dict)  # HOT/WARM: holding node
    soak_images: tuple[str, ...] = ()

    def image(self, tag: str) -> ImageSpec:
        for spec in self.images:
            if spec.tag == tag:
                return spec
        raise KeyError(tag)

    def of(self, fault: str) -> list[Injection]:
        return [i for i in self.injections if i.fault == fault]


def _fraction(rng: random.Random) -> float:
    return round(rng.uniform(*FRACTION_RANGE), 3)


def plan_chaos(config: ChaosConfig) -> ChaosPlan:
    """Every random choice of a run, from ``config.seed``."""
    rng = random.Random(config.seed)
    low, high = config.layer_mib
    images: list[ImageSpec] = []

    def new_image(tag: str, big_bytes: int | None = None) -> str:
        size = big_bytes if big_bytes is not None else rng.randint(low, high) * MIB
        images.append(ImageSpec(tag, size, seed=1000 + len(images)))
        return tag

    def node() -> int:
        return rng.randrange(config.nodes)

    injections: list[Injection] = []
    crash_variants = [LINKED, STREAMED]
    rng.shuffle(crash_variants)
    for k in range(1, config.crash_injections + 1):
        image = new_image(f"crash{k}")
        twin = new_image(f"crash{k}-twin", images[-1].big_bytes)
        variant = crash_variants[(k - 1) % 2]
        injections.append(
            Injection(
                AGENT_CRASH, k, node(), image, twin=twin, fraction=_fraction(rng), variant=variant
            )
        )
    for k in range(1, config.home_injections + 1):
        injections.append(
            Injection(HOME_CRASH, k, -1, new_image(f"home{k}"), fraction=_fraction(rng))
        )
    for k in range(1, config.peer_injections + 1):
        injections.append(Injection(WRONG_PEER, k, node(), new_image(f"peer{k}")))
    variants = [AGENT_ONLY, LINKED]
    rng.shuffle(variants)
    for k, variant in enumerate(variants, start=1):
        injections.append(
            Injection(
                DISK_CORRUPT,
                k,
                node(),
                new_image(f"corrupt{k}"),
                fraction=round(rng.random(), 3),
                variant=variant,
                layer=rng.choice(("big", "small")),
            )
        )
    # Started on every node during the outage: the HOT image is unpacked on one node (a peer
    # holds it for the others), the WARM one is in one node's agent store only.
    outage = {tier: new_image(f"outage-{tier}") for tier in (HOT, WARM, UNCACHED)}
    holders = {HOT: node(), WARM: node()}
    injections.append(Injection(UPSTREAM_OUTAGE, 1, -1))
    # The storms pull images other classes put in the cluster (peer tier: the LAN, not the WAN).
    pulled = [s.tag for s in images if s.tag not in outage.values()]
    storm_node = node()
    injections.append(
        Injection(STORE_BUDGET, 1, storm_node, images=tuple(rng.sample(pulled, config.storm)))
    )
    injections.append(
        Injection(DISK_FULL, 1, (storm_node + 1) % config.nodes,
                  images=tuple(rng.sample(pulled, config.storm)))
    )  # fmt: skip
    soak = tuple(rng.sample(pulled, min(config.soak_images, len(pulled))))
    # Drawn last, so the other classes' choices for a seed stay what they were.
    for k in range(1, config.fanout_injections + 1):
        injections.append(
            Injection(
                FANOUT_CRASH,
                k,
                node(),
                new_image(f"fanout{k}", FANOUT_LAYER),
                fraction=_fraction(rng),
            )
        )
    ordered = sorted(injections, key=lambda i: FAULT_CLASSES.index(i.fault))
    return ChaosPlan(config, tuple(images), tuple(ordered), outage, holders, soak)


def largest(plan: ChaosPlan, tags: Sequence[str]) -> int:
    """The biggest big layer among ``tags`` (store budgets and tmpfs sizes follow from it)."""
    return max(plan.image(t).big_bytes for t in tags)


def storm_budget(plan: ChaosPlan, tags: Sequence[str]) -> int:
    """A store budget that holds the storm's biggest layer but never two big layers at once:
    the storm must make the store evict or refuse."""
    smallest = min(plan.image(t).big_bytes for t in tags)
    return largest(plan, tags) + smallest // 2


def tmpfs_bytes(plan: ChaosPlan, tags: Sequence[str]) -> int:
    """A tmpfs that holds one big layer of the storm (and the store's index), never two."""
    return storm_budget(plan, tags) + MIB


def corrupt_offset(size: int, fraction: float) -> int:
    """The byte a disk-corrupt injection overwrites (from the plan's fraction), in the blob."""
    if size <= 0:
        raise ValueError("cannot corrupt an empty blob")
    return min(size - 1, int(size * fraction))


def fake_peer_port(
    digest: str, nodes: Sequence[str], host: str, first: int = 20000, tries: int = 20000
) -> int:
    """A port for a stand-in peer at ``http://host:PORT`` that makes it the home of ``digest``
    among ``nodes`` plus itself (as an agent that lists it computes). ~1 in len(nodes)+1
    ports works, so the search is short."""
    keys = [rendezvous.node_key(n) for n in nodes]
    for port in range(first, first + tries):
        url = rendezvous.node_key(f"http://{host}:{port}")
        if rendezvous.home(digest, [*keys, url]) == url:
            return port
    raise ValueError(f"no port in {first}..{first + tries} makes {host} the home of {digest}")


__all__ = [
    "AGENT_CRASH",
    "AGENT_ONLY",
    "DISK_CORRUPT",
    "DISK_FULL",
    "FAULT_CLASSES",
    "HOME_CRASH",
    "HOT",
    "LINKED",
    "PEER",
    "STORE_BUDGET",
    "STREAMED",
    "UNCACHED",
    "UPSTREAM_OUTAGE",
    "WARM",
    "WRONG_PEER",
    "ChaosConfig",
    "ChaosPlan",
    "ImageSpec",
    "Injection",
    "corrupt_offset",
    "fake_peer_port",
    "largest",
    "plan_chaos",
    "storm_budget",
    "tmpfs_bytes",
]
