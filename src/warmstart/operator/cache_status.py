"""An ImageCache's ``status`` from the plan, the agents' ``/status`` and failed pre-warms (pure).

``status.nodes``: each selected node's tier for the cache's images and models (the slowest one
counts): ``hot`` (images unpacked in containerd, models materialised), ``warm`` (all in the
agent's store), ``partial``,
``failed`` (the last pre-warm failed or the agent did not answer; ``lastError`` says why, it is
retried with backoff) or ``pending``. ``status.conditions``: ``Ready`` True when every wanted
node has every image at the wanted tier and every model hot. A node entry's ``updated`` and the condition's
``lastTransitionTime`` change only when what they describe changes, so an unchanged status is
an unchanged object (no patch, no event).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from warmstart.oci.tiers import Tier
from warmstart.operator.plan import NodeImages, Plan, satisfied

NO_AGENT = "no warmstart agent found on this node"


@dataclass(frozen=True)
class NodeState:
    node: str
    tier: str
    bytes: int
    last_error: str | None
    ok: bool  # every image at the wanted tier


def node_state(
    node: str,
    images: Sequence[str],
    hot: bool,
    held: NodeImages | None,
    error: str | None,
    models: Sequence[str] = (),
) -> NodeState:
    """``held``: the node agent's images and models (None: no agent, or it did not answer —
    ``error`` then says which). Models are wanted hot whatever ``hot`` says."""
    have = held or {}
    refs = [*images, *models]
    present = [have[r] for r in refs if r in have]
    size = sum(i.size for i in present)
    ok = (
        held is not None
        and all(satisfied(have.get(r), hot) for r in images)
        and all(satisfied(have.get(r), True) for r in models)
    )
    if present and len(present) == len(refs) and all(i.tier == Tier.HOT for i in present):
        actual: str | None = "hot"
    elif len(present) == len(refs) and all(i.tier in (Tier.HOT, Tier.WARM) for i in present):
        actual = "warm"
    else:
        actual = "partial" if present else None
    if ok:
        return NodeState(node, actual or "hot", size, None, True)
    if error is not None:
        return NodeState(
            node,
            "failed" if held is not None or error != NO_AGENT else "pending",
            size,
            error,
            False,
        )
    return NodeState(node, actual or "pending", size, None, False)


def _node_entry(state: NodeState, previous: Mapping[str, Any] | None, now: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"node": state.node, "tier": state.tier, "bytes": state.bytes}
    if state.last_error:
        entry["lastError"] = state.last_error[:4000]
    same = previous is not None and all(
        previous.get(k) == entry.get(k) for k in ("tier", "bytes", "lastError")
    )
    entry["updated"] = previous.get("updated", now) if same and previous else now
    return entry


def condition(
    status: str,
    reason: str,
    message: str,
    previous: Sequence[Mapping[str, Any]],
    now: str,
    generation: int | None,
) -> dict[str, Any]:
    """The ``Ready`` condition; its transition time kept while ``status`` stays the same."""
    old = next((c for c in previous if c.get("type") == "Ready"), None)
    since = old.get("lastTransitionTime") if old and old.get("status") == status else None
    cond: dict[str, Any] = {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message[:4000],
        "lastTransitionTime": since or now,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def cache_status(
    *,
    images: Sequence[str],
    hot: bool,
    plan: Plan,
    statuses: Mapping[str, NodeImages],
    errors: Mapping[str, str],
    previous: Mapping[str, Any] | None,
    generation: int | None,
    now: str,
    problems: Sequence[str] = (),
    models: Sequence[str] = (),
) -> dict[str, Any]:
    """The whole ``status`` (``errors``: node -> why its last pre-warm or /status failed).
    The tier in ``summary`` and the message is the images' (``hot`` or ``warm``), ``hot``
    for a cache of models only."""
    previous = previous or {}
    old_nodes = {
        str(n.get("node")): n for n in previous.get("nodes") or () if isinstance(n, Mapping)
    }
    states = [
        node_state(node, images, hot, statuses.get(node), errors.get(node), models)
        for node in plan.selected
    ]
    good = sum(s.ok for s in states)
    tier = "hot" if hot or not images else "warm"
    if problems:
        status, reason, message = "False", "Degraded", "; ".join(problems)
    elif plan.wanted > plan.eligible:
        status, reason = "False", "NotEnoughNodes"
        message = f"{plan.eligible} matching nodes, {plan.wanted} wanted"
    elif good == len(states):
        status, reason = "True", "Cached"
        message = f"{good}/{plan.wanted} nodes {tier}"
    else:
        failed = [s for s in states if s.tier == "failed"]
        status, reason = "False", ("PrewarmFailed" if failed else "Prewarming")
        message = f"{good}/{plan.wanted} nodes {tier}"
        if failed:
            message += f"; {failed[0].node}: {failed[0].last_error}"
    return _with_generation(
        generation,
        {
            "nodes": [_node_entry(s, old_nodes.get(s.node), now) for s in states],
            "conditions": [
                condition(
                    status, reason, message, previous.get("conditions") or (), now, generation
                )
            ],
            "summary": f"{good}/{plan.wanted} {tier}",
        },
    )


def _with_generation(generation: int | None, status: dict[str, Any]) -> dict[str, Any]:
    """``observedGeneration`` first, and only when known (the CRD types it as an integer)."""
    return status if generation is None else {"observedGeneration": generation, **status}


def invalid_status(
    problems: Sequence[str], previous: Mapping[str, Any] | None, generation: int | None, now: str
) -> dict[str, Any]:
    """The status of an ImageCache whose spec is wrong: ``Ready=False, reason=InvalidSpec``."""
    previous = previous or {}
    message = "; ".join(problems)
    return _with_generation(
        generation,
        {
            "nodes": [],
            "conditions": [
                condition(
                    "False",
                    "InvalidSpec",
                    message,
                    previous.get("conditions") or (),
                    now,
                    generation,
                )
            ],
            "summary": "invalid spec",
        },
    )
