"""agent.toml in the base and the example overlay: real keys of warmstart.agent.config, and
paths that the DaemonSet mounts."""

from __future__ import annotations

import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from tests.support.manifests import BASE, OVERLAY, load_one
from warmstart.agent.config import AgentConfig, build_config
from warmstart.operator.model_mount import DEFAULT_STORE_PATH

AGENT_TOMLS = [BASE / "agent.toml", OVERLAY / "agent.toml"]


def _load(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


def _with_token_here(data: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The Secret's file is mounted in the pod, not here: point peer_token_file at a stand-in."""
    assert data["peer_token_file"] == "/etc/warmstart/secret/peer_token"
    token = tmp_path / "peer_token"
    token.write_text("a-test-token\n")
    return {**data, "peer_token_file": str(token)}


@pytest.mark.parametrize("path", AGENT_TOMLS, ids=["base", "overlay"])
def test_agent_toml_uses_real_keys(path: Path, tmp_path: Path) -> None:
    data = _load(path)
    unknown = set(data) - set(AgentConfig.model_fields)
    assert unknown == set(), f"{path}: keys the agent does not know: {sorted(unknown)}"
    config = build_config(_with_token_here(data, tmp_path), str(path))
    assert config.peer_token == "a-test-token"
    assert config.containerd_certs_dir == Path("/etc/containerd/certs.d")
    assert config.listen_host == "0.0.0.0"  # loopback for containerd, node IP for peers
    assert config.listen_port == 5050
    assert config.containerd_namespace == "k8s.io"


def test_overlay_keeps_the_base_settings_and_adds_an_upstream(tmp_path: Path) -> None:
    base, overlay = _load(AGENT_TOMLS[0]), _load(AGENT_TOMLS[1])
    for key, value in base.items():
        if key != "budget":
            assert overlay.get(key) == value, key
    assert overlay["budget"] != base["budget"]
    assert list(overlay["upstreams"]) == ["registry.example.internal"]
    config = build_config(_with_token_here(overlay, tmp_path))
    assert config.default_upstream == "registry.example.internal"
    assert config.budget == 200 * 2**30


def _mounts(daemonset: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = daemonset["spec"]["template"]["spec"]
    [container] = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    return {m["mountPath"]: {**m, "volume": volumes[m["name"]]} for m in container["volumeMounts"]}


def _mount_of(mounts: dict[str, dict[str, Any]], path: str) -> tuple[str, dict[str, Any]]:
    """The mount a path is under (the deepest one)."""
    p = PurePosixPath(path)
    best = max(
        (m for m in mounts if p == PurePosixPath(m) or PurePosixPath(m) in p.parents),
        key=len,
        default=None,
    )
    assert best is not None, f"{path} is not under any mount"
    return best, mounts[best]


def test_paths_in_agent_toml_are_mounted() -> None:
    daemonset = load_one(BASE / "daemonset-agent.yaml")
    mounts = _mounts(daemonset)
    data = _load(AGENT_TOMLS[0])
    # the store and containerd's root share ONE mount (a hard link across two mounts: EXDEV)
    store_mount, store = _mount_of(mounts, data["store"])
    root_mount, _ = _mount_of(mounts, data["containerd_root"])
    assert store_mount == root_mount
    host = store["volume"]["hostPath"]["path"]
    rel_store = PurePosixPath(data["store"]).relative_to(store_mount)
    rel_root = PurePosixPath(data["containerd_root"]).relative_to(root_mount)
    assert PurePosixPath(host) / rel_store == PurePosixPath("/var/lib/warmstart/store")
    # the operator's default --agent-store-path: what workloads' model hostPaths start with
    assert PurePosixPath(host) / rel_store == PurePosixPath(DEFAULT_STORE_PATH)
    assert PurePosixPath(host) / rel_root == PurePosixPath("/var/lib/containerd")
    assert not store.get("readOnly")
    # containerd's socket, exactly
    sock = mounts[data["containerd_socket"]]
    assert sock["volume"]["hostPath"] == {
        "path": "/run/containerd/containerd.sock",
        "type": "Socket",
    }
    # the peer token comes from the Secret
    _, token = _mount_of(mounts, data["peer_token_file"])
    assert token["volume"]["secret"]["secretName"] == "warmstart-peer"
    # the config file the command names is the ConfigMap's agent.toml
    [container] = daemonset["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    config_path = command[command.index("--config") + 1]
    config = mounts[config_path]
    assert config["subPath"] == "agent.toml" and config["volume"]["configMap"]["name"] == (
        "warmstart-agent"
    )
