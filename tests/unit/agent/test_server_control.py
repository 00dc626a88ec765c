"""Peers, status, health, metrics and pre-warm routes."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.agent.conftest import OTHER, REGISTRY, Agent, MakeAgent
from tests.unit.agent.fakes import FixedHot, RecordingPrewarmer
from warmstart.agent.state import STATE
from warmstart.fetch.interfaces import PEER_TOKEN_HEADER, FetchError, UnavailableError
from warmstart.oci import Digest, Platform

# -- /peers ------------------------------------------------------------------------------------


async def test_peers_get_and_put(make_agent: MakeAgent) -> None:
    agent = await make_agent(peers=["http://10.0.0.2:5050"])
    resp = await agent.client.get("/peers")
    assert resp.status == 200
    assert (await resp.json())["peers"] == ["http://10.0.0.2:5050"]
    resp = await agent.client.put(
        "/peers", json={"peers": ["http://10.0.0.3:5050/", "http://10.0.0.4:5050"]}
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["peers"] == ["http://10.0.0.3:5050", "http://10.0.0.4:5050"]
    assert body["version"] == 1
    shared = agent.app[STATE].parts.peers  # the object the Fetcher reads
    assert shared.urls == ("http://10.0.0.3:5050", "http://10.0.0.4:5050")
    assert (await (await agent.client.get("/peers")).json())["peers"] == list(shared.urls)
    assert (await agent.client.put("/peers", json={"peers": []})).status == 200
    assert shared.urls == ()


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"peers": "http://a:1"}',
        b'{"peers": ["ftp://a:1"]}',
        b'{"peers": ["http://a:1/x"]}',
        b'{"peers": [1]}',
        b"{}",
    ],
)
async def test_peers_put_rejects_bad_bodies(agent: Agent, body: bytes) -> None:
    before = agent.app[STATE].parts.peers.urls
    resp = await agent.client.put("/peers", data=body)
    assert resp.status == 400
    doc = await resp.json()
    assert doc["errors"][0]["message"]
    assert agent.app[STATE].parts.peers.urls == before


async def test_peers_put_too_large(agent: Agent) -> None:
    body = json.dumps({"peers": [f"http://h{i}.example:5050" for i in range(60000)]})
    resp = await agent.client.put("/peers", data=body)
    assert resp.status in (400, 413)


async def test_control_writes_need_the_peer_token(make_agent: MakeAgent) -> None:
    agent = await make_agent(peer_token="s3cret")
    body = {"peers": ["http://a:1"]}
    no = await agent.client.put("/peers", json=body)
    assert no.status == 401 and "WWW-Authenticate" in no.headers
    wrong = await agent.client.put("/peers", json=body, headers={PEER_TOKEN_HEADER: "nope"})
    assert wrong.status == 401
    ok = await agent.client.put("/peers", json=body, headers={PEER_TOKEN_HEADER: "s3cret"})
    assert ok.status == 200
    bearer = await agent.client.put("/peers", json=body, headers={"Authorization": "Bearer s3cret"})
    assert bearer.status == 200
    pre = await agent.client.post("/prewarm", json={"reference": f"{REGISTRY}/app:v1"})
    assert pre.status == 401
    assert (await agent.client.get("/peers")).status == 200  # reads stay open


# -- /status, /healthz ------------------------------------------------------------------------


async def test_status(make_agent: MakeAgent) -> None:
    hot = FixedHot()
    agent = await make_agent(hot=hot, budget="1GiB")
    store = agent.app[STATE].parts.store
    assert store is not None
    config = b'{"c":1}'
    layer = b"layer" * 100
    manifest = b'{"m":1}'
    for data in (config, manifest):
        store.put_bytes(Digest.of(data), data)
    blobs = [(Digest.of(config), len(config), "c"), (Digest.of(layer), len(layer), "l")]
    store.record_image(f"{REGISTRY}/app:v1", Digest.of(manifest), blobs[:1], "linux/amd64")
    store.record_image(f"{REGISTRY}/app:v2", Digest.of(manifest), blobs, "linux/amd64")
    hot.names = frozenset({f"{REGISTRY}/app:hot"})
    store.record_image(f"{REGISTRY}/app:hot", Digest.of(manifest), blobs[:1])

    resp = await agent.client.get("/status")
    assert resp.status == 200
    body = await resp.json()
    assert body["node_id"] == "node-test"
    assert body["store"]["usage"] == len(config) + len(manifest)
    assert body["store"]["budget"] == 1 << 30
    tiers = {i["reference"]: i["tier"] for i in body["images"]}
    assert tiers == {
        f"{REGISTRY}/app:v1": "warm",
        f"{REGISTRY}/app:v2": "partial",
        f"{REGISTRY}/app:hot": "hot",
    }
    assert set(body["upstreams"]) == {REGISTRY, OTHER}
    assert body["default_upstream"] == REGISTRY


async def test_status_survives_a_failing_hot_source(make_agent: MakeAgent) -> None:
    class Broken:
        async def hot_images(self) -> list[tuple[str, str]]:
            raise RuntimeError("ctr not found")

    agent = await make_agent(hot=Broken())
    assert (await agent.client.get("/status")).status == 200


async def test_healthz(agent: Agent) -> None:
    resp = await agent.client.get("/healthz")
    assert resp.status == 200 and (await resp.text()).strip() == "ok"
    store = agent.app[STATE].parts.store
    assert store is not None
    store.close()
    resp = await agent.client.get("/healthz")
    assert resp.status == 503


# -- /metrics ----------------------------------------------------------------------------------


def values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics(agent: Agent) -> None:
    data = b"x" * 1234
    d = agent.fetcher.add_blob(data)
    agent.fetcher.add_manifest(REGISTRY, "app", b'{"a":1}', tag="v1", source="upstream")
    assert (await agent.client.get(f"/v2/app/blobs/{d}")).status == 200  # local
    agent.fetcher.source = "peer"
    assert (
        await agent.client.get(f"/v2/app/blobs/{d}", headers={"Range": "bytes=0-9"})
    ).status == 206
    assert (await agent.client.get("/v2/app/manifests/v1")).status == 200
    assert (await agent.client.get("/v2/app/manifests/nope")).status == 404
    resp = await agent.client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    v = values(await resp.text())
    assert v[("warmstart_agent_served_bytes_total", (("source", "local"),))] == 1234
    assert v[("warmstart_agent_served_bytes_total", (("source", "peer"),))] == 10
    assert v[("warmstart_agent_served_bytes_total", (("source", "upstream"),))] == 7
    assert v[("warmstart_agent_cache_hits_total", (("kind", "blob"),))] == 1
    assert v[("warmstart_agent_cache_misses_total", (("kind", "blob"),))] == 1
    assert v[("warmstart_agent_cache_misses_total", (("kind", "manifest"),))] == 1
    assert v[("warmstart_agent_cache_hit_ratio", ())] == pytest.approx(1 / 3)
    key = (("method", "GET"), ("route", "manifest"), ("status", "404"))
    assert v[("warmstart_agent_requests_total", key)] == 1
    key = (("method", "GET"), ("route", "blob"), ("status", "206"))
    assert v[("warmstart_agent_requests_total", key)] == 1
    assert v[("warmstart_agent_store_usage_bytes", ())] == 0
    assert ("warmstart_agent_transfers_in_flight", (("source", "upstream"),)) in v
    assert ("warmstart_agent_responses_in_flight", ()) in v


async def test_injected_metrics_object_is_used(make_agent: MakeAgent) -> None:
    from warmstart.agent.metrics import AgentMetrics

    metrics = AgentMetrics()
    agent = await make_agent(metrics=metrics)
    metrics.upstream_error(REGISTRY, "5xx")  # what the Fetcher does
    text = await (await agent.client.get("/metrics")).text()
    assert (
        'warmstart_agent_upstream_errors_total{kind="5xx",registry="reg.example:5000"} 1.0' in text
    )


# -- /prewarm ----------------------------------------------------------------------------------


async def test_prewarm(make_agent: MakeAgent) -> None:
    prewarmer = RecordingPrewarmer()
    agent = await make_agent(prewarmer=prewarmer)
    resp = await agent.client.post(
        "/prewarm",
        json={"reference": f"{REGISTRY}/team/app:v1", "platform": "linux/arm64", "hot": True},
        headers={"Authorization": "Basic YTpi"},
    )
    assert resp.status == 200
    client = prewarmer.clients[0]
    assert client is not None and client.authorization == "Basic YTpi"
    assert (await resp.json())["reference"] == f"{REGISTRY}/team/app:v1"
    ref, platform, hot = prewarmer.calls[0]
    assert (ref.registry, ref.repository, ref.tag) == (REGISTRY, "team/app", "v1")
    # the one schema normalises the platform (arm64 -> arm64/v8), as the pre-warmer did anyway
    assert platform == Platform.parse("linux/arm64").normalized() and hot is True
    resp = await agent.client.post("/prewarm", json={"reference": f"{OTHER}/app:v1"})
    assert resp.status == 200
    assert prewarmer.calls[1][1:] == (None, False)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"reference": "UPPER/Case:v1"}, 400, "NAME_INVALID"),
        ({"reference": f"{REGISTRY}/a/../b:v1"}, 400, "NAME_INVALID"),
        ({"reference": ""}, 400, "NAME_INVALID"),
        ({"reference": 5}, 400, "INVALID_REQUEST"),
        ({}, 400, "INVALID_REQUEST"),
        ({"reference": f"{REGISTRY}/app:v1", "platform": "nonsense/"}, 400, "INVALID_REQUEST"),
        ({"reference": f"{REGISTRY}/app:v1", "platform": 3}, 400, "INVALID_REQUEST"),
        ({"reference": f"{REGISTRY}/app:v1", "hot": "yes"}, 400, "INVALID_REQUEST"),
        ({"reference": "evil.example/app:v1"}, 403, "DENIED"),
        ({"reference": "busybox"}, 403, "DENIED"),  # docker.io is not configured here
    ],
)
async def test_prewarm_bad_requests(
    make_agent: MakeAgent, body: dict[str, object], status: int, code: str
) -> None:
    prewarmer = RecordingPrewarmer()
    agent = await make_agent(prewarmer=prewarmer)
    resp = await agent.client.post("/prewarm", json=body)
    assert resp.status == status
    assert (await resp.json())["errors"][0]["code"] == code
    assert prewarmer.calls == []


async def test_prewarm_body_not_json(make_agent: MakeAgent) -> None:
    agent = await make_agent(prewarmer=RecordingPrewarmer())
    assert (await agent.client.post("/prewarm", data=b"{")).status == 400


async def test_prewarm_without_a_prewarmer(agent: Agent) -> None:
    resp = await agent.client.post("/prewarm", json={"reference": f"{REGISTRY}/app:v1"})
    assert resp.status == 501


class Conflict(FetchError):
    status = 409
    code = "UNSUPPORTED"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (UnavailableError("upstream down"), 503),
        (Conflict("no containerd configured"), 409),
        (ValueError("not a container image"), 400),
        (RuntimeError("bug"), 500),
    ],
)
async def test_prewarm_errors(make_agent: MakeAgent, error: Exception, status: int) -> None:
    agent = await make_agent(prewarmer=RecordingPrewarmer(error=error))
    resp = await agent.client.post("/prewarm", json={"reference": f"{REGISTRY}/app:v1"})
    assert resp.status == status
    assert (await resp.json())["errors"][0]["message"]


async def test_unknown_route(agent: Agent) -> None:
    assert (await agent.client.get("/nope")).status == 404
    assert (await agent.client.delete("/status")).status == 405
