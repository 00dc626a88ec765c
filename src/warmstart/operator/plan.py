"""Which nodes keep which images, and what each node's agent must still pre-warm (pure).

The same planner serves an ImageCache (its images on ``nodes`` of the matching nodes, pinned)
and an annotated workload (its images hot on N spare nodes). Nodes are ranked cheapest first:
where the images already are (hot, then warm, then partial), then the nodes chosen last time
(so a selection does not wander), then by name; a node without an agent comes last.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from warmstart.agent.api import ImageStatus, StatusResponse
from warmstart.operator.nodes import NodeInfo, eligible_nodes

# What one node's agent says of each image: reference -> its line in /status.
NodeImages = Mapping[str, ImageStatus]

_COST = {"hot": 0, "warm": 1, "partial": 2}
_ABSENT = 3
_NO_AGENT = 1000


def images_by_ref(status: StatusResponse | None) -> dict[str, ImageStatus]:
    """An agent's /status by reference (the store's record wins over a hot-only line)."""
    out: dict[str, ImageStatus] = {}
    for image in status.images if status is not None else ():
        if image.reference not in out or out[image.reference].size == 0:
            out[image.reference] = image
    return out


def satisfied(image: ImageStatus | None, hot: bool) -> bool:
    """Whether the node has the image at the wanted tier (hot, or at least warm)."""
    if image is None:
        return False
    return image.tier == "hot" if hot else image.tier in ("hot", "warm")


@dataclass(frozen=True)
class Want:
    """What an owner (an ImageCache, a workload) wants kept on nodes."""

    images: tuple[str, ...]
    hot: bool = True
    pin: bool = False
    node_selector: Mapping[str, str] = field(default_factory=dict)
    count: int | None = None  # None: every eligible node
    tolerations: Sequence[Mapping[str, Any]] | None = None  # a workload's; None: ignore taints
    exclude: frozenset[str] = frozenset()  # nodes not to use (already running a replica)
    previous: frozenset[str] = frozenset()  # the nodes chosen last time


@dataclass(frozen=True)
class Plan:
    selected: tuple[str, ...]  # the nodes that keep the images, cheapest first
    prewarm: Mapping[str, tuple[str, ...]]  # node -> images its agent must pre-warm (or pin)
    eligible: int  # how many nodes could have been chosen
    wanted: int  # how many nodes the owner asked for (all eligible when count is None)


def node_cost(images: Iterable[str], held: NodeImages | None) -> int:
    if held is None:
        return _NO_AGENT
    return sum(_COST.get(held[r].tier, _ABSENT) if r in held else _ABSENT for r in images)


def _needs(image: ImageStatus | None, want: Want) -> bool:
    return not satisfied(image, want.hot) or (want.pin and not (image and image.pinned))


def plan_image_cache(
    want: Want,
    nodes: Iterable[NodeInfo],
    agents_by_node: Mapping[str, str],
    statuses: Mapping[str, NodeImages],
) -> Plan:
    """``statuses``: node -> its agent's images (absent: the agent did not answer)."""
    candidates = [
        n
        for n in eligible_nodes(nodes, want.node_selector, want.tolerations)
        if n.name not in want.exclude
    ]

    def held(name: str) -> NodeImages | None:
        return statuses.get(name) if name in agents_by_node else None

    ranked = sorted(
        candidates,
        key=lambda n: (node_cost(want.images, held(n.name)), n.name not in want.previous, n.name),
    )
    count = len(ranked) if want.count is None else want.count
    chosen = tuple(n.name for n in ranked[:count])
    prewarm: dict[str, tuple[str, ...]] = {}
    for name in chosen:
        if name not in agents_by_node:
            continue
        have = statuses.get(name) or {}
        todo = tuple(r for r in want.images if _needs(have.get(r), want))
        if todo:
            prewarm[name] = todo
    return Plan(chosen, prewarm, len(candidates), count)


__all__ = ["NodeImages", "Plan", "Want", "images_by_ref", "plan_image_cache", "satisfied"]
