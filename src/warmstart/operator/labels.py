"""Node labels saying where managed images are, and the Deployments' scheduling hint (pure).

A node carries ``warmstart.dev/image.<first 12 hex of the digest>`` = ``hot`` or ``warm`` for
each image the operator manages (an ImageCache's or an annotated workload's) that its agent
holds at that tier; ``digest`` is what the reference resolves to (the agent's ``/status``
digest: the image manifest, or the index of a multi-platform image). Labels under that prefix
for images no longer there or no longer managed are removed; no other label is touched.

An annotated Deployment gets one ``preferredDuringSchedulingIgnoredDuringExecution`` term per
image and tier (weight 100 for hot, 50 for warm) on those labels. The user's own terms are kept
in their order; terms of ours are recognised by their keys, so computing the hint again gives
the same list and no patch (no rollout loop).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from warmstart.operator.plan import NodeImages

LABEL_PREFIX = "warmstart.dev/image."
HOT_WEIGHT = 100
WARM_WEIGHT = 50
PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"


def short_digest(digest: str) -> str:
    """``sha256:0123456789abcdef...`` -> ``0123456789ab``."""
    return digest.partition(":")[2][:12] or digest[:12]


def image_label(digest: str) -> str:
    return LABEL_PREFIX + short_digest(digest)


def wanted_labels(held: NodeImages, managed: Iterable[str]) -> dict[str, str]:
    """Our labels for one node: managed images its agent holds hot or warm (hot wins)."""
    out: dict[str, str] = {}
    for ref in sorted(set(managed)):
        image = held.get(ref)
        if image is None or image.tier not in ("hot", "warm"):
            continue
        key = image_label(image.digest)
        if out.get(key) != "hot":
            out[key] = image.tier
    return out


def label_patch(
    current: Mapping[str, str] | None, wanted: Mapping[str, str]
) -> dict[str, Any] | None:
    """A merge patch making our labels ``wanted`` (None: nothing to change)."""
    current = current or {}
    changes: dict[str, str | None] = {}
    for key in current:
        if key.startswith(LABEL_PREFIX) and key not in wanted:
            changes[key] = None
    for key, value in wanted.items():
        if current.get(key) != value:
            changes[key] = value
    return {"metadata": {"labels": changes}} if changes else None


def hint_terms(digests: Iterable[str]) -> list[dict[str, Any]]:
    """Our preferred terms for a workload whose images resolve to ``digests``."""
    terms = []
    for digest in sorted(set(digests)):
        for tier, weight in (("hot", HOT_WEIGHT), ("warm", WARM_WEIGHT)):
            expr = {"key": image_label(digest), "operator": "In", "values": [tier]}
            terms.append({"weight": weight, "preference": {"matchExpressions": [expr]}})
    return terms


def is_ours(term: Mapping[str, Any]) -> bool:
    pref = term.get("preference") or {}
    exprs = pref.get("matchExpressions") or []
    return (
        bool(exprs)
        and not pref.get("matchFields")
        and all(str(e.get("key", "")).startswith(LABEL_PREFIX) for e in exprs)
    )


def merged_preferred(
    affinity: Mapping[str, Any] | None, digests: Iterable[str]
) -> list[dict[str, Any]] | None:
    """The new ``preferredDuringScheduling...`` list (user terms first, then ours), or None
    when it is already that."""
    node_affinity = (affinity or {}).get("nodeAffinity") or {}
    existing: Sequence[Mapping[str, Any]] = node_affinity.get(PREFERRED) or []
    merged = [dict(t) for t in existing if not is_ours(t)] + hint_terms(digests)
    return None if merged == [dict(t) for t in existing] else merged


# Where each annotated kind keeps its pods' spec (KServe inlines the PodSpec in the predictor).
POD_SPEC_PATH = {
    "Deployment": ("spec", "template", "spec"),
    "InferenceService": ("spec", "predictor"),
}


def affinity_patch(
    workload: Mapping[str, Any], digests: Iterable[str], kind: str = "Deployment"
) -> dict[str, Any] | None:
    """A merge patch for the workload's pod spec (None: no change). The merge patch replaces
    only the preferred list, which holds the user's terms too; other affinity fields are not
    in the patch and so are kept."""
    path = POD_SPEC_PATH[kind]
    pod_spec: Mapping[str, Any] = workload
    for key in path:
        pod_spec = pod_spec.get(key) or {}
    merged = merged_preferred(pod_spec.get("affinity"), digests)
    if merged is None:
        return None
    patch: dict[str, Any] = {"affinity": {"nodeAffinity": {PREFERRED: merged}}}
    for key in reversed(path):
        patch = {key: patch}
    return patch
