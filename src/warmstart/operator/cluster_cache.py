"""What the operator reads of the cluster, as kopf's indexes keep it (pure).

kopf lists and watches nodes, pods, Deployments, InferenceServices, HorizontalPodAutoscalers and
ImageCaches, and calls an index function of this module on every change of one of them
(:mod:`warmstart.operator.indexes` registers them): each keeps what the operator needs of the
object, by namespace (a Node: its :class:`~warmstart.operator.nodes.NodeInfo`). A
:class:`ClusterCache` reads those indexes; nothing here asks the API server.

Every pod the operator can see is kept (their nodes, phases and labels only): an agent pod is
found among them by ``--agent-selector``, a workload's replicas by its pod selector.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from warmstart.kube.client import JsonObj
from warmstart.kube.selectors import parse_label_selector, selector_matches
from warmstart.operator.nodes import NodeInfo, node_info

# The indexes' ids (kopf passes each to its handlers under that name)
NODES = "nodes_index"
PODS = "pods_index"
DEPLOYMENTS = "deployments_index"
INFERENCE_SERVICES = "inferenceservices_index"
HPAS = "hpas_index"
IMAGE_CACHES = "imagecaches_index"
INDEX_IDS = (NODES, PODS, DEPLOYMENTS, INFERENCE_SERVICES, HPAS, IMAGE_CACHES)
# the annotated kinds and their indexes
WORKLOAD_INDEXES = {"Deployment": DEPLOYMENTS, "InferenceService": INFERENCE_SERVICES}

# An index: key -> the values of the objects under it (kopf.Index: key -> kopf.Store)
Index = Mapping[Any, Iterable[Any]]


def plain(value: Any) -> Any:
    """A deep copy of a (kopf) body as dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("metadata") or {}


def _namespace(body: Mapping[str, Any]) -> str:
    return str(_meta(body).get("namespace") or "")


def node_entry(body: Mapping[str, Any]) -> NodeInfo:
    return node_info(body)


def pod_entry(body: Mapping[str, Any]) -> dict[str, JsonObj]:
    """{namespace: the pod's name, labels, deletion, node, phase and IP}."""
    meta, spec, status = _meta(body), body.get("spec") or {}, body.get("status") or {}
    pod = {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "labels": dict(meta.get("labels") or {}),
            "deletionTimestamp": meta.get("deletionTimestamp"),
        },
        "spec": {"nodeName": spec.get("nodeName")},
        "status": {"phase": status.get("phase"), "podIP": status.get("podIP")},
    }
    return {_namespace(body): pod}


def object_entry(body: Mapping[str, Any]) -> dict[str, JsonObj]:
    """{namespace: the whole object} (workloads: the pod spec is patched from it; HPAs)."""
    return {_namespace(body): plain(body)}


def image_cache_entry(body: Mapping[str, Any]) -> dict[str, JsonObj]:
    """{namespace: its name, deletion, spec and the nodes its status lists}."""
    meta = _meta(body)
    cache = {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "deletionTimestamp": meta.get("deletionTimestamp"),
        },
        "spec": plain(body.get("spec") or {}),
        "status": {"nodes": plain((body.get("status") or {}).get("nodes") or [])},
    }
    return {_namespace(body): cache}


def _by_name(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = _meta(obj)
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class ClusterCache:
    """The operator's reads of the cluster, from kopf's indexes (``indexes``: id -> index,
    handed over when kopf starts). ``populated`` is set by the first handler kopf runs that is
    not an index's (a Node's or a workload's event, an ImageCache's reconcile): kopf runs none
    before every indexed resource is listed."""

    def __init__(self, agent_namespace: str, agent_selector: str) -> None:
        self.agent_namespace = agent_namespace
        self.agent_selector = parse_label_selector(agent_selector)
        self.indexes: Mapping[str, Index] = {}
        self.populated = asyncio.Event()

    def _values(self, index_id: str, key: Any) -> list[Any]:
        index = self.indexes.get(index_id) or {}
        return list(index[key]) if key in index else []

    def _all(self, index_id: str) -> list[Any]:
        index = self.indexes.get(index_id) or {}
        return [value for key in index for value in index[key]]

    def nodes(self) -> tuple[NodeInfo, ...]:
        return tuple(sorted(self._values(NODES, None), key=lambda n: n.name))

    def pods(self, namespace: str) -> list[JsonObj]:
        return sorted(self._values(PODS, namespace), key=_by_name)

    def agent_pods(self) -> list[JsonObj]:
        """The pods in the agents' namespace that ``--agent-selector`` selects."""
        return [
            pod
            for pod in self.pods(self.agent_namespace)
            if selector_matches(self.agent_selector, pod["metadata"]["labels"])
        ]

    def hpas(self, namespace: str) -> list[JsonObj]:
        return sorted(self._values(HPAS, namespace), key=_by_name)

    def workloads(self) -> list[tuple[str, JsonObj]]:
        """Deployments and InferenceServices (when KServe is installed), in namespace and name
        order (as the API server lists them)."""
        return [
            (kind, body)
            for kind, index_id in WORKLOAD_INDEXES.items()
            for body in sorted(self._all(index_id), key=_by_name)
        ]

    def image_caches(self) -> list[JsonObj]:
        return sorted(self._all(IMAGE_CACHES), key=_by_name)
