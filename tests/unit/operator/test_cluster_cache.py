"""What kopf's indexes keep of each object, and the operator's reads of them."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from warmstart.kube.client import KubeClient
from warmstart.kube.config import KubeConfig
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
from warmstart.operator.handlers import _watched_namespaces, build_registry
from warmstart.operator.indexes import InScope
from warmstart.operator.reconciler import Operator, OperatorOptions


def _pod(ns: str, name: str, labels: dict[str, str], node: str = "n1") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "labels": labels, "uid": "u",
                     "ownerReferences": [{"kind": "ReplicaSet"}]},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": []},
    }  # fmt: skip


def _indexes(**entries: list[dict[Any, Any]]) -> dict[str, dict[Any, list[Any]]]:
    """kopf's indexes (id -> key -> values) from the index functions' results."""
    out: dict[str, dict[Any, list[Any]]] = {i: {} for i in INDEX_IDS}
    for index_id, results in entries.items():
        for result in results:
            for key, value in result.items():
                out[index_id].setdefault(key, []).append(value)
    return out


def test_a_pod_is_kept_by_namespace_with_only_what_the_operator_reads() -> None:
    entry = pod_entry(_pod("ws", "agent-1", {"app": "a"}))
    assert entry == {"ws": {
        "metadata": {"name": "agent-1", "namespace": "ws", "labels": {"app": "a"},
                     "deletionTimestamp": None},
        "spec": {"nodeName": "n1"},
        "status": {"phase": "Running", "podIP": "10.0.0.1"},
    }}  # fmt: skip


def test_workloads_are_kept_whole_and_image_caches_trimmed() -> None:
    body = {"metadata": {"name": "w", "namespace": "team"}, "spec": {"template": {"a": [1]}}}
    kept = object_entry(kopf.Body(body))
    assert kept == {"team": body} and kept["team"]["spec"] is not body["spec"]  # a copy
    cache = {
        "metadata": {"name": "c", "namespace": "team", "annotations": {"x": "y"}},
        "spec": {"images": ["r/a:1"]},
        "status": {"nodes": [{"node": "n1"}], "summary": "s"},
    }
    assert image_cache_entry(cache) == {"team": {
        "metadata": {"name": "c", "namespace": "team", "deletionTimestamp": None},
        "spec": {"images": ["r/a:1"]}, "status": {"nodes": [{"node": "n1"}]},
    }}  # fmt: skip
    assert node_entry({"metadata": {"name": "n1"}}).name == "n1"


def test_the_cache_reads_the_indexes() -> None:
    cache = ClusterCache("ws", "app.kubernetes.io/name=warmstart-agent")
    assert cache.nodes() == () and cache.workloads() == [] and cache.agent_pods() == []
    agent = {"app.kubernetes.io/name": "warmstart-agent"}
    cache.indexes = _indexes(**{
        NODES: [{None: node_entry({"metadata": {"name": n}})} for n in ("n2", "n1")],
        PODS: [pod_entry(_pod("ws", "agent-b", agent, "n2")),
               pod_entry(_pod("ws", "other", {"app": "x"})),
               pod_entry(_pod("team", "agent-a", agent)),  # not in the agents' namespace
               pod_entry(_pod("ws", "agent-a", agent, "n1"))],
        DEPLOYMENTS: [object_entry({"metadata": {"name": n, "namespace": "team"}})
                      for n in ("b", "a")],
        INFERENCE_SERVICES: [object_entry({"metadata": {"name": "i", "namespace": "ml"}})],
        HPAS: [object_entry({"metadata": {"name": "h", "namespace": "team"}})],
        IMAGE_CACHES: [image_cache_entry({"metadata": {"name": "c", "namespace": "x"}})],
    })  # fmt: skip
    assert [n.name for n in cache.nodes()] == ["n1", "n2"]
    assert [p["metadata"]["name"] for p in cache.agent_pods()] == ["agent-a", "agent-b"]
    assert [p["metadata"]["name"] for p in cache.pods("ws")] == ["agent-a", "agent-b", "other"]
    assert cache.pods("nowhere") == [] and cache.hpas("ml") == []
    assert [h["metadata"]["name"] for h in cache.hpas("team")] == ["h"]
    assert [(k, b["metadata"]["name"]) for k, b in cache.workloads()] == [
        ("Deployment", "a"), ("Deployment", "b"), ("InferenceService", "i")]  # fmt: skip
    assert [c["metadata"]["name"] for c in cache.image_caches()] == ["c"]


def test_scope_and_watched_namespaces() -> None:
    assert InScope(None)(namespace="any") and InScope("team")(namespace="team")
    assert not InScope("team")(namespace="ws")
    options = OperatorOptions(KubeConfig("http://127.0.0.1:1"), agent_namespace="ws")
    assert _watched_namespaces(options) == []
    scoped = OperatorOptions(KubeConfig("http://127.0.0.1:1"), agent_namespace="ws", namespace="t")
    assert _watched_namespaces(scoped) == ["t", "ws"]


async def test_every_index_is_registered_with_kopf() -> None:
    options = OperatorOptions(KubeConfig("http://127.0.0.1:1"))
    op = Operator(options, KubeClient(options.kube), ClusterCache("ws", ""))  # not connected
    registry = build_registry(op)
    ids = {h.id for h in registry._indexing.get_all_handlers()}
    assert ids == set(INDEX_IDS)
    await asyncio.sleep(0)
    await op.close()
