"""deploy/kubernetes's agent pod, run with ``ctr`` as a kubelet would run it on one node.

Everything comes from the DaemonSet's YAML: the container's ``command`` (``$(VAR)`` expanded
from its env, as Kubernetes does), its ``env`` (``fieldRef``s answered for this node), its
``volumeMounts`` with their volumes (``hostPath``: a path below a temp dir standing in for the
node's ``/``; ``configMap`` / ``secret``: files written for the test; ``emptyDir`` with
``medium: Memory``: a tmpfs of its ``sizeLimit``), its ``securityContext`` (read-only root,
every capability dropped, no new privileges, the runtime's seccomp profile) and its CPU and
memory limits, and the pod's ``hostNetwork``. Kubernetes also mounts the service account's
token, CA and namespace and sets ``KUBERNETES_SERVICE_HOST``/``_PORT``: the caller gives those.

What ``ctr run`` cannot do is said where it matters: it has no ``--user`` (the image's default
user must be the one ``runAsUser`` names) and no probes (the test polls ``/healthz``).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "deploy" / "kubernetes" / "base"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
_FACTORS = {
    None: 1,
    "m": 0.001,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known names replaced, unknown ones left as they are,
    ``$$`` is one ``$``."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR.sub(one, text)


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity (``1Gi``, ``100m``, ``2``) as a number."""
    m = _QUANTITY.match(str(value).strip())
    if m is None:
        raise ValueError(f"not a quantity: {value!r}")
    return float(m.group(1)) * _FACTORS[m.group(2)]


def load_daemonset(path: Path = BASE / "daemonset-agent.yaml") -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    assert data["kind"] == "DaemonSet", path
    return data


def default_capabilities() -> list[str]:
    """The capabilities containerd's default spec gives a container (``ctr oci spec``)."""
    spec = json.loads(
        subprocess.run(["ctr", "oci", "spec"], capture_output=True, text=True, check=True).stdout
    )
    return sorted(spec["process"]["capabilities"]["bounding"])


@dataclass(frozen=True)
class PodMount:
    target: str
    kind: str  # bind or tmpfs
    source: Path | None = None
    read_only: bool = False
    size: int | None = None  # tmpfs

    def ctr_arg(self) -> str:
        if self.kind == "tmpfs":
            options = ["nosuid", "nodev"] + ([f"size={self.size}"] if self.size else [])
            return f"type=tmpfs,src=tmpfs,dst={self.target},options={':'.join(options)}"
        access = "ro" if self.read_only else "rw"
        return f"type=bind,src={self.source},dst={self.target},options=rbind:{access}"


@dataclass
class NodeFiles:
    """What the pod's volumes are on this node: ``root`` stands in for the node's ``/``
    (hostPaths), ``config_maps`` and ``secrets`` hold {volume source name: {key: text}}."""

    root: Path
    pod_dir: Path
    config_maps: dict[str, dict[str, str]] = field(default_factory=dict)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)

    def host_path(self, path: str) -> Path:
        return self.root / path.lstrip("/")


@dataclass
class AgentPod:
    """The agent container of the DaemonSet, ready for ``ctr run``."""

    command: list[str]
    env: dict[str, str]
    mounts: list[PodMount]
    host_network: bool
    read_only_root: bool
    drop_all: bool
    no_new_privileges: bool
    seccomp: bool
    run_as_user: int | None
    memory_limit: int | None
    cpus: float | None
    ports: dict[str, int]

    def ctr_run_args(
        self, image: str, container_id: str, log: Path, default_caps: list[str]
    ) -> list[str]:
        args = ["run", "-d", "--log-uri", log.resolve().as_uri()]
        if self.host_network:
            args.append("--net-host")
        if self.read_only_root:
            args.append("--read-only")
        if self.seccomp:
            args.append("--seccomp")
        if not self.no_new_privileges:
            args.append("--allow-new-privs")
        if self.drop_all:
            for cap in default_caps:
                args += ["--cap-drop", cap]
        if self.memory_limit:
            args += ["--memory-limit", str(self.memory_limit)]
        if self.cpus:
            args += ["--cpus", f"{self.cpus:g}"]
        for key, value in sorted(self.env.items()):
            args += ["--env", f"{key}={value}"]
        # containerd's CRI mounts the shallower paths first (/etc/containerd before
        # /etc/containerd/certs.d); so does this
        for mount in sorted(self.mounts, key=lambda m: len(PurePosixPath(m.target).parts)):
            args += ["--mount", mount.ctr_arg()]
        return [*args, "--", image, container_id, *self.command]


def _field_value(path: str, fields: Mapping[str, str]) -> str:
    if path not in fields:
        raise KeyError(f"the test answers no fieldRef {path!r}")
    return fields[path]


def agent_pod(
    daemonset: dict[str, Any],
    node: NodeFiles,
    fields: Mapping[str, str],
    *,
    injected_env: Mapping[str, str] | None = None,
    service_account: Path | None = None,
    socket_sources: Mapping[str, Path] | None = None,
) -> AgentPod:
    """The ``agent`` container. ``fields``: answers to the ``fieldRef``s (``spec.nodeName``,
    ``status.podIP``, ``metadata.namespace``); ``socket_sources``: the host file of each
    ``hostPath`` of type ``Socket``; ``service_account``: the directory Kubernetes would mount at
    :data:`SERVICE_ACCOUNT_DIR` (token, ca.crt, namespace)."""
    spec = daemonset["spec"]["template"]["spec"]
    [container] = [c for c in spec["containers"] if c["name"] == "agent"]
    env: dict[str, str] = dict(injected_env or {})
    sockets = dict(socket_sources or {})
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = expand(str(item["value"]), env)
        else:
            env[item["name"]] = _field_value(item["valueFrom"]["fieldRef"]["fieldPath"], fields)
    command = [expand(str(part), env) for part in container["command"]]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = []
    for vm in container.get("volumeMounts", []):
        volume = volumes[vm["name"]]
        read_only = bool(vm.get("readOnly", False))
        target = vm["mountPath"]
        if "hostPath" in volume:
            host = volume["hostPath"]
            if host.get("type") == "Socket":
                source = Path(sockets[host["path"]])
                assert source.is_socket(), f"{source} is not a socket"
            else:
                source = node.host_path(host["path"])
                if host.get("type") == "DirectoryOrCreate":
                    source.mkdir(parents=True, exist_ok=True)
                assert source.is_dir(), f"hostPath {host['path']} ({source}) is not a directory"
            mounts.append(PodMount(target, "bind", source, read_only))
        elif "configMap" in volume or "secret" in volume:
            secret = "secret" in volume
            name = volume["secret"]["secretName"] if secret else volume["configMap"]["name"]
            data = (node.secrets if secret else node.config_maps)[name]
            directory = node.pod_dir / ("secrets" if secret else "configmaps") / vm["name"]
            directory.mkdir(parents=True, exist_ok=True)
            mode = int(volume["secret"].get("defaultMode", 0o644)) if secret else 0o644
            for key, text in data.items():
                (directory / key).write_text(text)
                (directory / key).chmod(mode)
            source = directory / vm["subPath"] if "subPath" in vm else directory
            mounts.append(PodMount(target, "bind", source, read_only))
        elif "emptyDir" in volume:
            empty = volume["emptyDir"] or {}
            assert empty.get("medium") == "Memory", f"emptyDir {vm['name']} on disk"
            size = int(quantity(empty["sizeLimit"])) if "sizeLimit" in empty else None
            mounts.append(PodMount(target, "tmpfs", size=size))
        else:
            raise AssertionError(f"volume {vm['name']}: a kind this test does not run")
    if service_account is not None:
        mounts.append(PodMount(SERVICE_ACCOUNT_DIR, "bind", service_account, read_only=True))
    security = container.get("securityContext", {})
    pod_security = spec.get("securityContext", {})
    seccomp = (security.get("seccompProfile") or pod_security.get("seccompProfile") or {}).get(
        "type"
    )
    assert seccomp in (None, "RuntimeDefault"), seccomp
    limits = container.get("resources", {}).get("limits", {})
    return AgentPod(
        command=command,
        env=env,
        mounts=mounts,
        host_network=bool(spec.get("hostNetwork", False)),
        read_only_root=bool(security.get("readOnlyRootFilesystem", False)),
        drop_all="ALL" in (security.get("capabilities", {}).get("drop") or []),
        no_new_privileges=security.get("allowPrivilegeEscalation") is False,
        seccomp=seccomp == "RuntimeDefault",
        run_as_user=security.get("runAsUser", pod_security.get("runAsUser")),
        memory_limit=int(quantity(limits["memory"])) if "memory" in limits else None,
        cpus=quantity(limits["cpu"]) if "cpu" in limits else None,
        ports={p["name"]: int(p["containerPort"]) for p in container.get("ports", [])},
    )
