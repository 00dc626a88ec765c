from __future__ import annotations

from dataclasses import dataclass

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from warmstart.serving.placement import Tier
from warmstart.serving.tiers import AgentTiers, cluster_tiers, local_tier

IMAGE = "127.0.0.1:5000/models/embedder:v1"


@pytest.mark.parametrize(
    ("images", "tier"),
    [
        ([], None),
        ([{"reference": IMAGE, "tier": "warm"}], Tier.WARM),
        ([{"reference": IMAGE, "tier": "hot"}], Tier.HOT),
        ([{"reference": IMAGE, "tier": "partial"}], None),
        ([{"reference": "127.0.0.1:5000/models/embedder:v2", "tier": "hot"}], None),
        ([{"reference": IMAGE, "tier": "warm"}, {"reference": IMAGE, "tier": "hot"}], Tier.HOT),
        ([{"reference": "not a ref", "tier": "hot"}, {"tier": "hot"}, "junk"], None),
    ],
)
def test_local_tier(images, tier):
    assert local_tier({"images": images}, IMAGE) == tier


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

    async def status(_: web.Request) -> web.Response:
        return web.json_response({"images": [{"reference": IMAGE, "tier": "hot"}]})

    app.router.add_get("/status", status)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        nodes = [
            FakeNode("a", str(server.make_url("/"))),
            FakeNode("b", "http://127.0.0.1:1"),  # nobody listens
            FakeNode("c", None),
        ]
        tiers = await AgentTiers().tiers(IMAGE, nodes)
    finally:
        await server.close()
    assert tiers == {"a": Tier.HOT, "b": Tier.PEER, "c": Tier.PEER}
