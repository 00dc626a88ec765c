"""Where new replicas go and which replicas leave (pure).

New replicas go where the endpoint's bytes are highest in the tier table (hot > warm > peer >
cold), then to the least-loaded node (replicas on it / its slots), so replicas spread across
nodes of the same tier; names break ties. Nodes without a free slot are skipped.

An endpoint with a model has two tiers per node, the image's and the model's, combined by
:func:`start_rank`: **the slower of the two first, then their sum**. A replica's start fetches
the image and the model at once (the image's unpack overlaps the model's transfer), so its
fetch costs about as long as the slower of the two: a node where the image is hot but the
model is cold starts no faster than a node where both are cold, give or take the image's
share, and is ranked with the cold ones. Among nodes with the same slowest tier, the sum
prefers the one where the other half is readier too: it costs less disk, CPU and LAN beside
the slow half (an unpack that competes with a model's transfer, a transfer that shares the
uplink). So both hot (0, 0) beats hot + warm (1, 1) beats both warm (1, 2) beats hot + peer
(3, 3) beats warm + cold (4, 5). Sizes are not weighed: a tier says where the bytes are, not
how many there are.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from warmstart.oci.tiers import Tier

VictimKey = tuple[bool, float, float, str]


@dataclass(frozen=True)
class Node:
    """A node as placement sees it.

    ``slots``: how many replicas the node can run in all; ``used``: slots taken by other
    endpoints (this endpoint's replicas are counted from the replica list); ``tier``: the
    endpoint image's tier on this node; ``model_tier``: its model's (None: no model).
    """

    name: str
    slots: int
    tier: Tier = Tier.COLD
    used: int = 0
    model_tier: Tier | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tier", Tier(self.tier))  # accept "hot" etc.
        if self.model_tier is not None:
            object.__setattr__(self, "model_tier", Tier(self.model_tier))
        if self.slots < 0 or self.used < 0:
            raise ValueError(f"node {self.name!r}: slots and used must be >= 0")

    @property
    def hot(self) -> bool:
        """Nothing left to bring closer: the image is hot, and the model too if there is one."""
        return self.tier == Tier.HOT and self.model_tier in (None, Tier.HOT)


def start_rank(image: Tier, model: Tier | None = None) -> tuple[int, int]:
    """Lower starts faster: the slower of the image's and the model's tier, then the sum of
    their ranks (see the module's docstring). Without a model, the image's tier alone."""
    if model is None:
        return (image.rank, image.rank)
    return (max(image.rank, model.rank), image.rank + model.rank)


@dataclass(frozen=True)
class NodeTiers:
    """Where an endpoint's bytes are on one node: its image's tier and its model's (None: the
    endpoint has no model)."""

    image: Tier = Tier.COLD
    model: Tier | None = None


@dataclass(frozen=True)
class PlacedReplica:
    """One replica of the endpoint: its id, node, whether ``/ping`` passed, and when it was
    started (seconds, the caller's clock; larger is newer)."""

    id: str
    node: str
    ready: bool = True
    started_at: float = 0.0


def occupancy(nodes: Sequence[Node], replicas: Sequence[PlacedReplica]) -> dict[str, int]:
    """Slots taken on each node: other endpoints' plus this endpoint's replicas."""
    mine = Counter(r.node for r in replicas)
    return {n.name: n.used + mine[n.name] for n in nodes}


def load(node: Node, taken: int) -> float:
    """The fraction of the node's slots in use (a node without slots counts as full)."""
    return taken / node.slots if node.slots > 0 else 1.0


def has_room(node: Node, taken: int) -> bool:
    return taken < node.slots


def placement_key(node: Node, taken: int) -> tuple[int, int, float, str]:
    """Lower is better: the image's and model's tiers (:func:`start_rank`), then load, then
    name."""
    return (*start_rank(node.tier, node.model_tier), load(node, taken), node.name)


def place(count: int, nodes: Sequence[Node], replicas: Sequence[PlacedReplica] = ()) -> list[Node]:
    """The nodes for ``count`` new replicas, best first; shorter than ``count`` when the
    cluster runs out of slots. A node appears once per replica placed on it."""
    taken = occupancy(nodes, replicas)
    by_name = {n.name: n for n in nodes}
    out: list[Node] = []
    for _ in range(max(0, count)):
        open_nodes = [n for n in by_name.values() if has_room(n, taken[n.name])]
        if not open_nodes:
            break
        best = min(open_nodes, key=lambda n: placement_key(n, taken[n.name]))
        taken[best.name] += 1
        out.append(best)
    return out


def victim_key(replica: PlacedReplica, taken: Counter[str], slots: dict[str, int]) -> VictimKey:
    """Lower goes first: not ready, then the most-loaded node, then the newest, then id."""
    on_node = taken[replica.node]
    node_slots = slots.get(replica.node, 0)
    node_load = on_node / node_slots if node_slots > 0 else float(on_node)
    return (replica.ready, -node_load, -replica.started_at, replica.id)


def choose_victims(
    count: int, replicas: Sequence[PlacedReplica], nodes: Sequence[Node] = ()
) -> list[PlacedReplica]:
    """The replicas to stop to shed ``count``: not-ready ones first, then ones on the
    most-loaded nodes (by slots when ``nodes`` are given, else by this endpoint's replica
    count), then the newest. Load is recounted after each pick, so removals spread too."""
    slots = {n.name: n.slots for n in nodes}
    taken: Counter[str] = Counter({n.name: n.used for n in nodes})
    taken.update(r.node for r in replicas)
    left = list(replicas)
    out: list[PlacedReplica] = []
    for _ in range(min(max(0, count), len(left))):
        victim = min(left, key=lambda r: victim_key(r, taken, slots))
        left.remove(victim)
        taken[victim.node] -= 1
        out.append(victim)
    return out


__all__ = [
    "Node",
    "NodeTiers",
    "PlacedReplica",
    "Tier",
    "choose_victims",
    "has_room",
    "load",
    "occupancy",
    "place",
    "placement_key",
    "start_rank",
]
