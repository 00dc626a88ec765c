"""``warmstart operator`` against kmock's API emulator, with real agents, a real registry and
real containerd: ImageCaches become warm/hot on the selected nodes (status, node labels, pins),
a bad one gets ``InvalidSpec`` while the operator keeps running, an annotated Deployment with
an HPA is pre-warmed on its spare nodes and gets its scheduling hint once, a node that joins is
pre-warmed, and deleting an ImageCache unpins its images. Models: an ImageCache's model ends
materialised and pinned on its nodes (and unpinned when it goes); a Deployment annotated
``warmstart.dev/model`` gets it materialised and pinned on its replica's node and a spare node
and its pod template patched once with the read-only volume (the user's volumes kept), and
loses both when the annotation goes.

kmock stores objects and serves list/watch/merge- and JSON-patch; it is not an API server: no
schema validation or pruning, no resourceVersion bumps, and ``/status`` patches merge into the
whole object (kopf still sends them to ``/status`` because the discovery lists the
subresource). The ``kmock`` fixture honours label selectors (tests/integration/conftest.py).
Objects stored before the operator starts are in its first list; those that come later are
created through the API, so that its watches see them (storing into ``kmock.objects`` tells
no watcher).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.containerd import ContainerdFactory, image_state
from tests.support.images import ImageBuilder
from tests.support.model_push import push_model
from tests.support.models import WEIGHT_CONFIG_RAW, config_blob, raw_file
from warmstart.kube.config import KubeConfig
from warmstart.operator.handlers import run_operator
from warmstart.operator.labels import image_label, model_label
from warmstart.operator.model_mount import DEFAULT_STORE_PATH
from warmstart.operator.reconciler import Operator, OperatorOptions
from warmstart_harness.testbed.agent import AgentProcess
from warmstart_harness.testbed.registry import RegistryProcess

TOKEN = "operator-peer-token"
NS = "team"
CACHES = "warmstart.dev/v1alpha1/imagecaches"
VERBS = ["get", "list", "watch", "create", "patch", "update", "delete"]
RESOURCES: dict[str, dict[str, Any]] = {
    CACHES: {"kind": "ImageCache", "singular": "imagecache", "subresources": ["status"]},
    "v1/nodes": {"kind": "Node", "singular": "node", "namespaced": False},
    "v1/pods": {"kind": "Pod", "singular": "pod"},
    "v1/secrets": {"kind": "Secret", "singular": "secret"},
    "v1/events": {"kind": "Event", "singular": "event"},
    "v1/namespaces": {"kind": "Namespace", "singular": "namespace", "namespaced": False},
    "apps/v1/deployments": {"kind": "Deployment", "singular": "deployment"},
    "autoscaling/v2/horizontalpodautoscalers": {
        "kind": "HorizontalPodAutoscaler", "singular": "horizontalpodautoscaler",
    },
    "serving.kserve.io/v1beta1/inferenceservices": {
        "kind": "InferenceService", "singular": "inferenceservice",
    },
    "apiextensions.k8s.io/v1/customresourcedefinitions": {
        "kind": "CustomResourceDefinition", "singular": "customresourcedefinition",
        "namespaced": False,
    },
}  # fmt: skip


def _ids() -> dict[str, str]:
    """What the API server would set and kmock does not: kopf keys its memory by uid and
    guards its patches with the resourceVersion."""
    return {"uid": str(uuid.uuid4()), "resourceVersion": "1"}


def _node(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, **_ids()},
        "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def _cache(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "warmstart.dev/v1alpha1",
        "kind": "ImageCache",
        "metadata": {"name": name, "namespace": NS, "generation": 1, **_ids()},
        "spec": spec,
    }


USER_TERM = {
    "weight": 10,
    "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
}


def _deployment(image: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": NS,
            **_ids(),
            "annotations": {"warmstart.dev/prewarm": "auto"},
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{"name": "web", "image": image}],
                    "affinity": {
                        "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                            USER_TERM
                        ]}
                    },
                },
            },
        },
        "status": {"replicas": 1},
    }  # fmt: skip


USER_VOLUME = {"name": "scratch", "emptyDir": {}}
USER_MOUNT = {"name": "scratch", "mountPath": "/scratch"}


def _model_deployment(model: str) -> dict[str, Any]:
    """Annotated with a model only (no image pre-warm), mounted in "server" only."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "llm",
            "namespace": NS,
            **_ids(),
            "annotations": {"warmstart.dev/model": model,
                            "warmstart.dev/model-containers": "server"},
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "llm"}},
            "template": {
                "metadata": {"labels": {"app": "llm"}},
                "spec": {
                    "containers": [
                        {"name": "server", "image": "registry.example/llm:v1",
                         "volumeMounts": [USER_MOUNT]},
                        {"name": "sidecar", "image": "registry.example/proxy:v1"},
                    ],
                    "volumes": [USER_VOLUME],
                },
            },
        },
        "status": {"replicas": 1},
    }  # fmt: skip


def _status(agent: AgentProcess) -> dict[str, dict[str, Any]]:
    code, body = agent.get("/status")
    assert code == 200
    return {i["reference"]: i for i in json.loads(body)["images"]}


def _check_model_link(link: Path, directory: Path, weights: bytes) -> None:
    """``link`` (what the pod's hostPath names) leads to the read-only model ``directory``."""
    assert link.is_symlink() and link.resolve() == directory.resolve()
    assert (link / "model.safetensors").read_bytes() == weights
    assert stat.S_IMODE(directory.stat().st_mode) & 0o222 == 0


def _models(agent: AgentProcess) -> dict[str, dict[str, Any]]:
    return {m["reference"]: m for m in agent.status()["models"]}


async def _until(what: str, pred: Callable[[], Any], seconds: float = 30.0) -> None:
    try:
        async with asyncio.timeout(seconds):
            while not pred():  # noqa: ASYNC110 - polls state the operator changes
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for: {what}") from None


@pytest.mark.timeout(150)
async def test_operator_end_to_end(
    kmock: Any,
    registry: RegistryProcess,
    image_builder: ImageBuilder,
    containerd: ContainerdFactory,
    agents: Callable[..., AgentProcess],
) -> None:
    app = image_builder.build(registry, "team/app", "v1", [300_000, 100_000], seed="op-app")
    web = image_builder.build(registry, "team/web", "v1", [200_000], seed="op-web")
    weights = os.urandom(256 * 1024)
    push_model(registry, "models/tiny", "v1", config_blob(),
               [raw_file("model.safetensors", weights),
                raw_file("config.json", b'{"hidden": 8}', WEIGHT_CONFIG_RAW)])  # fmt: skip
    model = f"{registry.host}/models/tiny:v1"
    upstreams = {registry.host: registry.url}
    ctd_a, ctd_b = containerd(), containerd()

    def hot_settings(ctd: Any) -> dict[str, Any]:
        return {"peer_token": TOKEN, "containerd_socket": str(ctd.socket),
                "containerd_namespace": ctd.namespace}  # fmt: skip

    agent = {
        "node-a": agents(upstreams=upstreams, settings=hot_settings(ctd_a)),
        "node-b": agents(upstreams=upstreams, settings=hot_settings(ctd_b)),
        "node-c": agents(upstreams=upstreams, settings={"peer_token": TOKEN}),
        "node-d": agents(upstreams=upstreams, settings={"peer_token": TOKEN}),
    }
    for key, info in RESOURCES.items():
        kmock.resources[key] = {"namespaced": True, "verbs": VERBS, **info}
    nodes = "v1/nodes"
    kmock.objects[nodes, None, "node-a"] = _node("node-a", {"pool": "gpu"})
    kmock.objects[nodes, None, "node-b"] = _node("node-b", {"pool": "gpu"})
    kmock.objects[nodes, None, "node-c"] = _node("node-c", {"pool": "cpu", "kept": "yes"})
    # A replica of the Deployment already runs on node-c: its spare nodes are a and b.
    kmock.objects["v1/pods", NS, "web-1"] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": NS, "labels": {"app": "web"}, **_ids()},
        "spec": {"nodeName": "node-c"}, "status": {"phase": "Running"},
    }  # fmt: skip
    kmock.objects["v1/pods", NS, "llm-1"] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "llm-1", "namespace": NS, "labels": {"app": "llm"}, **_ids()},
        "spec": {"nodeName": "node-c"}, "status": {"phase": "Running"},
    }  # fmt: skip
    kmock.objects[CACHES, NS, "models"] = _cache(
        "models", {"models": [model], "nodeSelector": {"pool": "gpu"}}
    )
    kmock.objects[CACHES, NS, "bad"] = _cache("bad", {"images": ["Not A Reference"]})
    kmock.objects[CACHES, NS, "everywhere"] = _cache(
        "everywhere", {"images": [app.reference], "hot": False}
    )
    kmock.objects[CACHES, NS, "one-gpu"] = _cache(
        "one-gpu", {"images": [app.reference], "nodeSelector": {"pool": "gpu"}, "nodes": 1}
    )

    def cache(name: str) -> dict[str, Any]:
        return json.loads(json.dumps(dict(kmock.objects[CACHES, NS, name].raw)))

    def node_labels(name: str) -> dict[str, str]:
        return dict(kmock.objects[nodes, None, name].raw["metadata"].get("labels") or {})

    options = OperatorOptions(
        kube=KubeConfig(server=str(kmock.url).rstrip("/")),
        agent_namespace="warmstart",
        agent_urls={n: a.url for n, a in agent.items()},
        peer_token=TOKEN,
        interval=1.0,
    )
    deployments = "apps/v1/deployments"

    def model_on(name: str) -> dict[str, Any] | None:
        return _models(agent[name]).get(model)

    def llm_pod_spec() -> dict[str, Any]:
        return kmock.objects[deployments, NS, "llm"].raw["spec"]["template"]["spec"]

    stop = asyncio.Event()
    started: asyncio.Future[Operator] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_operator(options, stop_flag=stop, started=started))
    try:
        op = await asyncio.wait_for(started, 10)
        await op.kube.create(
            f"/apis/apps/v1/namespaces/{NS}/deployments", _model_deployment(model)
        )  # patched and pre-warmed while the checks below run

        # A bad ImageCache: InvalidSpec, once; the operator goes on with the others.
        await _until("InvalidSpec", lambda: cache("bad").get("status", {}).get("conditions"))
        cond = cache("bad")["status"]["conditions"][0]
        assert (cond["status"], cond["reason"]) == ("False", "InvalidSpec")
        assert "Not A Reference" in cond["message"]

        # Warm on every node (a, b, c), pinned; Ready, summary 3/3.
        def ready(name: str) -> bool:
            conds = cache(name).get("status", {}).get("conditions") or [{}]
            return conds[0].get("status") == "True"

        await _until("everywhere Ready", lambda: ready("everywhere"))
        status = cache("everywhere")["status"]
        assert status["summary"] == "3/3 warm" and status["observedGeneration"] == 1
        assert sorted(n["node"] for n in status["nodes"]) == ["node-a", "node-b", "node-c"]
        assert all(n["tier"] in ("warm", "hot") and n["bytes"] > 0 for n in status["nodes"])
        for name in ("node-a", "node-b", "node-c"):
            held = _status(agent[name])[app.reference]
            assert held["pinned"] and held["tier"] in ("warm", "hot")
        assert app.reference not in _status(agent["node-d"])  # no such node (yet)

        # Hot on one gpu node only, unpacked in its containerd.
        await _until("one-gpu Ready", lambda: ready("one-gpu"))
        status = cache("one-gpu")["status"]
        assert status["summary"] == "1/1 hot" and len(status["nodes"]) == 1
        hot_node = status["nodes"][0]["node"]
        assert hot_node in ("node-a", "node-b") and status["nodes"][0]["tier"] == "hot"
        ctd = ctd_a if hot_node == "node-a" else ctd_b
        state = image_state(ctd, app.reference)
        assert state is not None and state.tier == "hot"

        # Node labels follow the agents: hot on that node, warm on the others; others kept.
        label = image_label(app.manifest_digest)
        await _until("labels", lambda: node_labels(hot_node).get(label) == "hot"
                     and node_labels("node-c").get(label) == "warm")  # fmt: skip
        assert node_labels("node-c")["kept"] == "yes"

        # An annotated Deployment with an HPA (max 3, replicas 1): hot on 2 spare nodes.
        # (Created through the API, as everything after the start: the operator watches.)
        await op.kube.create(f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers", {
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": NS, **_ids()},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": "web"}, "minReplicas": 1, "maxReplicas": 3},
        })  # fmt: skip
        await op.kube.create(
            "/apis/apps/v1/namespaces/team/deployments", _deployment(web.reference)
        )

        def web_hot(name: str) -> bool:
            held = _status(agent[name]).get(web.reference)
            return held is not None and held["tier"] == "hot"

        await _until("web hot on a and b", lambda: web_hot("node-a") and web_hot("node-b"))
        assert web.reference not in _status(agent["node-c"])  # it runs there already

        def terms() -> list[dict[str, Any]]:
            dep = kmock.objects["apps/v1/deployments", NS, "web"].raw
            pod = dep["spec"]["template"]["spec"]
            return pod["affinity"]["nodeAffinity"][
                "preferredDuringSchedulingIgnoredDuringExecution"
            ]

        await _until("scheduling hint", lambda: len(terms()) == 3)
        assert terms()[0] == USER_TERM
        web_label = image_label(web.manifest_digest)
        assert {(t["weight"], t["preference"]["matchExpressions"][0]["key"]) for t in terms()[1:]} \
            == {(100, web_label), (50, web_label)}  # fmt: skip
        await _until("web labels", lambda: node_labels("node-a").get(web_label) == "hot")

        # The ImageCache of a model: materialised (hot) and pinned on both gpu nodes, not on c.
        await _until("models Ready", lambda: ready("models"))
        assert cache("models")["status"]["summary"] == "2/2 hot"
        for name in ("node-a", "node-b"):
            held = model_on(name)
            assert held is not None and (held["tier"], held["pinned"]) == ("hot", True), held
        mlabel = model_label(model)
        await _until("model labels", lambda: node_labels("node-a").get(mlabel) == "hot"
                     and node_labels("node-b").get(mlabel) == "hot")  # fmt: skip

        # The Deployment annotated warmstart.dev/model: materialised and pinned where its
        # replica runs (node-c, no gpu) and on one spare node (no HPA: one), a (cheapest).
        await _until("model on node-c", lambda: (model_on("node-c") or {}).get("tier") == "hot"
                     and model_on("node-c")["pinned"])  # fmt: skip
        assert model_on("node-d") is None
        assert op.owners[f"Deployment/{NS}/llm#model"].selected == ("node-c", "node-a")
        await _until("volume patched", lambda: "volumes" in llm_pod_spec()
                     and len(llm_pod_spec()["volumes"]) == 2)  # fmt: skip
        host_path = f"{DEFAULT_STORE_PATH}/models/by-ref/{model}"
        pod_spec = llm_pod_spec()
        assert pod_spec["volumes"] == [USER_VOLUME, {"name": "warmstart-model", "hostPath": {
            "path": host_path, "type": "Directory"}}]  # fmt: skip
        server, sidecar = pod_spec["containers"]
        assert server["volumeMounts"] == [
            USER_MOUNT,
            {"name": "warmstart-model", "mountPath": "/opt/ml/model", "readOnly": True},
        ]
        assert "volumeMounts" not in sidecar and server["image"] == "registry.example/llm:v1"
        preferred = pod_spec["affinity"]["nodeAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"
        ]
        assert {(t["weight"], t["preference"]["matchExpressions"][0]["key"]) for t in preferred} \
            == {(100, mlabel), (50, mlabel)}  # fmt: skip
        # The path the pod mounts is the agent's stable link to the read-only model directory
        # (each agent here has its own store: the same path below it).
        link = Path(host_path.replace(DEFAULT_STORE_PATH, str(agent["node-c"].store), 1))
        _check_model_link(link, Path(model_on("node-c")["path"]), weights)

        await asyncio.sleep(3)  # more passes and timers: no new patch (no rollout loop)
        assert op.workload_patches[f"Deployment/{NS}/web"] == 1
        assert op.workload_patches[f"Deployment/{NS}/llm"] == 1
        dep_meta = kmock.objects["apps/v1/deployments", NS, "web"].raw["metadata"]
        assert not dep_meta.get("finalizers")  # deleting it never waits for the operator

        # A KServe InferenceService annotated the same way gets the hint on its predictor.
        await op.kube.create(
            "/apis/serving.kserve.io/v1beta1/namespaces/team/inferenceservices",
            {
                "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                "metadata": {"name": "embed", "namespace": NS, **_ids(),
                             "annotations": {"warmstart.dev/prewarm": "2"}},
                "spec": {"predictor": {
                    "minReplicas": 1, "maxReplicas": 3, "nodeSelector": {"pool": "gpu"},
                    "containers": [{"name": "kserve-container", "image": web.reference}],
                    "affinity": {"nodeAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [USER_TERM]}},
                }},
            },
        )  # fmt: skip

        def predictor_terms() -> list[dict[str, Any]]:
            isvc = kmock.objects["serving.kserve.io/v1beta1/inferenceservices", NS, "embed"].raw
            affinity = isvc["spec"]["predictor"]["affinity"]["nodeAffinity"]
            return affinity["preferredDuringSchedulingIgnoredDuringExecution"]

        await _until("predictor hint", lambda: len(predictor_terms()) == 3)
        assert predictor_terms()[0] == USER_TERM
        assert {t["preference"]["matchExpressions"][0]["key"] for t in predictor_terms()[1:]} \
            == {web_label}  # fmt: skip
        assert web_hot("node-a") and web_hot("node-b")  # its two spare gpu nodes

        # A node that joins is pre-warmed for the ImageCache that wants every node.
        await op.kube.create("/api/v1/nodes", _node("node-d", {"pool": "cpu"}))
        await _until("node-d warm", lambda: app.reference in _status(agent["node-d"])
                     and _status(agent["node-d"])[app.reference]["tier"] == "warm")  # fmt: skip
        await _until("4/4", lambda: cache("everywhere")["status"]["summary"] == "4/4 warm")

        # Deleting the ImageCache unpins its images, but not where another one keeps them.
        await op.kube.delete(f"/apis/warmstart.dev/v1alpha1/namespaces/{NS}/imagecaches/everywhere")
        await _until("unpinned", lambda: not _status(agent["node-c"])[app.reference]["pinned"]
                     and not _status(agent["node-d"])[app.reference]["pinned"])  # fmt: skip
        assert _status(agent[hot_node])[app.reference]["pinned"]  # one-gpu keeps it
        await _until("gone", lambda: (CACHES, NS, "everywhere") not in kmock.objects
                     or kmock.objects[CACHES, NS, "everywhere"].deleted)  # fmt: skip

        # Deleting the models ImageCache unpins the model on b; a and c stay pinned for llm.
        await op.kube.delete(f"/apis/warmstart.dev/v1alpha1/namespaces/{NS}/imagecaches/models")
        await _until("model unpinned on b", lambda: not model_on("node-b")["pinned"])
        assert model_on("node-a")["pinned"] and model_on("node-c")["pinned"]

        # The annotation goes: the volume, the mount and the terms go (the user's stay), and
        # the model is unpinned where llm kept it.
        await op.kube.patch(f"/apis/apps/v1/namespaces/{NS}/deployments/llm", {"metadata": {
            "annotations": {"warmstart.dev/model": None,
                            "warmstart.dev/model-containers": None}}})  # fmt: skip
        await _until("volume removed", lambda: llm_pod_spec().get("volumes") == [USER_VOLUME])
        assert llm_pod_spec()["containers"][0]["volumeMounts"] == [USER_MOUNT]
        await _until("model unpinned on a and c", lambda: not model_on("node-a")["pinned"]
                     and not model_on("node-c")["pinned"])  # fmt: skip
        assert model_on("node-c")["tier"] == "hot"  # still cached, only no longer pinned
        assert not task.done()  # still running after all of it
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
