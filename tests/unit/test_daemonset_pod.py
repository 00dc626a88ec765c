"""The test helper that runs deploy/kubernetes's agent pod with ctr (pure parts)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.daemonset_pod import NodeFiles, agent_pod, expand, load_daemonset, quantity


def test_dependent_variables_expand_as_kubernetes_does() -> None:
    env = {"NODE_NAME": "node-a"}
    assert expand("--node-id=$(NODE_NAME)", env) == "--node-id=node-a"
    assert expand("$(UNKNOWN)", env) == "$(UNKNOWN)"
    assert expand("$$(NODE_NAME)", env) == "$(NODE_NAME)"


def test_quantities() -> None:
    assert quantity("1Gi") == 2**30
    assert quantity("64Mi") == 64 * 2**20
    assert quantity("100m") == pytest.approx(0.1)
    assert quantity("2") == 2
    with pytest.raises(ValueError):
        quantity("lots")


def test_the_agent_pod_of_the_base_daemonset(tmp_path: Path) -> None:
    node = NodeFiles(
        tmp_path / "root",
        tmp_path / "pod",
        config_maps={"warmstart-agent": {"agent.toml": 'listen = "0.0.0.0:5050"\n'}},
        secrets={"warmstart-peer": {"peer_token": "t"}},
    )
    (node.root / "var/lib").mkdir(parents=True)
    socket_path = tmp_path / "ctd.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(socket_path))
        pod = agent_pod(
            load_daemonset(),
            node,
            {"metadata.namespace": "warmstart", "spec.nodeName": "n0", "status.podIP": "10.0.0.5"},
            socket_sources={"/run/containerd/containerd.sock": socket_path},
        )
    assert pod.command == [
        "warmstart", "agent", "--config", "/etc/warmstart/agent.toml",
        "--peers-from-kubernetes", "--node-id", "n0",
    ]  # fmt: skip
    assert pod.env["POD_IP"] == "10.0.0.5" and pod.env["POD_NAMESPACE"] == "warmstart"
    assert pod.host_network and pod.read_only_root and pod.drop_all and pod.seccomp
    assert pod.no_new_privileges and pod.run_as_user == 0
    assert pod.memory_limit == 2**30 and pod.cpus == 2
    targets = {m.target: m for m in pod.mounts}
    assert targets["/host/var/lib"].source == node.root / "var/lib"
    assert targets["/etc/containerd"].read_only and not targets["/etc/containerd/certs.d"].read_only
    assert targets["/tmp"].kind == "tmpfs" and targets["/tmp"].size == 64 * 2**20
    config = targets["/etc/warmstart/agent.toml"].source
    assert config is not None and config.read_text().startswith("listen")
    token = node.pod_dir / "secrets/peer-secret/peer_token"
    assert token.stat().st_mode & 0o777 == 0o400
    args = pod.ctr_run_args("r/warmstart:1", "cid", tmp_path / "log", ["CAP_CHOWN", "CAP_KILL"])
    assert args[:2] == ["run", "-d"] and "--net-host" in args and "--read-only" in args
    assert args[args.index("--") :] == ["--", "r/warmstart:1", "cid", *pod.command]
    mounts = [args[i + 1] for i, a in enumerate(args) if a == "--mount"]
    etc = next(i for i, m in enumerate(mounts) if "dst=/etc/containerd," in m)
    certs = next(i for i, m in enumerate(mounts) if "dst=/etc/containerd/certs.d," in m)
    assert etc < certs  # the parent first
    assert args.count("--cap-drop") == 2
