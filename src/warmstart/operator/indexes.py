"""kopf's indexes of what the operator reads (:mod:`warmstart.operator.cluster_cache` says what
each keeps): registered on the operator's kopf registry, handed to the
:class:`~warmstart.operator.cluster_cache.ClusterCache` when kopf starts.

kopf lists and watches each indexed resource once (the event handlers of
:mod:`warmstart.operator.handlers` share those watches) and runs no other handler before every
index is filled. A resource the cluster does not serve (InferenceServices without KServe) is
not watched: its index stays empty. Workloads, HPAs and ImageCaches outside ``--namespace``
are left out (``in_scope``); pods are kopf's in the namespaces it watches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import kopf

from warmstart.operator.cluster_cache import (
    DEPLOYMENTS,
    HPAS,
    IMAGE_CACHES,
    INDEX_IDS,
    INFERENCE_SERVICES,
    NODES,
    PODS,
    ClusterCache,
    image_cache_entry,
    node_entry,
    object_entry,
    pod_entry,
)
from warmstart.operator.spec import GROUP, PLURAL, VERSION

# (group, version, plural) of the resources kopf watches
IMAGE_CACHE_RESOURCE = (GROUP, VERSION, PLURAL)
NODE_RESOURCE = ("", "v1", "nodes")
POD_RESOURCE = ("", "v1", "pods")
DEPLOYMENT_RESOURCE = ("apps", "v1", "deployments")
KSERVE_RESOURCE = ("serving.kserve.io", "v1beta1", "inferenceservices")
HPA_RESOURCE = ("autoscaling", "v2", "horizontalpodautoscalers")

Entry = Callable[[Mapping[str, Any]], object]
# (resource, index id, what it keeps, only objects in the operator's --namespace)
INDEXED: tuple[tuple[tuple[str, str, str], str, Entry, bool], ...] = (
    (NODE_RESOURCE, NODES, node_entry, False),
    (POD_RESOURCE, PODS, pod_entry, False),
    (DEPLOYMENT_RESOURCE, DEPLOYMENTS, object_entry, True),
    (KSERVE_RESOURCE, INFERENCE_SERVICES, object_entry, True),
    (HPA_RESOURCE, HPAS, object_entry, True),
    (IMAGE_CACHE_RESOURCE, IMAGE_CACHES, image_cache_entry, True),
)


class InScope:
    """kopf's ``when`` filter: the object is in the operator's namespace (any, when None)."""

    def __init__(self, namespace: str | None) -> None:
        self.namespace = namespace

    def __call__(self, *, namespace: str | None, **_: Any) -> bool:
        return self.namespace is None or namespace == self.namespace


def _register(
    registry: kopf.OperatorRegistry,
    resource: tuple[str, str, str],
    index_id: str,
    entry: Entry,
    when: InScope | None,
) -> None:
    @kopf.index(*resource, registry=registry, id=index_id, when=when)
    def index(*, body: kopf.Body, **_: Any) -> object:
        return entry(body)


def register_indexes(
    registry: kopf.OperatorRegistry, cache: ClusterCache, in_scope: InScope
) -> None:
    for resource, index_id, entry, scoped in INDEXED:
        _register(registry, resource, index_id, entry, in_scope if scoped else None)

    @kopf.on.startup(registry=registry, id="indexes")
    def hand_over(**kwargs: Any) -> None:
        # kopf passes every index to every handler under its id (the same objects, kept current)
        cache.indexes = {index_id: kwargs[index_id] for index_id in INDEX_IDS}
