"""A cluster in a box on loopback: N nodes, each a private containerd and a ``warmstart agent``
(the agents are each other's peers and mirror the given upstream registries).

Used by ``make demo`` and the endpoint integration tests; the scale-out benchmark puts the same
nodes into network namespaces (``warmstart_harness.testbed.netcluster``). :meth:`LocalCluster.close`
deletes every replica container the nodes still run, then stops the agents and wipes the
containerd instances, also after a failure.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from warmstart_harness.testbed.agent import AgentProcess
from warmstart_harness.testbed.containerd import ContainerdProcess
from warmstart_harness.testbed.net import free_port


@dataclass
class ClusterNode:
    name: str
    containerd: ContainerdProcess
    agent: AgentProcess
    host: str = "127.0.0.1"
    slots: int = 4
    netns: str | None = None

    def node_option(self) -> str:
        """This node as ``warmstart serve --node`` takes it."""
        extra = f",host={self.host},slots={self.slots}"
        if self.netns:
            extra += f",netns={self.netns}"
        return f"{self.name}={self.containerd.socket},{self.agent.url}{extra}"


def remove_containers(ctd: ContainerdProcess) -> None:
    """Kill and delete every task and container of the instance's namespace (cleanup)."""
    if ctd.proc is None or ctd.proc.poll() is not None:
        return
    listing = ctd.ctr("containers", "ls", "-q", check=False, timeout=30)
    for cid in listing.stdout.split():
        ctd.ctr("tasks", "kill", "--all", "--signal", "SIGKILL", cid, check=False, timeout=30)
        ctd.ctr("tasks", "delete", "-f", cid, check=False, timeout=30)
        ctd.ctr("containers", "delete", cid, check=False, timeout=30)


class LocalCluster:
    """``nodes`` nodes on 127.0.0.1; containerd namespace ``namespace`` for replicas and hot
    pre-warms alike."""

    def __init__(
        self,
        upstreams: Mapping[str, str],
        *,
        nodes: Sequence[str] = ("node-a", "node-b"),
        slots: int = 4,
        namespace: str = "warmstart",
        base: Path | None = None,
        agent_settings: Mapping[str, object] | None = None,
        peer_token: str | None = None,
    ) -> None:
        self.upstreams = dict(upstreams)
        self.names = list(nodes)
        self.slots = slots
        self.namespace = namespace
        self._own_base = base is None
        # Short: containerd's socket path must fit a unix socket address.
        self.base = Path(tempfile.mkdtemp(prefix="wscl-", dir="/tmp")) if base is None else base
        self.agent_settings = dict(agent_settings or {})
        # The agents' shared secret: peers send it to each other, control writes need it.
        self.peer_token = peer_token
        self.nodes: dict[str, ClusterNode] = {}

    def start(self) -> Self:
        try:
            ports = {name: free_port() for name in self.names}
            urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
            for name in self.names:
                ctd = ContainerdProcess(self.base / f"{name}-ctd", namespace=self.namespace)
                ctd.start()
                try:
                    agent = AgentProcess(
                        self.base / f"{name}-agent",
                        upstreams=self.upstreams,
                        peers=[u for n, u in urls.items() if n != name],
                        port=ports[name],
                        settings={
                            "node_id": name,
                            "containerd_socket": str(ctd.socket),
                            "containerd_namespace": self.namespace,
                            "peer_token": self.peer_token,
                            **self.agent_settings,
                        },
                    )
                except BaseException:
                    ctd.wipe()
                    raise
                self.nodes[name] = ClusterNode(name, ctd, agent, slots=self.slots)
        except BaseException:
            self.close()
            raise
        return self

    def node_options(self) -> list[str]:
        return [n.node_option() for n in self.nodes.values()]

    def write_token_file(self, path: Path) -> Path:
        """The peer token in a file readable by its owner only (for ``--peer-token-file``)."""
        if not self.peer_token:
            raise RuntimeError("this cluster has no peer token")
        path.touch(mode=0o600)
        path.write_text(self.peer_token + "\n")
        return path

    def containers(self, name: str) -> list[str]:
        ctd = self.nodes[name].containerd
        return ctd.ctr("containers", "ls", "-q", check=False, timeout=30).stdout.split()

    def kill_replica(self, name: str, container_id: str) -> None:
        """SIGKILL a replica's processes, as a crash would."""
        self.nodes[name].containerd.ctr(
            "tasks", "kill", "--all", "--signal", "SIGKILL", container_id, timeout=30
        )

    def close(self) -> None:
        for node in self.nodes.values():
            try:
                remove_containers(node.containerd)
            except (subprocess.SubprocessError, OSError):
                pass
            node.agent.cleanup()
            node.containerd.wipe()
        self.nodes.clear()
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
