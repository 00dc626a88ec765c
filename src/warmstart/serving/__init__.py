"""The endpoint controller's pure policies: the endpoint spec, the autoscaler, placement and
pre-warm ahead of scale-out. Nothing here reads a clock or touches the network."""

from __future__ import annotations

from warmstart.oci.tiers import Tier
from warmstart.serving.autoscaler import LoadSnapshot, ScaleDecision, ScalerState, decide
from warmstart.serving.placement import (
    Node,
    NodeTiers,
    PlacedReplica,
    choose_victims,
    place,
    start_rank,
)
from warmstart.serving.prewarm_ahead import prewarm_targets
from warmstart.serving.spec import EndpointSpec, SpecError, build_spec, load_spec, parse_spec

__all__ = [
    "EndpointSpec",
    "LoadSnapshot",
    "Node",
    "NodeTiers",
    "PlacedReplica",
    "ScaleDecision",
    "ScalerState",
    "SpecError",
    "Tier",
    "build_spec",
    "choose_victims",
    "decide",
    "load_spec",
    "parse_spec",
    "place",
    "prewarm_targets",
    "start_rank",
]
