"""What the endpoint controller works with: the nodes it may use, where their bytes are, the
replicas it manages, its events and its status (data, no I/O).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from warmstart.oci.tiers import Tier
from warmstart.runtime.interfaces import Replica, Runtime
from warmstart.serving.placement import NodeTiers

# A replica's way to ready: waiting (for a pre-warm of its node in flight, and to be scheduled),
# pulling, unpacking, waiting for the model (only an endpoint with a model has this phase: the
# part of the model's fetch that the image's pull and unpack did not hide), creating and
# starting the container, loading until /ping answers 200. They add up to the time to ready.
PHASES = ("wait", "pull", "unpack", "model", "start", "load")


@dataclass
class NodeHandle:
    """One node the controller may run replicas on."""

    name: str
    runtime: Runtime
    slots: int = 4
    host: str = "127.0.0.1"  # where replicas on this node are reachable (host networking)
    agent_url: str | None = None
    ports: Sequence[int] = ()  # ports replicas may listen on; empty: any from ``port_base``
    port_base: int = 18080


class TierSource(Protocol):
    async def tiers(
        self, image: str, nodes: Sequence[NodeHandle], model: str | None = None
    ) -> dict[str, NodeTiers]:
        """Where the image's bytes are, and the model's when there is one, per node name; a
        node left out is not known yet (it is placed as cold, and when it shows up its failed
        pre-warms are forgotten)."""
        ...


class StaticTiers:
    """Tiers given by the caller (tests, or clusters without agents)."""

    def __init__(
        self, tiers: dict[str, Tier] | None = None, models: dict[str, Tier] | None = None
    ) -> None:
        self.values = dict(tiers or {})
        self.models = dict(models or {})

    async def tiers(
        self, image: str, nodes: Sequence[NodeHandle], model: str | None = None
    ) -> dict[str, NodeTiers]:
        return {
            n.name: NodeTiers(
                self.values.get(n.name, Tier.COLD),
                self.models.get(n.name, Tier.COLD) if model is not None else None,
            )
            for n in nodes
        }


@dataclass
class ManagedReplica:
    id: str
    node: str
    port: int
    started_at: float
    state: str = "starting"  # starting, ready, stopping
    host: str = "127.0.0.1"
    runtime_replica: Replica | None = None
    ready_seconds: float | None = None  # from "start a replica" to /ping 200
    tier: Tier = Tier.COLD  # where the image's bytes were on the node when the replica started
    model_tier: Tier | None = None  # where the model's were (None: the endpoint has no model)
    # Seconds per phase, in order (:data:`PHASES`); once ready they add up to ready_seconds.
    phases: dict[str, float] = field(default_factory=dict)
    # The model's fetch on its own (it overlaps the pull and unpack; the "model" phase is only
    # the part they did not hide) and the directory mounted at /opt/ml/model.
    model_seconds: float | None = None
    model_path: str | None = None
    holds_model: bool = False  # counted among the node's model users (its pin)

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "node": self.node,
            "port": self.port,
            "url": self.url,
            "state": self.state,
            "tier": self.tier,
            "model_tier": self.model_tier,
            "ready_seconds": self.ready_seconds,
            "phases": dict(self.phases),
            "model_seconds": self.model_seconds,
            "model_path": self.model_path,
        }

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class Event:
    at: float
    # scale, started, ready, failed, crashed, stopped, prewarm, prewarm-failed, unpin-failed
    kind: str
    message: str


@dataclass
class ControllerStatus:
    desired: int
    replicas: list[dict[str, object]] = field(default_factory=list)
    queue_length: int = 0
    in_flight: int = 0
    last_decision: str = ""
    events: list[Event] = field(default_factory=list)
    nodes: list[dict[str, object]] = field(default_factory=list)

    def to_dict(self, events: int = 50) -> dict[str, object]:
        return {
            "desired": self.desired,
            "replicas": self.replicas,
            "queue_length": self.queue_length,
            "in_flight": self.in_flight,
            "last_decision": self.last_decision,
            "nodes": self.nodes,
            "events": [
                {"at": e.at, "kind": e.kind, "message": e.message} for e in self.events[-events:]
            ],
        }


def describe_phases(replica: ManagedReplica) -> str:
    """``wait 0.00s, pull 1.20s, ...`` (and the model's own fetch time, when it has one)."""
    text = ", ".join(f"{k} {replica.phases[k]:.2f}s" for k in PHASES if k in replica.phases)
    if replica.model_seconds is not None:
        text += f"; model fetched in {replica.model_seconds:.2f}s beside the pull"
    return text
