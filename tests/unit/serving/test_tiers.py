from __future__ import annotations

from dataclasses import dataclass

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from warmstart.agent.api import ImageStatus
from warmstart.fetch.api import PEER_TOKEN_HEADER
from warmstart.oci.tiers import Tier
from warmstart.serving.tiers import AgentTiers, cluster_tiers, local_tier

IMAGE = "127.0.0.1:5000/models/embedder:v1"


def entry(reference: str, tier: str) -> ImageStatus:
    return ImageStatus.model_validate(
        {"reference": reference, "digest": "sha256:" + "0" * 64, "size": 1, "tier": tier,
         "pinned": False, "platform": None, "last_used": 0.0}
    )  # fmt: skip


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
    assert tiers == {"a": Tier.HOT, "b": Tier.PEER, "c": Tier.PEER}
    assert tokens == ["s3cret"]
