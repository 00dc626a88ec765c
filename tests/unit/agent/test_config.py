from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from warmstart.agent.config import (
    DEFAULT_LISTEN,
    AgentConfig,
    ConfigError,
    build_config,
    load_config,
    split_listen,
)
from warmstart.cli.main import app


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WARMSTART_STORE", raising=False)
    cfg = AgentConfig()
    assert cfg.listen == DEFAULT_LISTEN == "127.0.0.1:5050"
    assert cfg.store == Path("/var/lib/warmstart/store")
    assert cfg.budget is None
    assert cfg.node_id == f"{socket.gethostname()}:5050"
    assert cfg.advertise_url == "http://127.0.0.1:5050"
    assert cfg.local_url == "http://127.0.0.1:5050"
    assert cfg.upstreams == {}
    assert cfg.default_upstream is None
    assert cfg.peers == ()
    assert cfg.peer_token is None
    assert cfg.tag_ttl == 10
    assert cfg.peer_timeout == 1.0
    assert cfg.max_header_size == 8190
    assert cfg.containerd_socket is None
    assert cfg.shutdown_grace == 30


def test_store_default_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WARMSTART_STORE", str(tmp_path))
    assert AgentConfig().store == tmp_path


def test_full_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    creds = tmp_path / "config.json"
    creds.write_text("{}")
    path = write(
        tmp_path,
        f"""
listen = "0.0.0.0:6000"
store = "{tmp_path / "store"}"
budget = "20GiB"
node_id = "node-a"
default_upstream = "Registry.Example"
peers = ["http://10.0.0.2:5050/", "http://10.0.0.3:5050", "http://10.0.0.2:5050"]
peer_token = "s3cret"
tag_ttl = 30
peer_timeout = 0.5
max_header_size = 16384
containerd_socket = "/run/containerd/containerd.sock"
containerd_namespace = "k8s.io"

[upstreams."registry.example"]
url = "https://registry.example/"
username = "robot"
password = "pw"
ca_file = "{ca}"

[upstreams."127.0.0.1:5000"]
url = "http://127.0.0.1:5000"
shared = true

[upstreams."index.docker.io"]
credentials_file = "{creds}"
""",
    )
    cfg = load_config(path)
    assert cfg.listen_host == "0.0.0.0" and cfg.listen_port == 6000
    assert cfg.local_url == "http://127.0.0.1:6000"
    assert cfg.advertise_url == f"http://{socket.gethostname()}:6000"
    assert cfg.budget == 20 << 30
    assert cfg.node_id == "node-a"
    assert cfg.default_upstream == "registry.example"
    assert set(cfg.upstreams) == {"registry.example", "127.0.0.1:5000", "docker.io"}
    reg = cfg.upstreams["registry.example"]
    assert (reg.url, reg.username, reg.password, reg.ca_file) == (
        "https://registry.example",
        "robot",
        "pw",
        ca,
    )
    assert not reg.shared and not reg.is_http
    local = cfg.upstreams["127.0.0.1:5000"]
    assert local.shared and local.is_http and local.netloc("127.0.0.1:5000") == "127.0.0.1:5000"
    hub = cfg.upstream("registry-1.docker.io")
    assert hub is not None and hub.credentials_file == creds
    assert hub.base_url("docker.io") == "https://registry-1.docker.io"
    assert cfg.peers == ("http://10.0.0.2:5050", "http://10.0.0.3:5050")
    assert cfg.peer_token == "s3cret"
    assert "s3cret" not in repr(cfg) and "pw" not in repr(reg)
    assert (cfg.tag_ttl, cfg.peer_timeout, cfg.max_header_size) == (30, 0.5, 16384)
    assert cfg.containerd_socket == Path("/run/containerd/containerd.sock")
    assert cfg.containerd_namespace == "k8s.io"


def test_single_upstream_is_the_default() -> None:
    cfg = build_config({"upstreams": {"reg:5000": {"url": "http://reg:5000"}}})
    assert cfg.default_upstream == "reg:5000"
    two = build_config({"upstreams": {"a.example": {}, "b.example": {}}})
    assert two.default_upstream is None


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
listen = "127.0.0.1:5050"
budget = "1GiB"
peers = ["http://a:1"]
[upstreams."reg.example"]
url = "https://reg.example"
username = "u"
password = "p"
""",
    )
    cfg = load_config(
        path,
        listen="127.0.0.1:7000",
        store=tmp_path / "s",
        budget="2GiB",
        upstreams=["reg.example=http://127.0.0.1:5000", "other.example:443=https://other.example"],
        peers=["http://b:2", "http://c:3"],
        node_id="n1",
        default_upstream="other.example:443",
    )
    assert cfg.listen_port == 7000
    assert cfg.store == tmp_path / "s"
    assert cfg.budget == 2 << 30
    reg = cfg.upstreams["reg.example"]
    assert (reg.url, reg.username, reg.password) == ("http://127.0.0.1:5000", "u", "p")
    assert cfg.upstreams["other.example:443"].url == "https://other.example"
    assert cfg.peers == ("http://b:2", "http://c:3")
    assert cfg.node_id == "n1"
    assert cfg.default_upstream == "other.example:443"


def test_flags_without_file() -> None:
    cfg = load_config(None, upstreams=["127.0.0.1:5000=http://127.0.0.1:5000"])
    assert cfg.default_upstream == "127.0.0.1:5000"
    assert cfg.upstreams["127.0.0.1:5000"].is_http


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('listen = "nohost"', "listen"),
        ('listen = "127.0.0.1:99999"', "listen"),
        ('listen = "[::1]5050"', "listen"),
        ('budget = "lots"', "budget"),
        ("budget = -1", "budget"),
        ('peers = "http://a:1"', "peers"),
        ('peers = ["ftp://a:1"]', "peers"),
        ('peers = ["http://a:1/path"]', "peers"),
        ("tag_ttl = -1", "tag_ttl"),
        ("peer_timeout = 0", "peer_timeout"),
        ("max_header_size = 10", "max_header_size"),
        ("shutdown_grace = -1", "shutdown_grace"),
        ('default_upstream = "nowhere.example"', "default_upstream"),
        ("unknown_setting = 1", "unknown setting"),
        ('[upstreams."bad host"]', "upstreams"),
        ('[upstreams."r.example"]\nurl = "r.example"', "url"),
        ('[upstreams."r.example"]\nusername = "u"', "username and password"),
        ('[upstreams."r.example"]\nca_file = "/does/not/exist"', "does not exist"),
        ('[upstreams."r.example"]\ntypo = 1', "unknown setting"),
        ('node_id = "has space"', "node_id"),
        ("x = [", "not valid TOML"),
    ],
)
def test_bad_config_is_one_line(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    assert fragment in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize("flag", ["nothing", "=http://x", "reg="])
def test_bad_upstream_flag(flag: str) -> None:
    with pytest.raises(ConfigError, match="REGISTRY=URL"):
        load_config(None, upstreams=[flag])


def test_split_listen() -> None:
    assert split_listen("[::1]:5050") == ("::1", 5050)
    assert split_listen("0.0.0.0:0") == ("0.0.0.0", 0)
    for bad in ("", ":5050", "a:b", "a", "::1:5050", "[::1]"):
        with pytest.raises(ValueError):
            split_listen(bad)


@pytest.mark.parametrize(
    "args",
    [
        ["agent", "--config", "/does/not/exist.toml"],
        ["agent", "--budget", "lots"],
        ["agent", "--listen", "nope"],
        ["agent", "--upstream", "nothing"],
        ["agent", "--peer", "ftp://x"],
        ["agent", "--default-upstream", "unknown.example"],
        ["agent", "--log-level", "loud"],
    ],
)
def test_cli_bad_config_exits_2_with_one_line(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert text.startswith("error:")
    assert "\n" not in text
    assert "Traceback" not in text


def test_shutdown_grace_from_the_file(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "shutdown_grace = 5")).shutdown_grace == 5
    assert load_config(write(tmp_path, "shutdown_grace = 0")).shutdown_grace == 0


def test_piece_settings_parse_and_reach_the_fetcher() -> None:
    from warmstart.agent.app import fetcher_config

    config = build_config(
        {
            "piece_threshold": "16MiB",
            "piece_min": "1MiB",
            "piece_max": 4 << 20,
            "piece_downloads": 6,
            "piece_uploads": 3,
        }
    )
    assert (config.piece_threshold, config.piece_min, config.piece_max) == (
        16 << 20,
        1 << 20,
        4 << 20,
    )
    fc = fetcher_config(config)
    assert (fc.pieces, fc.piece_threshold, fc.piece_min, fc.piece_max, fc.piece_downloads) == (
        True, 16 << 20, 1 << 20, 4 << 20, 6,
    )  # fmt: skip
    defaults = build_config({})
    assert defaults.pieces and defaults.piece_threshold == 64 << 20 and defaults.piece_uploads == 4
    for bad in ({"piece_uploads": 0}, {"piece_min": "nonsense"}, {"piece_downloads": 100}):
        with pytest.raises(ConfigError):
            build_config(bad)
