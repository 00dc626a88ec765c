"""Workloads annotated ``warmstart.dev/prewarm``: what to pre-warm hot, and on how many more
nodes (pure).

``"auto"``: a Deployment with a HorizontalPodAutoscaler gets ``maxReplicas - replicas`` spare
nodes (one without an HPA); an InferenceService gets ``maxReplicas - minReplicas`` (at least
one). A number N: N spare nodes. Images: the pod template's containers' and initContainers'
(an InferenceService's ``spec.predictor.containers``). Spare nodes match the pods' nodeSelector
and tolerate the nodes' taints, and do not run a replica already.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from warmstart.oci import OCIError, Reference

ANNOTATION = "warmstart.dev/prewarm"
MAX_SPARE = 1000
KSERVE_LABEL = "serving.kserve.io/inferenceservice"


@dataclass(frozen=True)
class Workload:
    kind: str  # Deployment, InferenceService
    namespace: str
    name: str
    images: tuple[str, ...]
    spare: int
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    pod_selector: Mapping[str, str] = field(default_factory=dict)  # its pods' labels

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


def parse_annotation(value: Any) -> int | None:
    """``auto`` -> None (count from the autoscaling bounds); ``N`` -> N. ValueError if bad."""
    text = str(value).strip().lower()
    if text == "auto":
        return None
    if text.isdigit() and int(text) <= MAX_SPARE:
        return int(text)
    raise ValueError(f'{ANNOTATION} must be "auto" or a number of nodes, not {value!r}')


def _images(containers: Iterable[Any]) -> list[str]:
    out: list[str] = []
    for c in containers:
        image = c.get("image") if isinstance(c, Mapping) else None
        if not isinstance(image, str):
            continue
        try:
            ref = str(Reference.parse(image))
        except OCIError:
            continue  # the kubelet will refuse it too; nothing to pre-warm
        if ref not in out:
            out.append(ref)
    return out


def hpa_for(hpas: Iterable[Mapping[str, Any]], kind: str, name: str) -> Mapping[str, Any] | None:
    for hpa in hpas:
        target = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        if target.get("kind") == kind and target.get("name") == name:
            return hpa
    return None


def _annotation(obj: Mapping[str, Any]) -> Any:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)


def deployment_workload(dep: Mapping[str, Any], hpas: Iterable[Mapping[str, Any]]) -> Workload:
    """ValueError (one line) if the annotation is malformed."""
    meta, spec = dep.get("metadata") or {}, dep.get("spec") or {}
    count = parse_annotation(_annotation(dep))
    if count is None:
        hpa = hpa_for(hpas, "Deployment", str(meta.get("name")))
        if hpa is None:
            count = 1
        else:
            replicas = (dep.get("status") or {}).get("replicas")
            if replicas is None:
                replicas = spec.get("replicas", 1)
            count = max(0, int((hpa.get("spec") or {}).get("maxReplicas", 1)) - int(replicas))
    pod = (spec.get("template") or {}).get("spec") or {}
    return Workload(
        kind="Deployment",
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name")),
        images=tuple(_images([*(pod.get("initContainers") or ()), *(pod.get("containers") or ())])),
        spare=min(count, MAX_SPARE),
        node_selector=dict(pod.get("nodeSelector") or {}),
        tolerations=tuple(t for t in pod.get("tolerations") or () if isinstance(t, Mapping)),
        pod_selector=dict((spec.get("selector") or {}).get("matchLabels") or {}),
    )


def inference_service_workload(isvc: Mapping[str, Any]) -> Workload:
    """A KServe ``InferenceService``: its predictor's containers (not a model runtime)."""
    meta = isvc.get("metadata") or {}
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    count = parse_annotation(_annotation(isvc))
    if count is None:
        low = int(predictor.get("minReplicas", 1) or 0)
        high = int(predictor.get("maxReplicas", 0) or 0)
        count = max(1, high - low)
    name = str(meta.get("name"))
    return Workload(
        kind="InferenceService",
        namespace=str(meta.get("namespace") or "default"),
        name=name,
        images=tuple(_images(predictor.get("containers") or ())),
        spare=min(count, MAX_SPARE),
        node_selector=dict(predictor.get("nodeSelector") or {}),
        tolerations=tuple(t for t in predictor.get("tolerations") or () if isinstance(t, Mapping)),
        pod_selector={KSERVE_LABEL: name},
    )


def replica_nodes(pods: Iterable[Mapping[str, Any]], selector: Mapping[str, str]) -> set[str]:
    """Nodes running a (not finished) pod whose labels include ``selector``."""
    out: set[str] = set()
    if not selector:
        return out
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if any(labels.get(k) != v for k, v in selector.items()):
            continue
        node = (pod.get("spec") or {}).get("nodeName")
        if node and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            out.add(str(node))
    return out
