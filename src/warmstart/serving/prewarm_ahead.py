"""Pre-warm ahead of a scale-out (pure): name the nodes the next replicas would be placed on
that are not yet hot, so the controller can pre-warm ``--hot`` there before the autoscaler
asks for them. For an endpoint with a model a node is hot only when both its image and its
model are (:attr:`Node.hot`): the controller then brings the image hot and the model
materialised there.

By default that is every node the endpoint may scale to: the nodes :func:`place` gives the next
``max_replicas`` minus current replicas (existing and starting), whatever the load.
``prewarm_spare = N`` limits the spares to the next N replicas' nodes and ``0`` turns them off;
in every case, when demand comes within ``prewarm_headroom`` of the capacity of the replicas
that exist or are starting, the nodes the next scale-out would use are named too.

With no replicas at all (an endpoint scaled to zero) the capacity is 0, so the node the first
replica would land on is always a target: a scaled-to-zero endpoint starts hot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from warmstart.serving.autoscaler import LoadSnapshot, window_mean
from warmstart.serving.placement import Node, PlacedReplica, place
from warmstart.serving.spec import EndpointSpec


def recent_demand(spec: EndpointSpec, snapshot: LoadSnapshot) -> float:
    """The larger of the stable- and panic-window means (0 without samples)."""
    means = (
        window_mean(snapshot.samples, snapshot.now, spec.stable_window),
        window_mean(snapshot.samples, snapshot.now, spec.panic_window),
    )
    return max((m for m in means if m is not None), default=0.0)


def capacity(spec: EndpointSpec, snapshot: LoadSnapshot) -> float:
    """Concurrency the existing and starting replicas carry at the target."""
    return snapshot.current * spec.target_concurrency


def near_capacity(spec: EndpointSpec, demand: float, cap: float) -> bool:
    """Demand is within ``prewarm_headroom`` of capacity (or above it)."""
    return demand >= (1.0 - spec.prewarm_headroom) * cap


def replicas_ahead(spec: EndpointSpec, snapshot: LoadSnapshot, demand: float) -> int:
    """How many replicas the next scale-out is likely to add: enough for the demand plus the
    headroom, at least one, within ``max_replicas`` and ``max_scale_up_step``."""
    wanted = math.ceil(demand * (1.0 + spec.prewarm_headroom) / spec.target_concurrency - 1e-9)
    count = max(1, wanted - snapshot.current)
    count = min(count, spec.max_replicas - snapshot.current)
    if spec.max_scale_up_step is not None:
        count = min(count, spec.max_scale_up_step)
    return max(0, count)


def spare_count(spec: EndpointSpec, snapshot: LoadSnapshot) -> int:
    """How many replicas ahead to keep hot whatever the load: every one the endpoint may still
    add (``max_replicas`` minus current) unless ``prewarm_spare`` sets a lower limit."""
    room = max(0, spec.max_replicas - snapshot.current)
    return room if spec.prewarm_spare is None else min(spec.prewarm_spare, room)


def prewarm_targets(
    spec: EndpointSpec,
    snapshot: LoadSnapshot,
    nodes: Sequence[Node],
    replicas: Sequence[PlacedReplica] = (),
) -> list[Node]:
    """Nodes to pre-warm now (each once, in placement order): those of the next
    :func:`spare_count` replicas always (by default every node the endpoint may scale to), and
    more when demand is near capacity; empty when the endpoint is at ``max_replicas`` or those
    nodes are hot (image, and model if any)."""
    demand = recent_demand(spec, snapshot)
    count = 0
    if near_capacity(spec, demand, capacity(spec, snapshot)):
        count = replicas_ahead(spec, snapshot, demand)
    # Spare nodes kept hot whatever the load: a surge beyond any headroom starts hot too.
    count = max(count, spare_count(spec, snapshot))
    if count <= 0:
        return []
    out: list[Node] = []
    for node in place(count, nodes, replicas):
        if not node.hot and node not in out:
            out.append(node)
    return out


__all__ = [
    "capacity",
    "near_capacity",
    "prewarm_targets",
    "recent_demand",
    "replicas_ahead",
    "spare_count",
]
