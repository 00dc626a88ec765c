"""The model volume of a workload annotated warmstart.dev/model, and the one patch of its pod
spec (pure)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from warmstart.operator.labels import PREFERRED, model_label
from warmstart.operator.model_mount import (
    DEFAULT_STORE_PATH,
    MODEL_MOUNT,
    has_model_volume,
    model_host_path,
    model_volume,
    mount_changes,
)
from warmstart.operator.pod_patch import workload_patch

REF = "reg.example/models/llm:v1"
PATH = "/var/lib/warmstart/store/models/by-ref/reg.example/models/llm:v1"
OURS = model_volume(PATH)
USER_VOLUME = {"name": "cache", "emptyDir": {}}
USER_MOUNT = {"name": "cache", "mountPath": "/cache"}


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (what the API server does with ours)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


def pod(*containers: dict[str, Any], volumes: list[Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers)}
    if volumes is not None:
        spec["volumes"] = volumes
    return spec


def c(name: str, *mounts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "image": f"reg.example/{name}:v1"}
    if mounts:
        out["volumeMounts"] = list(mounts)
    return out


OTHER_AT_PATH = {"name": "cache", "mountPath": "/opt/ml/model/"}

CASES = [
    pytest.param(pod(c("a", USER_MOUNT), c("b"), volumes=[USER_VOLUME]), PATH, None,
                 pod(c("a", USER_MOUNT, MODEL_MOUNT), c("b", MODEL_MOUNT),
                     volumes=[USER_VOLUME, OURS]), id="every-container-user-volumes-kept"),
    pytest.param(pod(c("a"), c("b")), PATH, ("b",),
                 pod(c("a"), c("b", MODEL_MOUNT), volumes=[OURS]), id="named-containers"),
    pytest.param(pod(c("a", OTHER_AT_PATH), c("b")), PATH, None,
                 pod(c("a", OTHER_AT_PATH), c("b", MODEL_MOUNT), volumes=[OURS]),
                 id="a-user-mount-at-the-path-wins"),
    pytest.param(pod(c("a", OTHER_AT_PATH)), PATH, None, pod(c("a", OTHER_AT_PATH)),
                 id="nobody-mounts-it-no-volume"),
    pytest.param(pod(c("a", MODEL_MOUNT, USER_MOUNT), volumes=[OURS, USER_VOLUME]), PATH, None,
                 pod(c("a", MODEL_MOUNT, USER_MOUNT), volumes=[OURS, USER_VOLUME]),
                 id="already-there-in-another-order"),
    pytest.param(pod(c("a", MODEL_MOUNT), volumes=[USER_VOLUME, model_volume("/old")]), PATH,
                 None, pod(c("a", MODEL_MOUNT), volumes=[USER_VOLUME, OURS]),
                 id="another-model-replaced-in-place"),
    pytest.param(pod(c("a", USER_MOUNT, MODEL_MOUNT), c("b", MODEL_MOUNT),
                     volumes=[USER_VOLUME, OURS]), None, None,
                 pod(c("a", USER_MOUNT), c("b"), volumes=[USER_VOLUME]), id="removed"),
    pytest.param(pod(c("a", MODEL_MOUNT), volumes=[OURS]), None, None, pod(c("a")),
                 id="removed-to-nothing"),
    pytest.param(pod(c("a", MODEL_MOUNT), c("b", MODEL_MOUNT), volumes=[OURS]), PATH, ("a",),
                 pod(c("a", MODEL_MOUNT), c("b"), volumes=[OURS]), id="container-no-longer-named"),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "host_path", "containers", "expected"), CASES)
def test_mount_changes(
    spec: dict[str, Any], host_path: str | None, containers: Any, expected: dict[str, Any]
) -> None:
    before = copy.deepcopy(spec)
    changes = mount_changes(spec, host_path, containers)
    assert spec == before  # not modified
    applied = merge(spec, changes) if changes else spec
    assert applied == expected
    assert mount_changes(applied, host_path, containers) is None  # again: no patch, no rollout
    if changes is not None:  # a merge patch replaces lists: it names only what changed
        assert set(changes) <= {"volumes", "containers"}


def test_a_named_container_that_does_not_exist() -> None:
    with pytest.raises(ValueError, match=r"model-containers names x: not a container .*a, b"):
        mount_changes(pod(c("a"), c("b")), PATH, ("x",))
    assert mount_changes(pod(c("a")), None, ("x",)) is None  # removing: nothing to name


def test_the_host_path_is_the_agents_stable_per_reference_link() -> None:
    assert model_host_path(DEFAULT_STORE_PATH, REF) == PATH
    digest = "reg.example:5000/m/x@sha256:" + "a" * 64
    assert model_host_path("/srv/ws/", digest) == f"/srv/ws/models/by-ref/{digest}"
    assert OURS == {"name": "warmstart-model", "hostPath": {"path": PATH, "type": "Directory"}}
    assert MODEL_MOUNT == {"name": "warmstart-model", "mountPath": "/opt/ml/model",
                           "readOnly": True}  # fmt: skip
    assert has_model_volume({"volumes": [USER_VOLUME, OURS]})
    assert not has_model_volume({"volumes": [USER_VOLUME]}) and not has_model_volume({})


def test_kserve_predictor_with_a_serving_runtime_container() -> None:
    predictor = {"model": {"modelFormat": {"name": "onnx"}, "volumeMounts": [USER_MOUNT]},
                 "volumes": [USER_VOLUME]}  # fmt: skip
    changes = mount_changes(predictor, PATH, None, "InferenceService")
    assert changes == {
        "volumes": [USER_VOLUME, OURS],
        "model": {"volumeMounts": [USER_MOUNT, MODEL_MOUNT]},
    }
    applied = merge(predictor, changes)
    assert applied["model"]["modelFormat"] == {"name": "onnx"}
    assert mount_changes(applied, PATH, None, "InferenceService") is None
    removed = merge(applied, mount_changes(applied, None, None, "InferenceService"))
    assert removed == predictor


def test_kserve_predictor_with_containers() -> None:
    predictor = {"containers": [c("kserve-container")], "minReplicas": 1}
    changes = mount_changes(predictor, PATH, None, "InferenceService")
    assert changes == {"volumes": [OURS], "containers": [c("kserve-container", MODEL_MOUNT)]}


# -- the one patch ----------------------------------------------------------------------------

USER_TERM = {"weight": 7, "preference": {"matchExpressions": [
    {"key": "zone", "operator": "In", "values": ["a"]}]}}  # fmt: skip


def deployment(pod_spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "llm", "resourceVersion": "42"},
            "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "llm"}},
                                                  "spec": pod_spec}}}  # fmt: skip


def test_one_patch_for_hint_and_volume_with_the_resource_version() -> None:
    dep = deployment({**pod(c("a", USER_MOUNT), volumes=[USER_VOLUME]),
                      "affinity": {"nodeAffinity": {PREFERRED: [USER_TERM]}}})  # fmt: skip
    patch = workload_patch(dep, "Deployment", model=REF, model_host_path=PATH)
    assert patch is not None
    assert patch["metadata"] == {"resourceVersion": "42"}
    spec = patch["spec"]["template"]["spec"]
    assert set(spec) == {"affinity", "volumes", "containers"}
    terms = spec["affinity"]["nodeAffinity"][PREFERRED]
    assert terms[0] == USER_TERM
    assert {t["preference"]["matchExpressions"][0]["key"] for t in terms[1:]} == {
        model_label(REF)}  # fmt: skip
    applied = merge(dep, {k: v for k, v in patch.items() if k != "metadata"})
    assert applied["spec"]["replicas"] == 2  # nothing else touched
    assert applied["spec"]["template"]["metadata"] == {"labels": {"app": "llm"}}
    assert workload_patch(applied, "Deployment", model=REF, model_host_path=PATH) is None
    # the annotation goes: our volume, mounts and terms go, the user's stay
    gone = workload_patch(applied, "Deployment")
    assert gone is not None
    cleaned = merge(applied, {k: v for k, v in gone.items() if k != "metadata"})
    assert cleaned == dep


def test_a_model_on_an_inference_service_predictor() -> None:
    isvc = {"metadata": {"name": "x"}, "spec": {"predictor": pod(c("k"))}}
    patch = workload_patch(isvc, "InferenceService", model=REF, model_host_path=PATH)
    assert patch is not None and "metadata" not in patch  # no resourceVersion known
    predictor = patch["spec"]["predictor"]
    assert predictor["volumes"] == [OURS]
    assert predictor["containers"] == [c("k", MODEL_MOUNT)]
