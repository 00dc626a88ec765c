"""The control API's one schema (``warmstart.agent.api``): the request rules, and that the live
handlers answer with exactly those rules and with bodies that fit the answer models."""

from __future__ import annotations

import pytest

from tests.unit.agent.conftest import REGISTRY, MakeAgent
from tests.unit.agent.fakes import FixedHot, RecordingPrewarmer
from warmstart.agent.api import (
    INVALID_REQUEST,
    NAME_INVALID,
    ContainerdImport,
    Health,
    PeersRequest,
    PeersResponse,
    PrewarmRequest,
    PrewarmResponse,
    RequestInvalid,
    StatusResponse,
    error_code,
    error_message,
    parse_request,
)
from warmstart.agent.state import STATE
from warmstart.oci import Digest, Platform

# -- PrewarmRequest -----------------------------------------------------------------------------


def test_prewarm_request_normalises_and_round_trips() -> None:
    req = PrewarmRequest.of("busybox", "linux/arm64", True)
    assert str(req.reference) == "docker.io/library/busybox:latest"
    assert req.platform == Platform.parse("linux/arm64/v8")
    assert req.hot is True
    assert req.to_json() == {
        "reference": "docker.io/library/busybox:latest",
        "platform": "linux/arm64/v8",
        "hot": True,
    }
    assert parse_request(PrewarmRequest, req.to_json()) == req
    assert parse_request(PrewarmRequest, {"reference": "a.io/b:c"}).to_json() == {
        "reference": "a.io/b:c",
        "platform": None,
        "hot": False,
    }


BAD_PREWARM_BODIES = [
    pytest.param([], INVALID_REQUEST, "body: must be a JSON object", id="not-an-object"),
    pytest.param({}, INVALID_REQUEST, "reference: is required", id="no-reference"),
    pytest.param({"reference": 3}, INVALID_REQUEST, "reference: must be", id="reference-type"),
    pytest.param({"reference": ""}, NAME_INVALID, "reference: invalid reference", id="empty"),
    pytest.param({"reference": "a.io/Bad:x"}, NAME_INVALID, "invalid repository", id="upper"),
    pytest.param(
        {"reference": "a.io/b:c", "hot": "yes"}, INVALID_REQUEST, "hot: must be true or false",
        id="hot-string",
    ),
    pytest.param(
        {"reference": "a.io/b:c", "hot": 1}, INVALID_REQUEST, "hot: must be true or false",
        id="hot-number",
    ),
    pytest.param(
        {"reference": "a.io/b:c", "platform": 1}, INVALID_REQUEST, "platform: must be a string",
        id="platform-type",
    ),
    pytest.param(
        {"reference": "a.io/b:c", "platform": "linux"}, INVALID_REQUEST, "platform: invalid",
        id="platform-short",
    ),
    pytest.param(
        {"reference": "a.io/b:c", "Hot": True}, INVALID_REQUEST, "Hot: is not a known field",
        id="unknown-field",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("payload", "code", "message"), BAD_PREWARM_BODIES)
def test_prewarm_request_rejects(payload: object, code: str, message: str) -> None:
    with pytest.raises(RequestInvalid) as info:
        parse_request(PrewarmRequest, payload)
    assert info.value.code == code
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


# -- the live handler uses the same rules ---------------------------------------------------


@pytest.mark.parametrize(("payload", "code", "message"), BAD_PREWARM_BODIES)
async def test_the_prewarm_handler_answers_the_schemas_verdict(
    make_agent: MakeAgent, payload: object, code: str, message: str
) -> None:
    prewarmer = RecordingPrewarmer()
    agent = await make_agent(prewarmer=prewarmer)
    resp = await agent.client.post("/prewarm", json=payload)
    assert resp.status == 400
    [error] = (await resp.json())["errors"]
    with pytest.raises(RequestInvalid) as info:
        parse_request(PrewarmRequest, payload)
    assert (error["code"], error["message"]) == (info.value.code, str(info.value))
    assert prewarmer.calls == []


async def test_the_prewarm_answer_fits_the_response_model(make_agent: MakeAgent) -> None:
    agent = await make_agent(prewarmer=RecordingPrewarmer())
    resp = await agent.client.post("/prewarm", json={"reference": f"{REGISTRY}/app:v1"})
    assert resp.status == 200
    answer = PrewarmResponse.model_validate(await resp.json())
    assert answer.reference == f"{REGISTRY}/app:v1" and answer.containerd is None


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"peers": "http://a:1"}, "peers: must be a list"),
        ({"peers": [1]}, "peers.0: Input should be a valid string"),
        ({}, "peers: is required"),
        ({"peers": [], "extra": 1}, "extra: is not a known field"),
    ],
)
async def test_the_peers_handler_answers_the_schemas_verdict(
    make_agent: MakeAgent, payload: object, message: str
) -> None:
    agent = await make_agent()
    resp = await agent.client.put("/peers", json=payload)
    assert resp.status == 400
    [error] = (await resp.json())["errors"]
    assert error["code"] == INVALID_REQUEST and error["message"] == message


async def test_status_and_peers_answers_fit_their_models(make_agent: MakeAgent) -> None:
    agent = await make_agent(hot=FixedHot(), peers=["http://10.0.0.2:5050"])
    store = agent.app[STATE].parts.store
    assert store is not None
    manifest = b'{"m":1}'
    store.put_bytes(Digest.of(manifest), manifest)
    store.record_image(f"{REGISTRY}/app:v1", Digest.of(manifest), [], "linux/amd64")
    status = StatusResponse.model_validate(await (await agent.client.get("/status")).json())
    assert status.node_id == "node-test"
    assert status.store.shared == 0 and status.store.usage == len(manifest)
    assert [(i.reference, i.tier) for i in status.images] == [(f"{REGISTRY}/app:v1", "warm")]
    peers = PeersResponse.model_validate(await (await agent.client.get("/peers")).json())
    assert peers.peers == ["http://10.0.0.2:5050"] and peers.version == 0


# -- answer models ------------------------------------------------------------------------------


def test_a_hot_answer_carries_link_and_timings() -> None:
    body = {
        "reference": "r.io/a:1",
        "digest": "sha256:" + "a" * 64,
        "manifest_digest": "sha256:" + "a" * 64,
        "platform": None,
        "blobs": 2,
        "bytes": 10,
        "sources": {"local": 10},
        "warm_seconds": 0.1,
        "seconds": 1.5,
        "hot": True,
        "containerd": {
            "namespace": "k8s.io",
            "reference": "r.io/a:1",
            "digest": "sha256:" + "a" * 64,
            "unpacked": True,
            "tag_moved": False,
            "link": {"linked": 2, "linked_bytes": 10, "present": 0, "missing": 0, "seconds": 0.01},
            "pull_seconds": 1.2,
            "pull_attempts": 1,
            "unpack_seconds": 0.9,
            "seconds": 1.3,
        },
        "model_format": None,
        "model": None,
        "from_a_newer_agent": "ignored",
    }
    answer = PrewarmResponse.model_validate(body)
    assert isinstance(answer.containerd, ContainerdImport)
    assert answer.containerd.link is not None and answer.containerd.link.linked_bytes == 10
    assert (answer.containerd.pull_seconds, answer.containerd.unpack_seconds) == (1.2, 0.9)
    del body["from_a_newer_agent"]
    assert answer.to_json() == body


def test_peers_answer_uses_self_on_the_wire() -> None:
    answer = PeersResponse(peers=["http://a:1"], self_url="http://me:1", version=3)
    assert answer.to_json() == {"peers": ["http://a:1"], "self": "http://me:1", "version": 3}
    assert PeersResponse.model_validate(answer.to_json()) == answer
    assert PeersRequest(peers=["http://a:1"]).to_json() == {"peers": ["http://a:1"]}


def test_health_and_error_messages() -> None:
    assert Health.from_answer(200, "ok\n") == Health(ok=True, message="ok")
    sick = Health.from_answer(503, "store unavailable: closed\n")
    assert (sick.ok, sick.status, sick.text()) == (False, 503, "store unavailable: closed\n")
    oci = b'{"errors": [{"code": "UNKNOWN", "message": "importing x failed:\\n ctr: boom"}]}'
    assert error_message(502, oci) == "HTTP 502: importing x failed: ctr: boom"
    assert error_code(oci) == "UNKNOWN"
    assert error_message(404, b'{"error": "no such image"}') == "HTTP 404: no such image"
    assert error_message(500, b"") == "HTTP 500"
    assert error_message(401, b'{"errors": [{"code": "UNAUTHORIZED"}]}') == "HTTP 401: UNAUTHORIZED"
    assert len(error_message(500, b"x" * 5000)) < 320
    assert error_code(b"plain") is None


def test_the_request_schema_is_documentable() -> None:
    props = PrewarmRequest.model_json_schema()["properties"]
    assert props["reference"]["type"] == "string" and props["hot"]["type"] == "boolean"
    assert {"type": "string", "examples": ["linux/amd64"]} in props["platform"]["anyOf"]
    assert "self" in PeersResponse.model_json_schema(by_alias=True)["properties"]
