"""Workloads annotated ``warmstart.dev/prewarm`` and/or ``warmstart.dev/model``: what to
pre-warm hot, and on how many more nodes (pure).

``warmstart.dev/prewarm``: ``"auto"``: a Deployment with a HorizontalPodAutoscaler gets
``maxReplicas - replicas`` spare nodes (one without an HPA); an InferenceService gets
``maxReplicas - minReplicas`` (at least one). A number N: N spare nodes. Images: the pod
template's containers' and initContainers' (an InferenceService's ``spec.predictor.containers``).
Spare nodes match the pods' nodeSelector and tolerate the nodes' taints, and do not run a
replica already.

``warmstart.dev/model: REF``: the model artifact REF, materialised and pinned on the nodes its
replicas are on and on the spare nodes (as many as ``warmstart.dev/prewarm`` says, ``auto``
when that annotation is absent: then only the model is pre-warmed, not the images), and mounted
read-only at ``/opt/ml/model`` (:mod:`warmstart.operator.model_mount`) in every container, or
in those named by ``warmstart.dev/model-containers: a,b``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from warmstart.oci import OCIError, Reference
from warmstart.store.model_dirs import reference_path

ANNOTATION = "warmstart.dev/prewarm"
MODEL_ANNOTATION = "warmstart.dev/model"
MODEL_CONTAINERS_ANNOTATION = "warmstart.dev/model-containers"
MANAGED_ANNOTATIONS = (ANNOTATION, MODEL_ANNOTATION)  # either one makes a workload managed
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
    model: str | None = None  # a normalised reference: mounted at /opt/ml/model
    model_containers: tuple[str, ...] | None = None  # None: every container

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    @property
    def model_key(self) -> str:
        """The key of its model's owner (pinned on other nodes than its images)."""
        return f"{self.key}#model"


def is_managed(obj: Mapping[str, Any]) -> bool:
    """Whether a workload carries one of the annotations (and is not being deleted)."""
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return any(a in annotations for a in MANAGED_ANNOTATIONS) and not meta.get("deletionTimestamp")


def parse_model(value: Any) -> str:
    """``warmstart.dev/model``: the normalised reference. ValueError (one line) if bad."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{MODEL_ANNOTATION} must be a model reference, not {value!r}")
    try:
        ref = str(Reference.parse(value.strip()))
        reference_path(ref)
    except (OCIError, ValueError) as e:
        raise ValueError(f"{MODEL_ANNOTATION} {value!r}: {e}") from None
    return ref


def parse_containers(value: Any) -> tuple[str, ...] | None:
    """``warmstart.dev/model-containers: a, b`` -> ("a", "b"); None when absent."""
    if value is None:
        return None
    names = tuple(dict.fromkeys(n.strip() for n in str(value).split(",") if n.strip()))
    if not names:
        raise ValueError(f"{MODEL_CONTAINERS_ANNOTATION} names no container: {value!r}")
    return names


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


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def _model(obj: Mapping[str, Any]) -> tuple[str | None, tuple[str, ...] | None]:
    annotations = _annotations(obj)
    if MODEL_ANNOTATION not in annotations:
        return None, None
    model = parse_model(annotations[MODEL_ANNOTATION])
    return model, parse_containers(annotations.get(MODEL_CONTAINERS_ANNOTATION))


def _wants_images(obj: Mapping[str, Any]) -> bool:
    return ANNOTATION in _annotations(obj)


def deployment_workload(dep: Mapping[str, Any], hpas: Iterable[Mapping[str, Any]]) -> Workload:
    """ValueError (one line) if an annotation is malformed."""
    meta, spec = dep.get("metadata") or {}, dep.get("spec") or {}
    count = parse_annotation(_annotations(dep).get(ANNOTATION, "auto"))
    model, model_containers = _model(dep)
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
    containers = [*(pod.get("initContainers") or ()), *(pod.get("containers") or ())]
    return Workload(
        kind="Deployment",
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name")),
        images=tuple(_images(containers)) if _wants_images(dep) else (),
        spare=min(count, MAX_SPARE),
        node_selector=dict(pod.get("nodeSelector") or {}),
        tolerations=tuple(t for t in pod.get("tolerations") or () if isinstance(t, Mapping)),
        pod_selector=dict((spec.get("selector") or {}).get("matchLabels") or {}),
        model=model,
        model_containers=model_containers,
    )


def inference_service_workload(isvc: Mapping[str, Any]) -> Workload:
    """A KServe ``InferenceService``: its predictor's containers (not a model runtime)."""
    meta = isvc.get("metadata") or {}
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    count = parse_annotation(_annotations(isvc).get(ANNOTATION, "auto"))
    model, model_containers = _model(isvc)
    if count is None:
        low = int(predictor.get("minReplicas", 1) or 0)
        high = int(predictor.get("maxReplicas", 0) or 0)
        count = max(1, high - low)
    name = str(meta.get("name"))
    return Workload(
        kind="InferenceService",
        namespace=str(meta.get("namespace") or "default"),
        name=name,
        images=tuple(_images(predictor.get("containers") or ())) if _wants_images(isvc) else (),
        spare=min(count, MAX_SPARE),
        node_selector=dict(predictor.get("nodeSelector") or {}),
        tolerations=tuple(t for t in predictor.get("tolerations") or () if isinstance(t, Mapping)),
        pod_selector={KSERVE_LABEL: name},
        model=model,
        model_containers=model_containers,
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
