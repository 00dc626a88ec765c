"""``warmstart serve`` on a cluster with a peer token: ``--peer-token-file`` reaches the
endpoint's options, and its pre-warms and tier lookups carry the token to the agents (a real
agent app with ``peer_token`` set, in-memory fetcher and pre-warmer)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from typer.testing import CliRunner

from tests.unit.agent.conftest import REGISTRY, default_config, memory_makers
from tests.unit.agent.fakes import MemoryFetcher, RecordingPrewarmer
from warmstart.agent.app import build_app, server_kwargs
from warmstart.agent.client import AgentRefused
from warmstart.cli.main import app as cli
from warmstart.fetch.interfaces import PEER_TOKEN_HEADER
from warmstart.oci.tiers import Tier
from warmstart.serving import serve as serve_module
from warmstart.serving.models import replica_model_request
from warmstart.serving.serve import (
    EndpointService,
    NodeOption,
    ServeOptions,
    TokenFileError,
    read_token_file,
)
from warmstart.serving.spec import build_spec

TOKEN = "cluster-s3cret"
IMAGE = f"{REGISTRY}/models/embedder:v1"


@dataclass
class Agent:
    url: str
    prewarmer: RecordingPrewarmer
    tokens: list[tuple[str, str | None]]  # (path, peer token header) of every request


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    """A warmstart agent whose control writes need ``TOKEN``."""
    config = default_config(tmp_path / "store", peer_token=TOKEN)
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    prewarmer = RecordingPrewarmer()
    application = await build_app(config, memory_makers(MemoryFetcher(root=blobs), prewarmer))
    tokens: list[tuple[str, str | None]] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        tokens.append((request.path, request.headers.get(PEER_TOKEN_HEADER)))
        return await handler(request)

    application.middlewares.append(record)
    server = TestServer(application, host="127.0.0.1")
    await server.start_server(**server_kwargs(config))
    yield Agent(str(server.make_url("/")).rstrip("/"), prewarmer, tokens)
    await server.close()


def service(tmp_path: Path, agent: str, token: str | None) -> EndpointService:
    options = ServeOptions(
        spec=build_spec({"name": "embed", "image": IMAGE, "min_replicas": 0}),
        nodes=[NodeOption("node-a", tmp_path / "c.sock", agent)],
        work_dir=tmp_path / "work",
        peer_token=token,
    )
    return EndpointService(options)


async def prewarm(svc: EndpointService) -> None:
    async with aiohttp.ClientSession() as session:
        svc._prewarm_session = session
        try:
            await svc._prewarm(svc.handles[0], IMAGE)
        finally:
            svc._prewarm_session = None


async def test_serve_prewarms_with_the_clusters_peer_token(tmp_path: Path, agent: Agent) -> None:
    await prewarm(service(tmp_path, agent.url, TOKEN))
    [(ref, platform, hot)] = agent.prewarmer.calls
    assert (str(ref), platform, hot) == (IMAGE, None, True)
    assert agent.tokens == [("/prewarm", TOKEN)]


async def test_without_the_token_the_agent_refuses_the_prewarm(
    tmp_path: Path, agent: Agent
) -> None:
    with pytest.raises(AgentRefused) as info:
        await prewarm(service(tmp_path, agent.url, None))
    assert info.value.status == 401 and "\n" not in str(info.value)
    assert agent.prewarmer.calls == []


async def test_the_endpoints_tier_lookup_reads_status_with_the_token(
    tmp_path: Path, agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = service(tmp_path, agent.url, TOKEN)

    async def no_leftovers() -> int:  # there is no containerd here
        return 0

    monkeypatch.setattr(svc, "clean_leftovers", no_leftovers)
    controller = await svc.open()
    try:
        await controller.tick()
    finally:
        await svc.close()
    assert controller.node_tiers == {"node-a": Tier.COLD}  # the agent holds nothing yet
    assert ("/status", TOKEN) in agent.tokens


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the peer token file"),
        (b"", "is empty"),
        (b" \n\n", "is empty"),
        (b"two words\n", "spaces or control characters"),
        (b"\xff\xfe", "not UTF-8"),
        (b"x" * 5000, "over 4096 bytes"),
    ],
)
def test_bad_token_files_are_one_line_errors(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TokenFileError) as info:
        read_token_file(path)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert "words" not in str(info.value)  # the file's content is never shown


def test_a_token_file_as_echo_writes_it(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    assert read_token_file(path) == TOKEN


def test_the_cli_flag_reaches_the_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[ServeOptions] = []

    async def fake_serve(options: ServeOptions, *args: Any, **kwargs: Any) -> None:
        seen.append(options)

    monkeypatch.setattr(serve_module, "serve_endpoint", fake_serve)
    spec = tmp_path / "embed.toml"
    spec.write_text(f'name = "embed"\nimage = "{IMAGE}"\n')
    socket = tmp_path / "c.sock"
    socket.touch()
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    node = f"node-a={socket},http://127.0.0.1:5050"
    runner = CliRunner()
    args = ["serve", str(spec), "--node", node, "--work-dir", str(tmp_path / "w")]
    result = runner.invoke(cli, [*args, "--peer-token-file", str(token)])
    assert result.exit_code == 0, result.output
    assert seen[-1].peer_token == TOKEN
    assert TOKEN not in repr(seen[-1])
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert seen[-1].peer_token is None
    result = runner.invoke(cli, [*args, "--peer-token-file", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "cannot read the peer token file" in result.output


async def test_the_model_goes_through_the_nodes_agent_with_the_token(
    tmp_path: Path, agent: Agent
) -> None:
    model = f"{REGISTRY}/weights/minilm:v1"
    options = ServeOptions(
        spec=build_spec({"name": "embed", "image": IMAGE, "model": model, "min_replicas": 0}),
        nodes=[
            NodeOption("node-a", tmp_path / "c.sock", agent.url),
            NodeOption("node-b", tmp_path / "d.sock", None),
        ],
        work_dir=tmp_path / "work",
        peer_token=TOKEN,
    )
    svc = EndpointService(options)
    async with aiohttp.ClientSession() as session:
        svc._prewarm_session = session
        try:
            client = svc._model_agent(svc.handles[0])
            await client.prewarm(replica_model_request(model, "ep"))
            released = await client.unpin(model, holder="endpoint/ep", time_limit=5)
            with pytest.raises(RuntimeError, match="node-b has no agent"):
                svc._model_agent(svc.handles[1])
        finally:
            svc._prewarm_session = None
    [(ref, _platform, hot)] = agent.prewarmer.calls
    assert (str(ref), hot, agent.prewarmer.models) == (model, True, [True])
    assert released.released is True  # the replica's pre-warm pinned it; the unpin released it
    assert agent.tokens == [("/prewarm", TOKEN), ("/unpin", TOKEN)]
