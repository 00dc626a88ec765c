"""build_app: the agent's parts built in one phase (store, makers, closing) and serving on a\nreal socket."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.unit.agent.conftest import REGISTRY, default_config, memory_makers
from tests.unit.agent.fakes import MemoryFetcher
from warmstart.agent.app import (
    AgentSetupError,
    build_app,
    close_with,
    fetcher_config,
    given_store,
    open_store,
    server_kwargs,
    start,
)
from warmstart.agent.config import build_config
from warmstart.agent.metrics import AgentMetrics
from warmstart.agent.peer_set import PeerSet
from warmstart.agent.state import STATE
from warmstart.fetch.tiered import TieredFetcher
from warmstart.store import ContentStore


class ClosingFetcher(MemoryFetcher):
    closed = False

    async def aclose(self) -> None:
        self.closed = True


async def test_makers_get_the_shared_parts(tmp_path: Path) -> None:
    config = default_config(tmp_path / "store", peers=["http://10.0.0.9:5050"])
    seen: dict[str, Any] = {}
    fetcher = ClosingFetcher(root=tmp_path)
    metrics = AgentMetrics()

    def make_fetcher(
        cfg: Any, store: ContentStore, peers: PeerSet, m: AgentMetrics, stack: AsyncExitStack
    ) -> Any:
        seen.update(cfg=cfg, store=store, peers=peers, metrics=m)
        close_with(stack, fetcher.aclose, "the fetcher")
        return fetcher

    def make_prewarmer(cfg: Any, f: Any, store: Any, grants: Any, linker: Any) -> None:
        seen["prewarmer_fetcher"] = f

    makers = replace(
        memory_makers(fetcher, metrics=metrics), fetcher=make_fetcher, prewarmer=make_prewarmer
    )
    app = await build_app(config, makers)
    server = TestServer(app)
    await server.start_server(**server_kwargs(config))
    try:
        parts = app[STATE].parts
        assert parts.fetcher is fetcher and seen["prewarmer_fetcher"] is fetcher
        assert seen["cfg"] is config and seen["metrics"] is metrics is parts.metrics
        assert seen["peers"] is parts.peers and seen["store"] is parts.store
        assert parts.peers.urls == ("http://10.0.0.9:5050",)
        assert parts.peers.self_url == config.advertise_url
        assert parts.hot is None and parts.prewarmer is None
        async with aiohttp.ClientSession() as session:
            async with session.get(server.make_url("/healthz")) as resp:
                assert resp.status == 200
        store = parts.store
    finally:
        await server.close()
    assert fetcher.closed
    with pytest.raises(Exception, match="closed"):
        store.usage()


async def test_the_default_parts_are_built_from_the_config(tmp_path: Path) -> None:
    config = default_config(tmp_path / "store")
    app = await build_app(config)
    server = TestServer(app)
    await server.start_server()
    try:
        parts = app[STATE].parts
        assert isinstance(parts.fetcher, TieredFetcher)
        assert parts.prewarmer is not None  # pre-warm into the store works without containerd
        assert parts.hot is None and parts.node_setup is None and parts.peer_source is None
        assert parts.store.root == tmp_path / "store"
    finally:
        await server.close()
    with pytest.raises(Exception, match="closed"):
        parts.store.usage()


async def test_injected_store_is_not_closed(tmp_path: Path) -> None:
    config = default_config(tmp_path / "unused")
    store = ContentStore(tmp_path / "store")
    try:
        makers = replace(memory_makers(MemoryFetcher(root=tmp_path)), store=given_store(store))
        app = await build_app(config, makers)
        server = TestServer(app)
        await server.start_server()
        assert app[STATE].parts.store is store
        await server.close()
        assert store.usage() == 0
        assert not (tmp_path / "unused").exists()
    finally:
        store.close()


async def test_start_serves_on_the_configured_address(tmp_path: Path) -> None:
    config = default_config(tmp_path / "store", listen="127.0.0.1:0")
    app = await build_app(config, memory_makers(MemoryFetcher(root=tmp_path)))
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


async def test_a_failing_maker_fails_the_build_and_closes_what_was_built(tmp_path: Path) -> None:
    config = default_config(tmp_path / "store")
    opened: list[ContentStore] = []

    async def store_maker(cfg: Any, stack: AsyncExitStack) -> ContentStore:
        store = await open_store(cfg, stack)
        opened.append(store)
        return store

    def broken(*args: Any) -> Any:
        raise AgentSetupError("no fetcher today")

    makers = replace(memory_makers(MemoryFetcher(root=tmp_path)), store=store_maker, fetcher=broken)
    with pytest.raises(AgentSetupError, match="no fetcher today"):
        await build_app(config, makers)
    with pytest.raises(Exception, match="closed"):
        opened[0].usage()


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
