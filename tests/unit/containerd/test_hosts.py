from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from warmstart.cli.main import app
from warmstart.containerd.hosts import (
    DOCKER_HUB_SERVER,
    HostsConfigError,
    HostsFile,
    agent_only,
    check_duration,
    host_directory,
    mirror_configs,
    mirror_host,
    render_hosts_toml,
    toml_string,
    upstream_server,
    write_hosts_dir,
)

MIRROR = "http://127.0.0.1:5050"


def parsed(config: HostsFile) -> dict:
    return tomllib.loads(render_hosts_toml(config))


def test_upstream_server_for_docker_hub_and_others() -> None:
    assert upstream_server("docker.io") == DOCKER_HUB_SERVER
    assert upstream_server("index.docker.io") == DOCKER_HUB_SERVER
    assert upstream_server("ghcr.io") == "https://ghcr.io"
    assert upstream_server("127.0.0.1:5000", insecure=True) == "http://127.0.0.1:5000"


def test_mirror_config_renders_what_containerd_reads() -> None:
    [cfg] = mirror_configs(["127.0.0.1:5000"], mirror_host(MIRROR), insecure=["127.0.0.1:5000"])
    doc = parsed(cfg)
    assert doc["server"] == "http://127.0.0.1:5000"
    assert doc["host"] == {
        MIRROR: {"capabilities": ["pull", "resolve"], "dial_timeout": "200ms"},
    }
    assert cfg.directory == "127.0.0.1:5000"


def test_docker_hub_gets_a_file_under_each_of_its_names() -> None:
    """containerd looks up ``DIR/<the reference's host>/hosts.toml`` and sends that host as
    ``?ns=``; ctr 1.6 normalises none of Docker Hub's names (measured: a pull of
    ``registry.hub.docker.com/library/app`` reads ``DIR/registry.hub.docker.com``), so each
    name gets its file, and the agent maps every name to one upstream."""
    configs = mirror_configs(
        ["docker.io", "index.docker.io", "registry.hub.docker.com", "quay.io"], mirror_host(MIRROR)
    )
    assert [c.registry for c in configs] == [
        "docker.io",
        "index.docker.io",
        "registry-1.docker.io",
        "registry.hub.docker.com",
        "quay.io",
    ]
    assert [c.directory for c in configs] == [c.registry for c in configs]
    assert all(parsed(c)["server"] == DOCKER_HUB_SERVER for c in configs[:4])
    assert parsed(configs[4])["server"] == "https://quay.io"
    overridden = mirror_configs(
        ["registry.hub.docker.com"], mirror_host(MIRROR), servers={"docker.io": "http://1.2.3.4"}
    )
    assert {parsed(c)["server"] for c in overridden} == {"http://1.2.3.4"}
    assert len(overridden) == 4


def test_tls_options_and_no_dial_timeout() -> None:
    host = mirror_host(
        "https://agent.local:5443/",
        skip_verify=True,
        ca=["/etc/warmstart/ca.pem", 'odd"name.pem'],
        dial_timeout=None,
        capabilities=["pull", "resolve", "pull"],
    )
    [cfg] = mirror_configs(["ghcr.io"], host)
    entry = parsed(cfg)["host"]["https://agent.local:5443"]
    assert entry == {
        "capabilities": ["pull", "resolve"],
        "skip_verify": True,
        "ca": ["/etc/warmstart/ca.pem", 'odd"name.pem'],
    }


def test_server_override_and_default_dir() -> None:
    configs = mirror_configs(
        ["_default", "registry.example"],
        mirror_host(MIRROR),
        servers={"registry.example": "https://other.example:8443/v2"},
    )
    assert "server" not in parsed(configs[0])
    assert configs[0].directory == "_default"
    assert parsed(configs[1])["server"] == "https://other.example:8443/v2"


def test_agent_only_has_no_fallback() -> None:
    doc = tomllib.loads(render_hosts_toml(agent_only("docker.io", "http://127.0.0.1:7000/")))
    assert doc == {
        "server": "http://127.0.0.1:7000",
        "host": {"http://127.0.0.1:7000": {"capabilities": ["pull", "resolve"]}},
    }


def test_a_file_without_hosts_is_refused() -> None:
    # containerd 1.6 fails to parse it ("invalid `host` tree") and silently ignores the file.
    with pytest.raises(HostsConfigError, match="at least one"):
        render_hosts_toml(HostsFile("docker.io", "https://registry-1.docker.io", ()))


@pytest.mark.parametrize(
    "bad",
    ["ftp://x", "http://", "127.0.0.1:5000", "http://a/?x=1", "http://u:p@a", "http://a:99999"],
)
def test_bad_mirror_urls(bad: str) -> None:
    with pytest.raises(HostsConfigError):
        mirror_host(bad)


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", "UPPER_case!", "x:0"])
def test_bad_registry_names(bad: str) -> None:
    with pytest.raises(HostsConfigError):
        host_directory(bad)


def test_capabilities_and_durations_are_checked() -> None:
    with pytest.raises(HostsConfigError):
        mirror_host(MIRROR, capabilities=["pull", "delete"])
    with pytest.raises(HostsConfigError):
        mirror_host(MIRROR, capabilities=[])
    assert check_duration("1m30s") == "1m30s"
    for bad in ("200", "1 s", "fast"):
        with pytest.raises(HostsConfigError):
            check_duration(bad)
    with pytest.raises(HostsConfigError):
        mirror_configs([], mirror_host(MIRROR))


def test_toml_string_escapes_everything_toml_forbids() -> None:
    nasty = 'a"b\\c\nd\te\x01f\x7fg\u00e9'
    assert tomllib.loads(f"v = {toml_string(nasty)}")["v"] == nasty


def test_write_hosts_dir_is_atomic_and_idempotent(tmp_path: Path) -> None:
    configs = mirror_configs(["quay.io", "127.0.0.1:5000"], mirror_host(MIRROR))
    paths = write_hosts_dir(tmp_path, configs)
    assert paths == [tmp_path / "quay.io/hosts.toml", tmp_path / "127.0.0.1:5000/hosts.toml"]
    write_hosts_dir(tmp_path, configs)
    assert sorted(p.name for p in (tmp_path / "quay.io").iterdir()) == ["hosts.toml"]
    assert tomllib.loads(paths[0].read_text())["server"] == "https://quay.io"


def test_cli_writes_files(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    result = CliRunner().invoke(
        app,
        [
            "containerd-config",
            "--mirror",
            MIRROR,
            "--out",
            str(tmp_path / "hosts"),
            "--insecure",
            "127.0.0.1:5000",
            "--ca",
            str(ca),
            "--dial-timeout",
            "none",
            "docker.io",
            "127.0.0.1:5000",
        ],
    )
    assert result.exit_code == 0, result.output
    local = tomllib.loads((tmp_path / "hosts/127.0.0.1:5000/hosts.toml").read_text())
    assert local["server"] == "http://127.0.0.1:5000"
    assert local["host"][MIRROR] == {"capabilities": ["pull", "resolve"], "ca": [str(ca)]}
    hub = tomllib.loads((tmp_path / "hosts/docker.io/hosts.toml").read_text())
    assert hub["server"] == DOCKER_HUB_SERVER


@pytest.mark.parametrize(
    "args",
    [
        ["--mirror", "nope", "docker.io"],
        ["--mirror", MIRROR, "bad/name"],
        ["--mirror", MIRROR, "--server", "docker.io", "docker.io"],
        ["--mirror", MIRROR, "--dial-timeout", "soon", "docker.io"],
    ],
)
def test_cli_bad_input_is_one_line(tmp_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(app, ["containerd-config", "--out", str(tmp_path), *args])
    assert result.exit_code == 2
    assert "error:" in result.output
    assert not list(tmp_path.iterdir())
