"""Which nodes keep which images and models, and what each node's agent must still pre-warm
(pure).

The same planner serves an ImageCache (its images and models on ``nodes`` of the matching
nodes, pinned), an annotated workload's images (hot on N spare nodes) and its model (hot and
pinned on the nodes its replicas are on, which are always chosen, and on N spare nodes). Nodes
are ranked cheapest first: where the images and models already are (hot, then warm, then
partial), then the nodes chosen last time (so a selection does not wander), then by name; a
node without an agent comes last. A model is always wanted hot (materialised).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from warmstart.agent.api import ImageStatus, ModelStatus, StatusResponse
from warmstart.oci.tiers import Tier
from warmstart.operator.nodes import NodeInfo, eligible_nodes

# One line of an agent's /status: an image, or a model (hot: materialised).
Held = ImageStatus | ModelStatus
# What one node's agent says of each image and model: reference -> its line in /status.
NodeImages = Mapping[str, Held]

_COST = {"hot": 0, "warm": 1, "partial": 2}
_ABSENT = 3
_NO_AGENT = 1000


def images_by_ref(status: StatusResponse | None) -> dict[str, Held]:
    """An agent's /status by reference, images and models (the store's record wins over an
    image's hot-only line; the agent lists a reference as an image or as a model, not both)."""
    out: dict[str, Held] = {}
    for image in status.images if status is not None else ():
        if image.reference not in out or out[image.reference].size == 0:
            out[image.reference] = image
    for model in status.models if status is not None else ():
        out.setdefault(model.reference, model)
    return out


def satisfied(image: Held | None, hot: bool) -> bool:
    """Whether the node has the image (model) at the wanted tier (hot, or at least warm)."""
    if image is None:
        return False
    return image.tier == Tier.HOT if hot else image.tier in (Tier.HOT, Tier.WARM)


@dataclass(frozen=True)
class Want:
    """What an owner (an ImageCache, a workload) wants kept on nodes."""

    images: tuple[str, ...]
    hot: bool = True  # the images' tier; models are always wanted hot
    pin: bool = False
    node_selector: Mapping[str, str] = field(default_factory=dict)
    count: int | None = None  # None: every eligible node
    tolerations: Sequence[Mapping[str, Any]] | None = None  # a workload's; None: ignore taints
    exclude: frozenset[str] = frozenset()  # nodes not to use (already running a replica)
    previous: frozenset[str] = frozenset()  # the nodes chosen last time
    models: tuple[str, ...] = ()
    # Nodes chosen whatever they cost, on top of ``count`` (a workload's replica nodes for its
    # model: a replica there mounts it). Only nodes that exist; eligibility is not asked.
    required: frozenset[str] = frozenset()

    @property
    def references(self) -> tuple[str, ...]:
        return (*self.images, *self.models)


@dataclass(frozen=True)
class Plan:
    selected: tuple[str, ...]  # the nodes that keep the images, required first, then cheapest
    prewarm: Mapping[str, tuple[str, ...]]  # node -> images its agent must pre-warm (or pin)
    eligible: int  # how many nodes could have been chosen
    wanted: int  # how many nodes the owner asked for (all eligible when count is None)
    prewarm_models: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # hot, model


def node_cost(images: Iterable[str], held: NodeImages | None) -> int:
    if held is None:
        return _NO_AGENT
    return sum(_COST.get(held[r].tier, _ABSENT) if r in held else _ABSENT for r in images)


def _needs(image: Held | None, hot: bool, pin: bool) -> bool:
    return not satisfied(image, hot) or (pin and not (image and image.pinned))


def plan_image_cache(
    want: Want,
    nodes: Iterable[NodeInfo],
    agents_by_node: Mapping[str, str],
    statuses: Mapping[str, NodeImages],
    linked: Collection[tuple[str, str]] | None = None,
) -> Plan:
    """``statuses``: node -> its agent's images and models (absent: the agent did not answer).
    ``linked``: the (node, model) pairs this operator has pre-warmed hot itself; a model not
    among them is pre-warmed once more even when /status says hot, because only a hot pre-warm
    of that reference makes its ``models/by-ref/<reference>`` link (a model materialised under
    another reference of the same digest is hot without it). That costs a local look-up on
    the agent. None: do not ask."""
    nodes = list(nodes)
    required = sorted({n.name for n in nodes} & want.required)
    candidates = [
        n
        for n in eligible_nodes(nodes, want.node_selector, want.tolerations)
        if n.name not in want.exclude and n.name not in want.required
    ]

    def held(name: str) -> NodeImages | None:
        return statuses.get(name) if name in agents_by_node else None

    refs = want.references
    ranked = sorted(
        candidates,
        key=lambda n: (node_cost(refs, held(n.name)), n.name not in want.previous, n.name),
    )
    count = len(ranked) if want.count is None else want.count
    chosen = (*required, *(n.name for n in ranked[:count]))
    prewarm: dict[str, tuple[str, ...]] = {}
    models: dict[str, tuple[str, ...]] = {}
    for name in chosen:
        if name not in agents_by_node:
            continue
        have = statuses.get(name) or {}
        todo = tuple(r for r in want.images if _needs(have.get(r), want.hot, want.pin))
        if todo:
            prewarm[name] = todo
        todo = tuple(
            r
            for r in want.models
            if _needs(have.get(r), True, want.pin)
            or (linked is not None and (name, r) not in linked)
        )
        if todo:
            models[name] = todo
    return Plan(chosen, prewarm, len(candidates) + len(required), count + len(required), models)


__all__ = [
    "Held",
    "NodeImages",
    "Plan",
    "Want",
    "images_by_ref",
    "plan_image_cache",
    "satisfied",
]
