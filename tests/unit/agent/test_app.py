"""create_app's lifecycle (store, factories, closing) and serving on a real socket."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.unit.agent.conftest import REGISTRY, default_config
from tests.unit.agent.fakes import MemoryFetcher
from warmstart.agent.app import (
    AgentSetupError,
    create_app,
    fetcher_config,
    server_kwargs,
    start,
)
from warmstart.agent.config import build_config
from warmstart.agent.metrics import AgentMetrics
from warmstart.agent.peer_set import PeerSet
from warmstart.agent.server import STATE
from warmstart.store import ContentStore


class ClosingFetcher(MemoryFetcher):
    closed = False

    async def aclose(self) -> None:
        self.closed = True


async def test_factories_get_the_shared_parts(tmp_path: Path) -> None:
    config = default_config(tmp_path / "store", peers=["http://10.0.0.9:5050"])
    seen: dict[str, Any] = {}
    fetcher = ClosingFetcher(root=tmp_path)

    def make_fetcher(cfg: Any, store: ContentStore, peers: PeerSet, metrics: AgentMetrics) -> Any:
        seen.update(cfg=cfg, store=store, peers=peers, metrics=metrics)
        return fetcher

    def make_prewarmer(cfg: Any, f: Any, store: Any) -> None:
        seen["prewarmer_fetcher"] = f

    metrics = AgentMetrics()
    app = create_app(
        config, metrics=metrics, fetcher_factory=make_fetcher, prewarmer_factory=make_prewarmer
    )
    server = TestServer(app)
    await server.start_server(**server_kwargs(config))
    try:
        state = app[STATE]
        assert state.fetcher is fetcher and seen["prewarmer_fetcher"] is fetcher
        assert seen["cfg"] is config and seen["metrics"] is metrics
        assert seen["peers"] is state.peers and seen["store"] is state.store
        assert state.peers.urls == ("http://10.0.0.9:5050",)
        assert state.peers.self_url == config.advertise_url
        assert state.hot is None  # no containerd_socket configured
        async with aiohttp.ClientSession() as session:
            async with session.get(server.make_url("/healthz")) as resp:
                assert resp.status == 200
        store = state.store
    finally:
        await server.close()
    assert fetcher.closed
    with pytest.raises(Exception, match="closed"):
        store.usage()  # type: ignore[union-attr]


async def test_injected_store_is_not_closed(tmp_path: Path) -> None:
    config = default_config(tmp_path / "unused")
    store = ContentStore(tmp_path / "store")
    try:
        app = create_app(config, fetcher=MemoryFetcher(root=tmp_path), store=store)
        server = TestServer(app)
        await server.start_server()
        assert app[STATE].store is store
        await server.close()
        assert store.usage() == 0
        assert not (tmp_path / "unused").exists()
    finally:
        store.close()


async def test_start_serves_on_the_configured_address(tmp_path: Path) -> None:
    config = default_config(tmp_path / "store", listen="127.0.0.1:0")
    app = create_app(config, fetcher=MemoryFetcher(root=tmp_path))
    runner = await start(config, app)
    try:
        host, port = runner.addresses[0][:2]
        assert host == "127.0.0.1" and port > 0
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/v2/") as resp:
                assert resp.status == 200
                assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    finally:
        await runner.cleanup()


async def test_failing_factory_fails_startup(tmp_path: Path) -> None:
    config = default_config(tmp_path / "store")

    def broken(*args: Any) -> Any:
        raise AgentSetupError("no fetcher today")

    app = create_app(config, fetcher_factory=broken)
    with pytest.raises(AgentSetupError, match="no fetcher today"):
        await start(config, app)


def test_fetcher_config(tmp_path: Path) -> None:
    docker = tmp_path / "config.json"
    docker.write_text(json.dumps({"auths": {"priv.example": {"auth": "dTpw"}}}))  # u:p
    config = build_config(
        {
            "listen": "127.0.0.1:5999",
            "node_id": "n1",
            "peer_token": "tok",
            "tag_ttl": 3,
            "peer_timeout": 0.25,
            "upstreams": {
                REGISTRY: {"url": f"http://{REGISTRY}", "shared": True},
                "basic.example": {"username": "alice", "password": "secret"},
                "priv.example": {"credentials_file": str(docker)},
            },
        }
    )
    fc = fetcher_config(config)
    assert (fc.node_id, fc.self_url, fc.peer_token) == ("n1", "http://127.0.0.1:5999", "tok")
    assert (fc.tag_ttl, fc.peer_timeout) == (3, 0.25)
    local = fc.upstreams[REGISTRY]
    assert local.is_plain_http() and local.shared and local.credentials is None
    assert local.host(REGISTRY) == REGISTRY
    basic = fc.upstreams["basic.example"]
    assert basic.credentials is not None and basic.credentials.username == "alice"
    assert not basic.is_plain_http() and not basic.shared
    priv = fc.upstreams["priv.example"].credentials
    assert priv is not None and (priv.username, priv.password) == ("u", "p")
    assert fc.shared == frozenset({REGISTRY})


def test_fetcher_config_credentials_file_without_an_entry(tmp_path: Path) -> None:
    docker = tmp_path / "config.json"
    docker.write_text("{}")
    config = build_config({"upstreams": {"priv.example": {"credentials_file": str(docker)}}})
    with pytest.raises(AgentSetupError, match="no credentials"):
        fetcher_config(config)
