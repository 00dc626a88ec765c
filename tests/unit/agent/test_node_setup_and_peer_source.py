"""Node setup at start (hosts.toml per upstream, the config_path check) and where the peer list
comes from, through the app with an in-memory fetcher; KubePeers' reaction to slices."""

from __future__ import annotations

import asyncio
import logging
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.unit.agent.conftest import OTHER, REGISTRY, MakeAgent
from warmstart.agent.api import StatusResponse
from warmstart.agent.config import build_config
from warmstart.agent.kube_peers import KubePeers
from warmstart.agent.node_setup import WRITER, agent_hosts_files, setup_node
from warmstart.agent.peer_set import PeerSet
from warmstart.containerd.hosts import (
    WriteOutcome,
    mirror_configs,
    mirror_host,
    render_hosts_toml,
    write_hosts_file,
    written_by_warmstart,
)
from warmstart.kube.client import KubeClient
from warmstart.kube.config import KubeConfig

CRI_OK = '[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "{dir}"\n'


async def status_of(agent: Any) -> StatusResponse:
    resp = await agent.client.get("/status")
    assert resp.status == 200
    return StatusResponse.model_validate(await resp.json())


# -- hosts.toml files ----------------------------------------------------------------------


def test_written_by_warmstart_marker() -> None:
    config = mirror_configs(["reg.example"], mirror_host("http://127.0.0.1:5050"))[0]
    assert written_by_warmstart(render_hosts_toml(config))
    assert written_by_warmstart(render_hosts_toml(config, WRITER))
    assert render_hosts_toml(config, WRITER).startswith(
        "# reg.example: written by `warmstart agent`"
    )
    assert not written_by_warmstart('server = "https://reg.example"\n')
    assert not written_by_warmstart("# my own file, not written by `warmstart agent`\n")


def test_write_hosts_file_outcomes(tmp_path: Path) -> None:
    config = mirror_configs(["reg.example"], mirror_host("http://127.0.0.1:5050"))[0]
    path, outcome = write_hosts_file(tmp_path, config, WRITER)
    assert outcome is WriteOutcome.WRITTEN and path == tmp_path / "reg.example" / "hosts.toml"
    inode = path.stat().st_ino
    assert write_hosts_file(tmp_path, config, WRITER) == (path, WriteOutcome.UNCHANGED)
    assert path.stat().st_ino == inode  # not rewritten
    other = mirror_configs(["reg.example"], mirror_host("http://127.0.0.1:6060"))[0]
    assert write_hosts_file(tmp_path, other, WRITER)[1] is WriteOutcome.WRITTEN  # ours: updated
    assert "127.0.0.1:6060" in path.read_text()
    path.write_text('server = "https://reg.example"\n')  # an operator's own
    assert write_hosts_file(tmp_path, config, WRITER)[1] is WriteOutcome.FOREIGN
    assert path.read_text() == 'server = "https://reg.example"\n'
    assert [p.name for p in path.parent.iterdir()] == ["hosts.toml"]  # no temp files left


def test_agent_hosts_files_point_at_the_agent_then_the_upstream(tmp_path: Path) -> None:
    cfg = build_config(
        {
            "listen": "0.0.0.0:5051",
            "store": str(tmp_path),
            "upstreams": {"docker.io": {}, "127.0.0.1:5000": {"url": "http://127.0.0.1:5000"}},
        }
    )
    files = {f.registry: f for f in agent_hosts_files(cfg)}
    assert files["docker.io"].server == "https://registry-1.docker.io"
    assert files["127.0.0.1:5000"].server == "http://127.0.0.1:5000"
    assert all(f.hosts[0].url == "http://127.0.0.1:5051" for f in files.values())


def test_setup_node_writes_checks_and_reports(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    certs = tmp_path / "certs.d"
    ctd = tmp_path / "config.toml"
    cfg = build_config(
        {
            "store": str(tmp_path / "s"),
            "upstreams": {"reg.example": {}, "other.example": {}},
            "containerd_certs_dir": str(certs),
            "containerd_config": str(ctd),
        }
    )
    (certs / "other.example").mkdir(parents=True)
    (certs / "other.example" / "hosts.toml").write_text('server = "https://other.example"\n')
    ctd.write_text("version = 2\n")
    with caplog.at_level(logging.INFO, logger="warmstart.agent.node_setup"):
        report = setup_node(cfg)
    assert report.hosts_written == [str(certs / "reg.example" / "hosts.toml")]
    assert report.hosts_skipped == [str(certs / "other.example" / "hosts.toml")]
    assert report.config_path_ok is False
    assert "restart containerd" in report.message and "\n" not in report.message
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # the foreign file, the config_path fix
    doc = tomllib.loads((certs / "reg.example" / "hosts.toml").read_text())
    assert doc["server"] == "https://reg.example"
    ctd.write_text("version = 2\n" + CRI_OK.format(dir=certs))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="warmstart.agent.node_setup"):
        again = setup_node(cfg)
    assert again.hosts_written == [] and again.hosts_unchanged == report.hosts_written
    assert again.config_path_ok is True and again.message == ""
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "was not written by warmstart" in warnings[0]


async def test_status_reports_node_setup(make_agent: MakeAgent, tmp_path: Path) -> None:
    certs = tmp_path / "certs.d"
    agent = await make_agent(
        containerd_certs_dir=str(certs), containerd_config=str(tmp_path / "none.toml")
    )
    status = await status_of(agent)
    assert status.node_setup is not None
    assert sorted(Path(p).parent.name for p in status.node_setup.hosts_written) == sorted(
        [REGISTRY, OTHER]
    )
    assert status.node_setup.config_path_ok is False
    assert "does not exist" in status.node_setup.message
    assert status.peer_source.kind == "static"


async def test_status_without_node_setup(make_agent: MakeAgent) -> None:
    status = await status_of(await make_agent())
    assert status.node_setup is None


# -- the peer list's source ----------------------------------------------------------------


async def test_static_peers_changed_at_and_gauges(make_agent: MakeAgent) -> None:
    agent = await make_agent(peers=["http://10.0.0.2:5050"])
    status = await status_of(agent)
    assert status.peer_source.kind == "static" and status.peer_source.changed_at is None
    reg = agent.metrics.registry
    assert reg.get_sample_value("warmstart_peers") == 1
    assert reg.get_sample_value("warmstart_peers_from_kubernetes") == 0
    resp = await agent.client.put(
        "/peers", json={"peers": ["http://10.0.0.2:5050", "http://10.0.0.3:5050"]}
    )
    assert resp.status == 200
    status = await status_of(agent)
    assert status.peer_source.changed_at is not None
    assert reg.get_sample_value("warmstart_peers") == 2
    assert reg.get_sample_value("warmstart_peers_changed_timestamp_seconds") == pytest.approx(
        status.peer_source.changed_at
    )


async def test_unreachable_api_does_not_stop_the_agent(
    make_agent: MakeAgent, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        agent = await make_agent(
            peers=["http://10.0.0.2:5050"],
            peers_from_kubernetes=True,
            kube_api="http://127.0.0.1:9",  # nothing listens
        )
        await asyncio.sleep(0.3)
    status = await status_of(agent)
    assert status.peer_source.kind == "kubernetes"
    assert status.peer_source.service == "warmstart-agent"
    assert status.peer_source.synced is False and status.peer_source.errors >= 1
    assert status.peers == ["http://10.0.0.2:5050"]  # the last list is kept
    assert agent.metrics.registry.get_sample_value("warmstart_peers_from_kubernetes") == 1
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "static peer(s) configured are replaced" in text
    assert "retrying with backoff" in text
    assert (await agent.client.get("/healthz")).status == 200


def _slice(*addresses: str, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": "s", "namespace": "ns"},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [a], "conditions": {"ready": ready}} for a in addresses],
        "ports": [{"name": "http", "port": 5050}],
    }


def test_kube_peers_replaces_only_on_change() -> None:
    peers = PeerSet([], self_url="http://10.0.0.1:5050")
    kube = KubeClient(KubeConfig(server="http://127.0.0.1:9", namespace="ns"))
    follower = KubePeers(peers, kube, service="warmstart-agent")
    assert follower.informer.path == "/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices"
    assert follower.informer.label_selector == "kubernetes.io/service-name=warmstart-agent"
    follower._on_change({("ns", "s"): _slice("10.0.0.2", "10.0.0.1")})
    assert peers.urls == ("http://10.0.0.1:5050", "http://10.0.0.2:5050")
    assert peers.others() == ("http://10.0.0.2:5050",) and peers.version == 1
    follower._on_change({("ns", "s"): _slice("10.0.0.1", "10.0.0.2")})
    assert peers.version == 1  # the same list: no replace
    follower._on_change({("ns", "s"): _slice("10.0.0.2", ready=False)})
    assert peers.urls == () and peers.version == 2
    source = follower.status(123.0)
    assert (source.kind, source.namespace, source.changed_at) == ("kubernetes", "ns", 123.0)
