"""Config keys for Kubernetes: peers from EndpointSlices, the peer token from a file, node
setup (containerd_certs_dir, containerd_config)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from warmstart.agent.config import (
    DEFAULT_CONTAINERD_CONFIG,
    DEFAULT_PEERS_SERVICE,
    ConfigError,
    build_config,
    load_config,
)
from warmstart.cli.main import app


def test_defaults() -> None:
    cfg = build_config({})
    assert cfg.peers_from_kubernetes is False
    assert cfg.peers_service == DEFAULT_PEERS_SERVICE == "warmstart-agent"
    assert cfg.kube_api is None and cfg.kube_token_file is None
    assert cfg.containerd_certs_dir is None
    assert cfg.containerd_config == DEFAULT_CONTAINERD_CONFIG
    assert cfg.peer_token_file is None and cfg.peer_token is None


def test_file_keys(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("  s3cret\n")
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
peer_token_file = "{token}"
peers_from_kubernetes = true
peers_service = "agents"
kube_api = "http://127.0.0.1:8001/"
kube_token_file = "{tmp_path / "kube-token"}"
containerd_certs_dir = "{tmp_path / "certs.d"}"
containerd_config = "{tmp_path / "config.toml"}"
"""
    )
    cfg = load_config(path, environ={})
    assert cfg.peer_token == "s3cret"
    assert cfg.peers_from_kubernetes and cfg.peers_service == "agents"
    assert cfg.kube_api == "http://127.0.0.1:8001"
    assert cfg.kube_token_file == tmp_path / "kube-token"
    assert cfg.containerd_certs_dir == tmp_path / "certs.d"
    assert cfg.containerd_config == tmp_path / "config.toml"


def test_flags_override(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        peers_from_kubernetes=True,
        peers_service="other",
        kube_api="http://127.0.0.1:9",
        kube_token_file=tmp_path / "t",
        environ={},
    )
    assert cfg.peers_from_kubernetes and cfg.peers_service == "other"
    assert cfg.kube_api == "http://127.0.0.1:9" and cfg.kube_token_file == tmp_path / "t"


@pytest.mark.parametrize(
    ("pod_ip", "listen", "advertise", "expected"),
    [
        ("10.1.2.3", "0.0.0.0:5050", None, "http://10.1.2.3:5050"),
        ("fd00::7", "[::]:6000", None, "http://[fd00::7]:6000"),
        ("10.1.2.3", "0.0.0.0:5050", "http://node-a:5050", "http://node-a:5050"),
        ("", "127.0.0.1:5050", None, "http://127.0.0.1:5050"),
    ],
)
def test_self_url_from_pod_ip(
    tmp_path: Path, pod_ip: str, listen: str, advertise: str | None, expected: str
) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f'advertise_url = "{advertise}"\n' if advertise else "")
    cfg = load_config(path, listen=listen, peers_from_kubernetes=True, environ={"POD_IP": pod_ip})
    assert cfg.advertise_url == expected


def test_pod_ip_unused_without_kubernetes_peers() -> None:
    cfg = load_config(None, listen="0.0.0.0:5050", environ={"POD_IP": "10.1.2.3"})
    assert "10.1.2.3" not in cfg.advertise_url


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        ("missing", "peer_token_file: cannot read the peer token file {p}: No such file"),
        ("empty", "peer_token_file: the peer token file {p} is empty"),
        ("blank", "peer_token_file: the peer token file {p} is empty"),
        ("two words", "has spaces or control characters"),
        ("both", "give peer_token or peer_token_file, not both"),
    ],
)
def test_bad_peer_token_file(tmp_path: Path, setup: str, fragment: str) -> None:
    token = tmp_path / "token"
    data: dict[str, object] = {"peer_token_file": str(token)}
    if setup == "empty":
        token.write_text("")
    elif setup == "blank":
        token.write_text(" \n\t\n")
    elif setup == "two words":
        token.write_text("a b\n")
    elif setup == "both":
        token.write_text("x")
        data["peer_token"] = "y"
    with pytest.raises(ConfigError) as err:
        build_config(data, "agent.toml")
    message = str(err.value)
    assert fragment.format(p=token) in message
    assert "\n" not in message and message.startswith("agent.toml: ")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"peers_service": "Bad_Name"}, "peers_service: 'Bad_Name' is not a Service name"),
        ({"kube_api": "ftp://x"}, "kube_api"),
        ({"peers_from_kubernetes": "maybe"}, "peers_from_kubernetes"),
        ({"containerd_certs": "/x"}, "containerd_certs: unknown setting"),
    ],
)
def test_bad_keys_are_one_line(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config(data, "agent.toml")
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_cli_unreadable_token_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f'peer_token_file = "{tmp_path / "nope"}"\n')
    result = CliRunner().invoke(app, ["agent", "--config", str(path)])
    assert result.exit_code == 2
    assert "peer_token_file" in result.output and "cannot read" in result.output


def test_cli_bad_service_flag_exits_2() -> None:
    result = CliRunner().invoke(
        app, ["agent", "--peers-from-kubernetes", "--peers-service", "No_Such"]
    )
    assert result.exit_code == 2 and "not a Service name" in result.output
