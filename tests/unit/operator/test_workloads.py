"""Annotated workloads: images, spare counts, where replicas run (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from warmstart.operator.workloads import (
    deployment_workload,
    inference_service_workload,
    is_managed,
    parse_annotation,
    parse_containers,
    parse_model,
    replica_nodes,
)


def dep(annotation: str = "auto", replicas: int | None = 1, **pod: Any) -> dict[str, Any]:
    status = {} if replicas is None else {"replicas": replicas}
    return {
        "metadata": {"name": "web", "namespace": "ns",
                     "annotations": {"warmstart.dev/prewarm": annotation}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"spec": {
                     "initContainers": [{"name": "i", "image": "reg.example/init:v1"}],
                     "containers": [{"name": "c", "image": "reg.example/web:v1"},
                                    {"name": "d", "image": "Bad Image"},
                                    {"name": "e", "image": "reg.example/web:v1"}],
                     **pod}}},
        "status": status,
    }  # fmt: skip


def hpa(name: str = "web", high: int = 3, kind: str = "Deployment") -> dict[str, Any]:
    return {"spec": {"scaleTargetRef": {"kind": kind, "name": name}, "maxReplicas": high}}


COUNTS = [
    pytest.param(dep(), [hpa()], 2, id="hpa-max-minus-replicas"),
    pytest.param(dep(replicas=3), [hpa()], 0, id="at-max"),
    pytest.param(dep(replicas=5), [hpa()], 0, id="over-max"),
    pytest.param(dep(replicas=None), [hpa()], 1, id="no-status-uses-spec-replicas"),
    pytest.param(dep(), [hpa(name="other"), hpa(kind="StatefulSet")], 1, id="no-hpa-one-spare"),
    pytest.param(dep(annotation="4"), [hpa()], 4, id="a-number"),
    pytest.param(dep(annotation=" AUTO "), [], 1, id="auto-spelling"),
]  # fmt: skip


@pytest.mark.parametrize(("obj", "hpas", "spare"), COUNTS)
def test_deployment_spare_count(obj: dict[str, Any], hpas: list[Any], spare: int) -> None:
    assert deployment_workload(obj, hpas).spare == spare


def test_deployment_images_selector_tolerations() -> None:
    tol = {"key": "gpu", "operator": "Exists"}
    work = deployment_workload(dep(nodeSelector={"pool": "gpu"}, tolerations=[tol]), [])
    assert work.images == ("reg.example/init:v1", "reg.example/web:v1")  # bad one skipped
    assert work.node_selector == {"pool": "gpu"} and work.tolerations == (tol,)
    assert work.pod_selector == {"app": "web"} and work.key == "Deployment/ns/web"


@pytest.mark.parametrize("value", ["", "yes", "-1", "1.5", "100000"])
def test_bad_annotations(value: str) -> None:
    with pytest.raises(ValueError, match=r"warmstart\.dev/prewarm"):
        parse_annotation(value)


def test_inference_service() -> None:
    isvc = {
        "metadata": {"name": "llm", "namespace": "ml", "annotations": {"warmstart.dev/prewarm": "auto"}},
        "spec": {"predictor": {"minReplicas": 1, "maxReplicas": 4, "nodeSelector": {"gpu": "a100"},
                               "containers": [{"name": "kserve-container",
                                               "image": "reg.example/llm:v2"}]}},
    }  # fmt: skip
    work = inference_service_workload(isvc)
    assert (work.images, work.spare, work.node_selector) == (
        ("reg.example/llm:v2",), 3, {"gpu": "a100"})  # fmt: skip
    assert work.pod_selector == {"serving.kserve.io/inferenceservice": "llm"}
    isvc["spec"]["predictor"].pop("maxReplicas")
    assert inference_service_workload(isvc).spare == 1


def test_replica_nodes() -> None:
    def pod(node: str | None, phase: str = "Running", app: str = "web") -> dict[str, Any]:
        return {"metadata": {"labels": {"app": app}}, "spec": {"nodeName": node},
                "status": {"phase": phase}}  # fmt: skip

    pods = [pod("a"), pod("b", "Succeeded"), pod(None, "Pending"), pod("c", app="db"), pod("d")]
    assert replica_nodes(pods, {"app": "web"}) == {"a", "d"}
    assert replica_nodes(pods, {}) == set()


# -- warmstart.dev/model ----------------------------------------------------------------------


def annotated(**annotations: str) -> dict[str, Any]:
    obj = dep()
    obj["metadata"]["annotations"] = annotations
    return obj


MODEL_CASES = [
    pytest.param({"warmstart.dev/model": "reg.example/m/llm:v1"},
                 ("reg.example/m/llm:v1", None, (), 1), id="model-only-auto-no-images"),
    pytest.param({"warmstart.dev/model": " reg.example/m/llm:v1 ", "warmstart.dev/prewarm": "3"},
                 ("reg.example/m/llm:v1", None, ("reg.example/init:v1", "reg.example/web:v1"), 3),
                 id="model-and-prewarm"),
    pytest.param({"warmstart.dev/model": "ubuntu", "warmstart.dev/model-containers": "c, e,c"},
                 ("docker.io/library/ubuntu:latest", ("c", "e"), (), 1),
                 id="normalised-and-containers"),
    pytest.param({"warmstart.dev/prewarm": "auto"},
                 (None, None, ("reg.example/init:v1", "reg.example/web:v1"), 1), id="no-model"),
]  # fmt: skip


@pytest.mark.parametrize(("annotations", "expected"), MODEL_CASES)
def test_model_annotation(annotations: dict[str, str], expected: tuple[Any, ...]) -> None:
    work = deployment_workload(annotated(**annotations), [])
    assert (work.model, work.model_containers, work.images, work.spare) == expected
    assert work.model_key == "Deployment/ns/web#model"


@pytest.mark.parametrize(
    ("value", "message"),
    [("", "must be a model reference"), ("Bad Ref", "warmstart.dev/model 'Bad Ref'"),
     (None, "must be a model reference")],
)  # fmt: skip
def test_bad_model_annotation(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_model(value)


def test_model_containers_annotation() -> None:
    assert parse_containers(None) is None
    assert parse_containers("a,b, a") == ("a", "b")
    with pytest.raises(ValueError, match="names no container"):
        parse_containers(" , ")


def test_managed_by_either_annotation_unless_deleted() -> None:
    assert is_managed(annotated(**{"warmstart.dev/model": "r/m:v1"}))
    assert is_managed(annotated(**{"warmstart.dev/prewarm": "1"}))
    assert not is_managed(annotated(**{"warmstart.dev/model-containers": "c"}))
    gone = annotated(**{"warmstart.dev/model": "r/m:v1"})
    gone["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert not is_managed(gone)


def test_inference_service_with_a_model() -> None:
    isvc = {
        "metadata": {
            "name": "llm",
            "namespace": "ml",
            "annotations": {"warmstart.dev/model": "reg.example/m/llm:v1"},
        },
        "spec": {
            "predictor": {
                "maxReplicas": 3,
                "containers": [{"name": "k", "image": "reg.example/k:v1"}],
            }
        },
    }
    work = inference_service_workload(isvc)
    assert (work.model, work.images, work.spare) == ("reg.example/m/llm:v1", (), 2)
