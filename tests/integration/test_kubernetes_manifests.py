"""deploy/kubernetes rendered by the real ``kubectl kustomize``, every object validated against
the Kubernetes OpenAPI schemas (kubernetes-validate, strict), and the properties that matter
checked on what would be applied."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from packaging.version import Version

from tests.support.manifests import (
    BASE,
    MONITORING,
    OVERLAY,
    crd_validator,
    exported_metric_names,
    find,
    load_docs,
    promql_metric_names,
    render,
    rule_expressions,
    schema_errors,
)
from tests.support.tools import require_tool
from warmstart.operator.model_mount import DEFAULT_STORE_PATH

# prometheus-operator's kinds: not in kubernetes-validate's schemas (they are not Kubernetes
# APIs); checked by _check_monitoring_shape instead.
NOT_IN_KUBERNETES_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
MIN_SCHEMA_VERSION = Version("1.30")


@pytest.fixture(scope="module")
def kubectl() -> str:
    return require_tool("kubectl")


@pytest.fixture(scope="module")
def kubectl_versions(kubectl: str) -> dict[str, Any]:
    proc = subprocess.run(
        [kubectl, "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    versions = json.loads(proc.stdout)
    print(
        f"kubectl {versions['clientVersion']['gitVersion']}, "
        f"kustomize {versions.get('kustomizeVersion', '(built in, version not reported)')}"
    )
    return versions


@pytest.fixture(scope="module")
def base(kubectl: str, kubectl_versions: dict[str, Any]) -> list[dict[str, Any]]:
    return render(kubectl, BASE)


@pytest.fixture(scope="module")
def overlay(kubectl: str, kubectl_versions: dict[str, Any]) -> list[dict[str, Any]]:
    return render(kubectl, OVERLAY)


@pytest.fixture(scope="module")
def monitoring(kubectl: str, kubectl_versions: dict[str, Any]) -> list[dict[str, Any]]:
    return render(kubectl, MONITORING)


def _schema_version() -> str:
    version = kubernetes_validate.latest_version()
    assert Version(version) >= MIN_SCHEMA_VERSION, f"kubernetes-validate ships only {version}"
    return version


def _validate_all(objs: list[dict[str, Any]]) -> list[str]:
    version = _schema_version()
    errors = []
    for obj in objs:
        if (obj["apiVersion"], obj["kind"]) in NOT_IN_KUBERNETES_SCHEMAS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {e.message}")
    return errors


def test_kubectl_version_is_recorded(kubectl_versions: dict[str, Any]) -> None:
    client = kubectl_versions["clientVersion"]
    assert int(client["major"]) == 1 and int(client["minor"].rstrip("+")) >= 14  # kustomize


def test_base_renders_and_validates(base: list[dict[str, Any]]) -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in base)
    assert kinds == [
        ("ClusterRole", "warmstart-operator"),
        ("ClusterRoleBinding", "warmstart-operator"),
        ("ConfigMap", kinds[2][1]),
        ("CustomResourceDefinition", "imagecaches.warmstart.dev"),
        ("DaemonSet", "warmstart-agent"),
        ("Deployment", "warmstart-operator"),
        ("Namespace", "warmstart"),
        ("Role", "warmstart-agent"),
        ("RoleBinding", "warmstart-agent"),
        ("Service", "warmstart-agent"),
        ("ServiceAccount", "warmstart-agent"),
        ("ServiceAccount", "warmstart-operator"),
    ]
    assert kinds[2][1].startswith("warmstart-agent-")  # generated, hash-suffixed
    assert not any(o["kind"] == "Secret" for o in base)  # never a secret value in the base
    assert _validate_all(base) == []


def test_overlay_renders_and_validates(overlay: list[dict[str, Any]]) -> None:
    assert _validate_all(overlay) == []


def test_monitoring_renders_and_validates(monitoring: list[dict[str, Any]]) -> None:
    assert sorted(o["kind"] for o in monitoring) == [
        "ConfigMap",
        "PrometheusRule",
        "ServiceMonitor",
    ]
    assert _validate_all(monitoring) == []
    _check_monitoring_shape(monitoring)


def test_validation_catches_a_broken_object(base: list[dict[str, Any]]) -> None:
    daemonset = json.loads(json.dumps(find(base, "DaemonSet")))
    daemonset["spec"]["template"]["spec"]["hostNetwrk"] = True
    daemonset["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "5050"
    errors = _validate_all([daemonset])
    assert len(errors) == 1 and "DaemonSet/warmstart-agent" in errors[0]


# -- the agent DaemonSet ----------------------------------------------------------------------


def _pod(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return find(objs, kind, name)["spec"]["template"]["spec"]


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    [container] = pod["containers"]
    return container


def _mounts(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    volumes = {v["name"]: v for v in pod["volumes"]}
    return {
        m["mountPath"]: {**m, "volume": volumes[m["name"]]} for m in _container(pod)["volumeMounts"]
    }


@pytest.mark.parametrize("which", ["base", "overlay"])
def test_agent_daemonset(which: str, request: pytest.FixtureRequest) -> None:
    objs = request.getfixturevalue(which)
    pod = _pod(objs, "DaemonSet", "warmstart-agent")
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in pod["tolerations"]
    assert pod["serviceAccountName"] == "warmstart-agent"
    container = _container(pod)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 5050}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    assert set(container["resources"]) == {"requests", "limits"}
    assert container["command"][:4] == [
        "warmstart",
        "agent",
        "--config",
        "/etc/warmstart/agent.toml",
    ]
    assert "--peers-from-kubernetes" in container["command"]
    env = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in container["env"]
        if "valueFrom" in e
    }
    assert env == {
        "POD_NAMESPACE": "metadata.namespace",
        "NODE_NAME": "spec.nodeName",
        "POD_IP": "status.podIP",
    }

    mounts = _mounts(pod)
    host_paths = {
        path: (m["volume"]["hostPath"]["path"], m["volume"]["hostPath"].get("type"))
        for path, m in mounts.items()
        if "hostPath" in m["volume"]
    }
    # one hostPath holds both the store and containerd's root: no EXDEV between them
    assert host_paths["/host/var/lib"] == ("/var/lib", "Directory")
    assert host_paths["/etc/containerd/certs.d"] == ("/etc/containerd/certs.d", "DirectoryOrCreate")
    assert host_paths["/run/containerd/containerd.sock"] == (
        "/run/containerd/containerd.sock",
        "Socket",
    )
    assert not any(
        h.startswith(("/var/lib/warmstart", "/var/lib/containerd")) for h, _ in host_paths.values()
    ), "a separate mount for the store or containerd's root would make hard links fail (EXDEV)"
    # containerd's config, read-only: the agent checks the CRI plugin's config_path
    assert host_paths["/etc/containerd"] == ("/etc/containerd", "DirectoryOrCreate")
    assert mounts["/etc/containerd"].get("readOnly") is True
    assert not mounts["/etc/containerd/certs.d"].get("readOnly")
    assert len(host_paths) == 4

    sc = container["securityContext"]
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert not sc["capabilities"].get("add")
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "emptyDir" in mounts["/tmp"]["volume"]


def test_agent_service_is_headless(base: list[dict[str, Any]]) -> None:
    service = find(base, "Service", "warmstart-agent")
    assert service["spec"]["clusterIP"] == "None"
    [port] = service["spec"]["ports"]
    assert port["name"] == "http" and port["port"] == 5050
    pod_labels = find(base, "DaemonSet", "warmstart-agent")["spec"]["template"]["metadata"][
        "labels"
    ]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_operator_deployment(base: list[dict[str, Any]]) -> None:
    deployment = find(base, "Deployment", "warmstart-operator")
    assert deployment["spec"]["replicas"] == 1  # kopf --standalone: no peering
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "warmstart-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert not pod.get("hostNetwork")
    container = _container(pod)
    assert container["command"] == [
        "warmstart",
        "operator",
        "--liveness",
        "http://0.0.0.0:8080/healthz",
        "--agent-store-path",
        DEFAULT_STORE_PATH,
    ]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"health": 8080}
    sc = container["securityContext"]
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False


def test_every_object_is_labelled_part_of_warmstart(
    base: list[dict[str, Any]], monitoring: list[dict[str, Any]]
) -> None:
    for obj in base + monitoring:
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "warmstart", obj["kind"]


# -- RBAC ---------------------------------------------------------------------------------------


def _rules(objs: list[dict[str, Any]], kind: str, name: str) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in find(objs, kind, name)["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_agent_role_grants_only_endpointslices(base: list[dict[str, Any]]) -> None:
    assert _rules(base, "Role", "warmstart-agent") == {
        ("discovery.k8s.io", "endpointslices", verb) for verb in ("get", "list", "watch")
    }
    binding = find(base, "RoleBinding", "warmstart-agent")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "warmstart-agent",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "warmstart-agent", "namespace": "warmstart"}
    ]
    # nothing else binds the agent's ServiceAccount
    for obj in base:
        if obj["kind"] in ("RoleBinding", "ClusterRoleBinding") and obj is not binding:
            assert all(s["name"] != "warmstart-agent" for s in obj["subjects"])


def test_operator_cluster_role(base: list[dict[str, Any]]) -> None:
    granted = _rules(base, "ClusterRole", "warmstart-operator")
    wanted = (
        {("warmstart.dev", "imagecaches", v) for v in ("get", "list", "watch", "patch")}
        | {("warmstart.dev", "imagecaches/status", v) for v in ("patch", "update")}
        | {("", "nodes", v) for v in ("get", "list", "watch", "patch")}
        | {("", "pods", v) for v in ("get", "list", "watch")}
        | {("discovery.k8s.io", "endpointslices", v) for v in ("get", "list", "watch")}
        | {("apps", "deployments", v) for v in ("get", "list", "watch", "patch")}
        | {("autoscaling", "horizontalpodautoscalers", v) for v in ("get", "list", "watch")}
        | {("serving.kserve.io", "inferenceservices", v) for v in ("get", "list", "watch", "patch")}
        | {("", "secrets", "get")}
        | {(g, "events", v) for g in ("", "events.k8s.io") for v in ("create", "patch")}
        | {
            ("apiextensions.k8s.io", "customresourcedefinitions", v)
            for v in ("get", "list", "watch")
        }
        | {("", "namespaces", v) for v in ("list", "watch")}
    )
    assert granted == wanted
    # secrets: read by name only, never listed or watched
    assert {v for g, r, v in granted if r == "secrets"} == {"get"}
    assert not any(g == "kopf.dev" for g, _, _ in granted)  # --standalone: no peering
    binding = find(base, "ClusterRoleBinding", "warmstart-operator")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "warmstart-operator", "namespace": "warmstart"}
    ]


@pytest.mark.parametrize("which", ["base", "overlay"])
def test_no_wildcards_anywhere(which: str, request: pytest.FixtureRequest) -> None:
    for obj in request.getfixturevalue(which):
        for rule in obj.get("rules", []) if obj["kind"] in ("Role", "ClusterRole") else []:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), (obj["metadata"]["name"], rule)
            assert "nonResourceURLs" not in rule


# -- the overlay --------------------------------------------------------------------------------


def test_overlay_sets_image_secret_config_and_resources(overlay: list[dict[str, Any]]) -> None:
    for kind, name in (("DaemonSet", "warmstart-agent"), ("Deployment", "warmstart-operator")):
        assert _container(_pod(overlay, kind, name))["image"] == "warmstart:0.1.0"
    for obj in overlay:
        if obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding",
                               "CustomResourceDefinition"):  # fmt: skip
            assert obj["metadata"]["namespace"] == "warmstart", obj["kind"]

    [secret] = [o for o in overlay if o["kind"] == "Secret"]
    assert secret["metadata"]["name"].startswith("warmstart-peer-")
    assert set(secret["data"]) == {"peer_token"}
    token = base64.b64decode(secret["data"]["peer_token"])
    assert token == (OVERLAY / "peer_token.example").read_bytes()
    assert token.startswith(b"PLACEHOLDER-not-a-real-token")
    [config] = [o for o in overlay if o["kind"] == "ConfigMap"]
    assert config["data"]["agent.toml"] == (OVERLAY / "agent.toml").read_text()

    agent = _pod(overlay, "DaemonSet", "warmstart-agent")
    volumes = {v["name"]: v for v in agent["volumes"]}
    # the generated, hash-suffixed names are what the pods reference
    assert volumes["config"]["configMap"]["name"] == config["metadata"]["name"]
    assert volumes["peer-secret"]["secret"]["secretName"] == secret["metadata"]["name"]
    operator = _pod(overlay, "Deployment", "warmstart-operator")
    assert {v["name"]: v for v in operator["volumes"]}["peer-secret"]["secret"]["secretName"] == (
        secret["metadata"]["name"]
    )
    # resources from the patch, the rest of the container kept
    resources = _container(agent)["resources"]
    assert resources["limits"] == {"cpu": "4", "memory": "2Gi"}
    assert _container(agent)["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_no_real_registry_hostnames(overlay: list[dict[str, Any]]) -> None:
    text = json.dumps(overlay)
    for host in ("docker.io", "ghcr.io", "quay.io", "gcr.io", "registry-1.docker.io"):
        assert host not in text, host


@pytest.fixture
def other_namespace_overlay() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="warmstart-overlay-"))
    try:
        for f in OVERLAY.iterdir():
            shutil.copy(f, tmp / f.name)
        kustomization = (tmp / "kustomization.yaml").read_text()
        kustomization = kustomization.replace("../../base", os.path.relpath(BASE, tmp))
        kustomization = kustomization.replace("namespace: warmstart\n", "namespace: ws-test\n")
        (tmp / "kustomization.yaml").write_text(kustomization)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_an_overlay_can_move_everything_to_another_namespace(
    kubectl: str, kubectl_versions: dict[str, Any], other_namespace_overlay: Path
) -> None:
    objs = render(kubectl, other_namespace_overlay)
    # kustomize v3+ renames the Namespace object too; the v2.0.3 in kubectl <= 1.20 does not
    # (deploy/kubernetes/README.md: with such a kubectl, an overlay that moves namespaces renames it itself).
    if "kustomizeVersion" in kubectl_versions:
        assert find(objs, "Namespace")["metadata"]["name"] == "ws-test"
    else:
        objs = [o for o in objs if o["kind"] != "Namespace"]
    for obj in objs:
        if "namespace" in obj["metadata"]:
            assert obj["metadata"]["namespace"] == "ws-test", obj["kind"]
        for subject in obj.get("subjects", []):
            assert subject["namespace"] == "ws-test", obj["kind"]
    assert _validate_all(objs) == []


# -- the CRD and the examples ----------------------------------------------------------------


def test_rendered_crd_accepts_the_examples(base: list[dict[str, Any]]) -> None:
    validator = crd_validator(find(base, "CustomResourceDefinition"))
    for obj in load_docs(BASE.parent / "examples" / "imagecache.yaml"):
        assert schema_errors(validator, obj) == []


MODEL_WORKLOADS = BASE.parent / "examples" / "model-workloads.yaml"


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386: what the API server does with the operator's merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def test_model_workload_examples_validate_before_and_after_the_operators_patch() -> None:
    from warmstart.operator.model_mount import model_host_path
    from warmstart.operator.pod_patch import workload_patch
    from warmstart.operator.workloads import deployment_workload

    docs = load_docs(MODEL_WORKLOADS)
    assert [d["metadata"]["name"] for d in docs] == ["llm", "llm-image-volume"]
    assert _validate_all(docs) == []
    annotated = docs[0]
    work = deployment_workload(annotated, [])
    assert work.model == "registry.example.internal/models/qwen3-8b:v1"
    host_path = model_host_path(DEFAULT_STORE_PATH, work.model)
    patch = workload_patch(annotated, "Deployment", model=work.model, model_host_path=host_path,
                           model_containers=work.model_containers)  # fmt: skip
    assert patch is not None
    patched = _merge(annotated, patch)
    assert _validate_all([patched]) == []
    pod = patched["spec"]["template"]["spec"]
    assert pod["volumes"][-1] == {
        "name": "warmstart-model",
        "hostPath": {"path": host_path, "type": "Directory"},
    }
    server, sidecar = pod["containers"]
    assert server["volumeMounts"][-1] == {
        "name": "warmstart-model",
        "mountPath": "/opt/ml/model",
        "readOnly": True,
    }
    assert "volumeMounts" not in sidecar
    # the alternative: an image volume (KEP-4639), read-only, the model's subdirectory
    alternative = docs[1]["spec"]["template"]["spec"]
    assert alternative["volumes"][0]["image"]["reference"].endswith("-modelcar:v1")
    assert alternative["containers"][0]["volumeMounts"][0]["readOnly"] is True


# -- monitoring ---------------------------------------------------------------------------------


def _check_monitoring_shape(objs: list[dict[str, Any]]) -> None:
    """ServiceMonitor and PrometheusRule: the fields prometheus-operator needs, minimally."""
    monitor = find(objs, "ServiceMonitor", "warmstart-agent")
    assert monitor["metadata"]["namespace"] == "warmstart"
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    labels = monitor["spec"]["selector"]["matchLabels"]
    assert labels == {
        "app.kubernetes.io/name": "warmstart-agent",
        "app.kubernetes.io/component": "agent",
    }
    rules = find(objs, "PrometheusRule", "warmstart")
    exported = exported_metric_names()
    for group in rules["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "record", "expr", "for", "labels", "annotations"}
            assert rule["labels"]["severity"] in ("critical", "warning", "info")
            assert rule["annotations"]["summary"]
    for where, expr in rule_expressions(rules):
        assert promql_metric_names(expr) <= exported.keys() | {"up"}, where
    dashboard = find(objs, "ConfigMap", "warmstart-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["warmstart-dashboard.json"])["uid"] == "warmstart"


def test_service_monitor_selects_the_agent_service(
    base: list[dict[str, Any]], monitoring: list[dict[str, Any]]
) -> None:
    service = find(base, "Service", "warmstart-agent")
    monitor = find(monitoring, "ServiceMonitor", "warmstart-agent")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "warmstart-agent"


@pytest.mark.parametrize("which", ["base", "overlay"])
@pytest.mark.parametrize(
    ("kind", "name"), [("DaemonSet", "warmstart-agent"), ("Deployment", "warmstart-operator")]
)
def test_commands_parse_with_the_real_cli(
    which: str, kind: str, name: str, request: pytest.FixtureRequest
) -> None:
    """Every flag the manifests pass exists: the real CLI parses the command line (with --help
    appended, so nothing runs); an unknown flag is a usage error (exit 2)."""
    from typer.testing import CliRunner

    from warmstart.cli.main import app

    command = _container(_pod(request.getfixturevalue(which), kind, name))["command"]
    assert command[0] == "warmstart"
    runner = CliRunner()
    parsed = runner.invoke(app, [*command[1:], "--help"])
    assert parsed.exit_code == 0, parsed.output
    assert "Usage:" in parsed.output
    wrong = runner.invoke(app, [*command[1:], "--no-such-flag", "--help"])
    assert wrong.exit_code == 2  # the check can fail
