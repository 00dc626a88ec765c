"""``AgentClient`` against the real agent app (in-memory Fetcher, loopback socket): every route,
the peer token, and each way a call fails as a one-line :class:`AgentError`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.unit.agent.conftest import REGISTRY, Agent, MakeAgent
from tests.unit.agent.fakes import RecordingPrewarmer
from warmstart.agent.api import PrewarmRequest
from warmstart.agent.client import (
    AgentBadAnswer,
    AgentClient,
    AgentRefused,
    AgentUnreachable,
)
from warmstart.agent.state import STATE
from warmstart_harness.testbed.net import free_port

TOKEN = "s3cret"


def url_of(agent: Agent) -> str:
    return str(agent.client.make_url("/")).rstrip("/")


@pytest.fixture
async def fake() -> AsyncIterator[TestServer]:
    """An HTTP server that is not quite an agent: wrong bodies on every route."""
    app = web.Application()

    async def no_json(_: web.Request) -> web.Response:
        return web.Response(text="<html>")

    async def wrong_shape(_: web.Request) -> web.Response:
        return web.json_response({"node_id": "x"})

    async def teapot(_: web.Request) -> web.Response:
        return web.Response(status=418, text="short and stout")

    app.router.add_post("/prewarm", no_json)
    app.router.add_get("/status", wrong_shape)
    app.router.add_get("/healthz", teapot)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


async def test_every_route_round_trips_with_the_token(make_agent: MakeAgent) -> None:
    prewarmer = RecordingPrewarmer()
    agent = await make_agent(prewarmer=prewarmer, peer_token=TOKEN)
    async with AgentClient(url_of(agent) + "/", token=TOKEN) as client:
        answer = await client.prewarm(
            PrewarmRequest.of(f"{REGISTRY}/app:v1", "linux/arm64", hot=True),
            authorization="Basic YTpi",
        )
        assert answer.reference == f"{REGISTRY}/app:v1" and answer.hot is True
        assert answer.platform == "linux/arm64/v8"
        identity = prewarmer.clients[0]
        assert identity is not None and identity.authorization == "Basic YTpi"

        peers = await client.put_peers(["http://10.0.0.3:5050/"])
        assert peers.peers == ["http://10.0.0.3:5050"] and peers.version == 1
        assert agent.app[STATE].parts.peers.urls == ("http://10.0.0.3:5050",)
        assert (await client.peers()).peers == ["http://10.0.0.3:5050"]

        status = await client.status()
        assert status.node_id == "node-test" and status.peers == ["http://10.0.0.3:5050"]
        health = await client.healthz()
        assert health.ok and health.message == "ok"
    assert "s3cret" not in repr(client)


async def test_without_the_token_a_write_is_refused(make_agent: MakeAgent) -> None:
    agent = await make_agent(prewarmer=RecordingPrewarmer(), peer_token=TOKEN)
    async with AgentClient(url_of(agent), token="wrong") as client:
        with pytest.raises(AgentRefused) as info:
            await client.prewarm(PrewarmRequest.of(f"{REGISTRY}/app:v1"))
        assert (info.value.status, info.value.code) == (401, "UNAUTHORIZED")
        assert str(info.value).startswith("HTTP 401: this route needs the peer token")
        with pytest.raises(AgentRefused):
            await client.put_peers([])
        assert (await client.status()).node_id == "node-test"  # reads stay open


async def test_an_error_answer_is_one_line_with_its_code(make_agent: MakeAgent) -> None:
    agent = await make_agent(prewarmer=RecordingPrewarmer())
    async with AgentClient(url_of(agent)) as client:
        with pytest.raises(AgentRefused) as info:
            await client.prewarm(PrewarmRequest.of("evil.example/app:v1"))
        assert (info.value.status, info.value.code) == (403, "DENIED")
        assert str(info.value) == (
            "HTTP 403: registry 'evil.example' is not configured on this agent"
        )
        with pytest.raises(AgentRefused) as info:
            await client.put_peers(["ftp://a:1"])
        assert info.value.status == 400 and "\n" not in str(info.value)


async def test_a_sick_agent_is_not_an_error_for_healthz(make_agent: MakeAgent) -> None:
    agent = await make_agent()
    store = agent.app[STATE].parts.store
    assert store is not None
    store.close()
    async with AgentClient(url_of(agent)) as client:
        health = await client.healthz()
    assert not health.ok and health.message.startswith("store unavailable")


async def test_answers_that_do_not_fit(fake: TestServer) -> None:
    async with AgentClient(str(fake.make_url("/"))) as client:
        with pytest.raises(AgentBadAnswer, match="no JSON"):
            await client.prewarm(PrewarmRequest.of("busybox"))
        with pytest.raises(AgentBadAnswer) as info:
            await client.status()
        assert "GET /status does not fit: url: is required" in str(info.value)
        with pytest.raises(AgentRefused, match="HTTP 418: short and stout"):
            await client.healthz()


async def test_nobody_listening_and_timeouts(fake: TestServer) -> None:
    down = AgentClient(f"http://127.0.0.1:{free_port()}")
    async with down:
        with pytest.raises(AgentUnreachable, match=r"^cannot reach the agent: "):
            await down.status()
    app = web.Application()

    async def slow(_: web.Request) -> web.Response:
        import asyncio

        await asyncio.sleep(5)
        return web.json_response({})

    app.router.add_get("/status", slow)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with AgentClient(str(server.make_url("/")), timeout=0.2) as client:
            with pytest.raises(AgentUnreachable, match=r"^timed out$"):
                await client.status()
    finally:
        await server.close()


async def test_a_shared_session_is_left_open(make_agent: MakeAgent) -> None:
    agent = await make_agent()
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            async with AgentClient(url_of(agent), session=session, timeout=None) as client:
                assert (await client.healthz()).ok
        assert not session.closed
