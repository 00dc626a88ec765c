from __future__ import annotations

from dataclasses import dataclass

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from warmstart.agent.api import ImageStatus, ModelStatus
from warmstart.fetch.interfaces import PEER_TOKEN_HEADER
from warmstart.oci.tiers import Tier
from warmstart.serving.placement import NodeTiers
from warmstart.serving.tiers import AgentTiers, cluster_tiers, local_tier

IMAGE = "127.0.0.1:5000/models/embedder:v1"
MODEL = "127.0.0.1:5000/weights/minilm:v1"


def entry(reference: str, tier: str) -> ImageStatus:
    return ImageStatus.model_validate(
        {"reference": reference, "digest": "sha256:" + "0" * 64, "size": 1, "tier": tier,
         "pinned": False, "platform": None, "last_used": 0.0}
    )  # fmt: skip


def model(reference: str, tier: str) -> ModelStatus:
    return ModelStatus.model_validate(
        {"reference": reference, "digest": "sha256:" + "1" * 64, "format": "modelpack",
         "size": 1, "tier": tier, "path": None, "pinned": False, "last_used": 0.0}
    )  # fmt: skip


@pytest.mark.parametrize(
    ("models", "tier"),
    [
        ([], None),
        ([model(MODEL, "hot")], Tier.HOT),
        ([model(MODEL, "warm")], Tier.WARM),
        ([model(MODEL, "partial")], None),
        ([model("127.0.0.1:5000/weights/minilm:v2", "hot")], None),
        ([model(MODEL, "warm"), model(MODEL, "hot")], Tier.HOT),
    ],
)
def test_local_tier_of_a_model(models, tier):
    assert local_tier(models, MODEL) == tier


@pytest.mark.parametrize(
    ("images", "tier"),
    [
        ([], None),
        ([entry(IMAGE, "warm")], Tier.WARM),
        ([entry(IMAGE, "hot")], Tier.HOT),
        ([entry(IMAGE, "partial")], None),
        ([entry("127.0.0.1:5000/models/embedder:v2", "hot")], None),
        ([entry(IMAGE, "warm"), entry(IMAGE, "hot")], Tier.HOT),
        ([entry("not a ref", "hot")], None),
    ],
)
def test_local_tier(images, tier):
    assert local_tier(images, IMAGE) == tier


def test_cluster_tiers_marks_peers():
    assert cluster_tiers({"a": Tier.HOT, "b": None, "c": Tier.WARM}) == {
        "a": Tier.HOT,
        "b": Tier.PEER,
        "c": Tier.WARM,
    }
    assert cluster_tiers({"a": None, "b": None}) == {"a": Tier.COLD, "b": Tier.COLD}


@dataclass
class FakeNode:
    name: str
    agent_url: str | None


async def test_agent_tiers_reads_status_and_treats_dead_agents_as_cold():
    app = web.Application()
    tokens: list[str | None] = []

    async def status(request: web.Request) -> web.Response:
        tokens.append(request.headers.get(PEER_TOKEN_HEADER))
        body = {"node_id": "a", "url": "http://a", "peers": [], "upstreams": [],
                "default_upstream": None, "images": [entry(IMAGE, "hot").to_json()],
                "store": {"root": "/s", "usage": 1, "shared": 0, "budget": None}}  # fmt: skip
        return web.json_response(body)

    app.router.add_get("/status", status)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        nodes = [
            FakeNode("a", str(server.make_url("/"))),
            FakeNode("b", "http://127.0.0.1:1"),  # nobody listens
            FakeNode("c", None),
        ]
        tiers = await AgentTiers(token="s3cret").tiers(IMAGE, nodes)
    finally:
        await server.close()
    assert tiers == {
        "a": NodeTiers(Tier.HOT),
        "b": NodeTiers(Tier.PEER),
        "c": NodeTiers(Tier.PEER),
    }
    assert tokens == ["s3cret"]


async def test_agent_tiers_reads_the_models_of_status_beside_the_images():
    answers = {
        "a": {"images": [entry(IMAGE, "hot").to_json()], "models": []},
        "b": {"images": [entry(IMAGE, "warm").to_json()],
              "models": [model(MODEL, "hot").to_json()]},
        "c": {"images": [], "models": [model(MODEL, "partial").to_json()]},
    }  # fmt: skip
    servers = {}
    for name, answer in answers.items():
        app = web.Application()

        async def status(request: web.Request, answer: dict = answer, name: str = name):
            body = {"node_id": name, "url": "http://x", "peers": [], "upstreams": [],
                    "default_upstream": None, **answer,
                    "store": {"root": "/s", "usage": 1, "shared": 0, "budget": None}}  # fmt: skip
            return web.json_response(body)

        app.router.add_get("/status", status)
        servers[name] = TestServer(app, host="127.0.0.1")
        await servers[name].start_server()
    try:
        nodes = [FakeNode(name, str(server.make_url("/"))) for name, server in servers.items()]
        nodes.append(FakeNode("d", None))  # no agent: cold for both, or peer
        tiers = await AgentTiers().tiers(IMAGE, nodes, model=MODEL)
    finally:
        for server in servers.values():
            await server.close()
    assert tiers == {
        "a": NodeTiers(Tier.HOT, Tier.PEER),  # the model is on node b
        "b": NodeTiers(Tier.WARM, Tier.HOT),
        "c": NodeTiers(Tier.PEER, Tier.PEER),  # partial is not a tier placement trusts
        "d": NodeTiers(Tier.PEER, Tier.PEER),
    }
