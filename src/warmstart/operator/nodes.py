"""Nodes as the operator sees them, and where each node's agent listens (pure).

A node is a candidate when it is Ready and not cordoned; an ImageCache narrows that with its
``nodeSelector``, a workload with its pod template's ``nodeSelector`` and tolerations. Each
node's agent is the agent pod scheduled there (``--agent-selector`` in ``--agent-namespace``:
its pod IP, which is the node's IP with the DaemonSet's host network, and ``--agent-port``),
unless ``--agent-url NODE=URL`` names it explicitly (tests, agents behind another address).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from warmstart.kube.selectors import node_selector_matches, tolerates_taints

DEFAULT_AGENT_SELECTOR = "app.kubernetes.io/name=warmstart-agent"


@dataclass(frozen=True)
class NodeInfo:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Mapping[str, Any], ...] = ()
    ready: bool = True
    unschedulable: bool = False

    @property
    def schedulable(self) -> bool:
        return self.ready and not self.unschedulable


def _ready(status: Mapping[str, Any]) -> bool:
    for cond in status.get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def node_info(obj: Mapping[str, Any]) -> NodeInfo:
    """From a Node object."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    return NodeInfo(
        name=str(meta.get("name") or ""),
        labels=dict(meta.get("labels") or {}),
        taints=tuple(t for t in spec.get("taints") or () if isinstance(t, Mapping)),
        ready=_ready(obj.get("status") or {}),
        unschedulable=bool(spec.get("unschedulable")),
    )


def eligible_nodes(
    nodes: Iterable[NodeInfo],
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] | None = None,
) -> list[NodeInfo]:
    """Ready, schedulable nodes matching ``node_selector``; with ``tolerations`` given (a
    workload's), also only nodes whose taints they tolerate. Sorted by name."""
    out = [
        n
        for n in nodes
        if n.schedulable
        and node_selector_matches(node_selector, n.labels)
        and (tolerations is None or tolerates_taints(tolerations, n.taints))
    ]
    return sorted(out, key=lambda n: n.name)


def _url(ip: str, port: int) -> str:
    host = f"[{ip}]" if ":" in ip and not ip.startswith("[") else ip
    return f"http://{host}:{port}"


def agent_urls(
    pods: Iterable[Mapping[str, Any]], port: int, overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Node name -> agent URL: running agent pods with an IP, then ``overrides`` on top."""
    out: dict[str, str] = {}
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name"))):
        spec, status = pod.get("spec") or {}, pod.get("status") or {}
        node, ip = spec.get("nodeName"), status.get("podIP")
        if not node or not ip or status.get("phase") != "Running":
            continue
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        out.setdefault(str(node), _url(str(ip), port))
    out.update(overrides or {})
    return out


def parse_agent_urls(entries: Iterable[str]) -> dict[str, str]:
    """``--agent-url NODE=URL`` values; ValueError (one line) if one is malformed."""
    out: dict[str, str] = {}
    for entry in entries:
        node, sep, url = entry.partition("=")
        if not sep or not node.strip() or not url.strip().startswith(("http://", "https://")):
            raise ValueError(f"--agent-url {entry!r} is not NODE=http://HOST:PORT")
        out[node.strip()] = url.strip().rstrip("/")
    return out
