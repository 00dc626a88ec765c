"""Node labels saying where managed images and models are, and the workloads' scheduling hint
(pure).

A node carries ``warmstart.dev/image.<first 12 hex of the digest>`` = ``hot`` or ``warm`` for
each image the operator manages (an ImageCache's or an annotated workload's) that its agent
holds at that tier; ``digest`` is what the reference resolves to (the agent's ``/status``
digest: the image manifest, or the index of a multi-platform image). A model carries
``warmstart.dev/model.<first 12 hex of sha256(reference)>`` = ``hot`` (materialised: the
node's ``models/by-ref/<reference>`` directory exists) or ``warm``: keyed by the normalised
reference, not the digest, because a pod mounts the per-reference path, and so that the key is
known before any node has pulled the model (a user can write a required term on it). Labels
under either prefix for images and models no longer there or no longer managed are removed; no
other label is touched. (Keys: the prefix ``warmstart.dev``, a name of 18 characters; values
``hot``/``warm``: well inside Kubernetes' 63-character limits.)

An annotated workload gets one ``preferredDuringSchedulingIgnoredDuringExecution`` term per
image or model and tier (weight 100 for hot, 50 for warm) on those labels. The user's own terms
are kept in their order; terms of ours are recognised by their keys, so computing the hint
again gives the same list and no patch (no rollout loop).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from warmstart.agent.api import ModelStatus
from warmstart.operator.plan import NodeImages

LABEL_PREFIX = "warmstart.dev/image."
MODEL_LABEL_PREFIX = "warmstart.dev/model."
OUR_PREFIXES = (LABEL_PREFIX, MODEL_LABEL_PREFIX)
HOT_WEIGHT = 100
WARM_WEIGHT = 50
PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"


def short_digest(digest: str) -> str:
    """``sha256:0123456789abcdef...`` -> ``0123456789ab``."""
    return digest.partition(":")[2][:12] or digest[:12]


def image_label(digest: str) -> str:
    return LABEL_PREFIX + short_digest(digest)


def model_label(reference: str) -> str:
    """``warmstart.dev/model.<first 12 hex of sha256 of the normalised reference>``."""
    return MODEL_LABEL_PREFIX + hashlib.sha256(reference.encode()).hexdigest()[:12]


def wanted_labels(held: NodeImages, managed: Iterable[str]) -> dict[str, str]:
    """Our labels for one node: managed images and models its agent holds hot or warm (hot
    wins)."""
    out: dict[str, str] = {}
    for ref in sorted(set(managed)):
        item = held.get(ref)
        if item is None or item.tier not in ("hot", "warm"):
            continue
        key = model_label(ref) if isinstance(item, ModelStatus) else image_label(item.digest)
        if out.get(key) != "hot":
            out[key] = item.tier
    return out


def label_patch(
    current: Mapping[str, str] | None, wanted: Mapping[str, str]
) -> dict[str, Any] | None:
    """A merge patch making our labels ``wanted`` (None: nothing to change)."""
    current = current or {}
    changes: dict[str, str | None] = {}
    for key in current:
        if key.startswith(OUR_PREFIXES) and key not in wanted:
            changes[key] = None
    for key, value in wanted.items():
        if current.get(key) != value:
            changes[key] = value
    return {"metadata": {"labels": changes}} if changes else None


def hint_terms(digests: Iterable[str], models: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Our preferred terms for a workload whose images resolve to ``digests`` and which mounts
    ``models`` (references): images' terms first, then the models'."""
    keys = [image_label(d) for d in sorted(set(digests))]
    keys += [model_label(r) for r in sorted(set(models))]
    terms = []
    for key in dict.fromkeys(keys):
        for tier, weight in (("hot", HOT_WEIGHT), ("warm", WARM_WEIGHT)):
            expr = {"key": key, "operator": "In", "values": [tier]}
            terms.append({"weight": weight, "preference": {"matchExpressions": [expr]}})
    return terms


def is_ours(term: Mapping[str, Any]) -> bool:
    pref = term.get("preference") or {}
    exprs = pref.get("matchExpressions") or []
    return (
        bool(exprs)
        and not pref.get("matchFields")
        and all(str(e.get("key", "")).startswith(OUR_PREFIXES) for e in exprs)
    )


def merged_preferred(
    affinity: Mapping[str, Any] | None, digests: Iterable[str], models: Iterable[str] = ()
) -> list[dict[str, Any]] | None:
    """The new ``preferredDuringScheduling...`` list (user terms first, then ours), or None
    when it is already that."""
    node_affinity = (affinity or {}).get("nodeAffinity") or {}
    existing: Sequence[Mapping[str, Any]] = node_affinity.get(PREFERRED) or []
    merged = [dict(t) for t in existing if not is_ours(t)] + hint_terms(digests, models)
    return None if merged == [dict(t) for t in existing] else merged


# Where each annotated kind keeps its pods' spec (KServe inlines the PodSpec in the predictor).
POD_SPEC_PATH = {
    "Deployment": ("spec", "template", "spec"),
    "InferenceService": ("spec", "predictor"),
}


def pod_spec_of(workload: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    """The workload's pod spec (``{}`` when it has none yet)."""
    pod_spec: Mapping[str, Any] = workload
    for key in POD_SPEC_PATH[kind]:
        pod_spec = pod_spec.get(key) or {}
    return pod_spec


def at_pod_spec(kind: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    """``changes`` to the pod spec as a patch of the whole workload."""
    patch: dict[str, Any] = dict(changes)
    for key in reversed(POD_SPEC_PATH[kind]):
        patch = {key: patch}
    return patch


def affinity_changes(
    pod_spec: Mapping[str, Any], digests: Iterable[str], models: Iterable[str] = ()
) -> dict[str, Any] | None:
    """The pod spec's part of the merge patch (None: no change): only the preferred list,
    which holds the user's terms too; other affinity fields are not in it and so are kept."""
    merged = merged_preferred(pod_spec.get("affinity"), digests, models)
    if merged is None:
        return None
    return {"affinity": {"nodeAffinity": {PREFERRED: merged}}}


def affinity_patch(
    workload: Mapping[str, Any],
    digests: Iterable[str],
    kind: str = "Deployment",
    models: Iterable[str] = (),
) -> dict[str, Any] | None:
    """A merge patch for the workload (None: no change)."""
    changes = affinity_changes(pod_spec_of(workload, kind), digests, models)
    return None if changes is None else at_pod_spec(kind, changes)
