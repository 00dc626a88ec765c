"""The /v2/ mirror routes against an in-memory Fetcher: statuses, bodies, headers, ranges."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests.unit.agent.conftest import OTHER, REGISTRY, Agent, MakeAgent, raw_request
from tests.unit.agent.fakes import OCI_INDEX, OCI_MANIFEST
from warmstart.agent.metrics import AgentMetrics
from warmstart.fetch.interfaces import (
    PEER_HEADER,
    PEER_TOKEN_HEADER,
    DeniedError,
    FetchError,
    UnauthorizedError,
    UnavailableError,
)
from warmstart.oci import Digest
from warmstart.registry.errors import NotFound as RegistryNotFound

API = "registry/2.0"
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()
DATA = bytes(range(256)) * 40  # 10240 bytes
BAD_DIGEST = "sha256:" + "f" * 64


def error_of(body: bytes) -> dict[str, Any]:
    doc = json.loads(body)
    assert set(doc) == {"errors"} and len(doc["errors"]) == 1
    entry = doc["errors"][0]
    assert {"code", "message", "detail"} <= set(entry)
    return entry


async def get_error(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    assert resp.headers["Content-Type"] == "application/json"
    return error_of(await resp.read())


# -- /v2/ --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v2/", "/v2"])
async def test_base(agent: Agent, path: str) -> None:
    resp = await agent.client.get(path)
    assert resp.status == 200
    assert resp.headers["Docker-Distribution-API-Version"] == API
    assert await resp.json() == {}
    head = await agent.client.head(path)
    assert head.status == 200 and await head.read() == b""
    assert head.headers["Docker-Distribution-API-Version"] == API


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/"),
        ("PUT", "/v2/app/manifests/v1"),
        ("PUT", f"/v2/app/blobs/{BAD_DIGEST}"),
        ("POST", "/v2/app/blobs/uploads/"),
        ("PATCH", "/v2/app/blobs/uploads/1234"),
        ("DELETE", "/v2/app/manifests/v1"),
        ("DELETE", f"/v2/app/blobs/{BAD_DIGEST}"),
        ("OPTIONS", "/v2/app/manifests/v1"),
    ],
)
async def test_writes_are_unsupported(agent: Agent, method: str, path: str) -> None:
    resp = await agent.client.request(method, path, data=b"x")
    assert resp.status == 405
    assert resp.headers["Allow"] == "GET, HEAD"
    assert (await get_error(resp))["code"] == "UNSUPPORTED"
    assert agent.fetcher.calls == []


# -- manifests ---------------------------------------------------------------------------------


async def test_manifest_by_tag_and_digest(agent: Agent) -> None:
    digest = agent.fetcher.add_manifest(REGISTRY, "team/app", MANIFEST, tag="v1")
    for reference in ("v1", str(digest)):
        resp = await agent.client.get(f"/v2/team/app/manifests/{reference}")
        assert resp.status == 200
        assert await resp.read() == MANIFEST
        assert resp.headers["Content-Type"] == OCI_MANIFEST
        assert resp.headers["Content-Length"] == str(len(MANIFEST))
        assert resp.headers["Docker-Content-Digest"] == str(digest)
        assert resp.headers["Docker-Distribution-API-Version"] == API
    call = agent.fetcher.calls[0]
    assert (call.registry, call.repository, call.reference) == (REGISTRY, "team/app", "v1")


async def test_manifest_head_has_the_same_headers_and_no_body(agent: Agent) -> None:
    digest = agent.fetcher.add_manifest(REGISTRY, "app", MANIFEST, tag="v1", media_type=OCI_INDEX)
    get = await agent.client.get("/v2/app/manifests/v1")
    head = await agent.client.head("/v2/app/manifests/v1")
    assert head.status == get.status == 200
    assert await head.read() == b""
    for name in ("Content-Type", "Content-Length", "Docker-Content-Digest", "ETag"):
        assert head.headers[name] == get.headers[name], name
    assert head.headers["Content-Type"] == OCI_INDEX
    assert head.headers["Docker-Content-Digest"] == str(digest)


async def test_manifest_raw_head(agent: Agent) -> None:
    agent.fetcher.add_manifest(REGISTRY, "app", MANIFEST, tag="v1")
    raw = await raw_request(agent.port, "HEAD", "/v2/app/manifests/v1")
    assert raw.status == 200 and raw.body == b""
    assert raw.header("content-length") == str(len(MANIFEST))


async def test_ns_selects_the_upstream(agent: Agent) -> None:
    agent.fetcher.add_manifest(OTHER, "app", MANIFEST, tag="v1")
    resp = await agent.client.get(f"/v2/app/manifests/v1?ns={OTHER}")
    assert resp.status == 200
    assert agent.fetcher.calls[-1].registry == OTHER


async def test_no_ns_uses_the_default_upstream(agent: Agent) -> None:
    agent.fetcher.add_manifest(REGISTRY, "app", MANIFEST, tag="v1")
    assert (await agent.client.get("/v2/app/manifests/v1")).status == 200
    assert agent.fetcher.calls[-1].registry == REGISTRY


async def test_docker_hub_aliases(make_agent: MakeAgent) -> None:
    agent = await make_agent(upstreams={"docker.io": {}}, default_upstream=None)
    agent.fetcher.add_manifest("docker.io", "library/busybox", MANIFEST, tag="latest")
    for ns in ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"):
        resp = await agent.client.get(f"/v2/library/busybox/manifests/latest?ns={ns}")
        assert resp.status == 200, ns
    assert {c.registry for c in agent.fetcher.calls} == {"docker.io"}


@pytest.mark.parametrize("ns", ["evil.example", "127.0.0.1:1", "reg.example:5001"])
async def test_unconfigured_ns_is_denied(agent: Agent, ns: str) -> None:
    for path in ("/v2/app/manifests/v1", f"/v2/app/blobs/{BAD_DIGEST}"):
        resp = await agent.client.get(f"{path}?ns={ns}")
        assert resp.status == 403
        assert (await get_error(resp))["code"] == "DENIED"
    assert agent.fetcher.calls == []


async def test_no_ns_and_no_default_is_denied(make_agent: MakeAgent) -> None:
    agent = await make_agent(default_upstream=None)
    resp = await agent.client.get("/v2/app/manifests/v1")
    assert resp.status == 403
    assert (await get_error(resp))["code"] == "DENIED"


async def test_repeated_accept_headers_are_merged(agent: Agent) -> None:
    agent.fetcher.add_manifest(REGISTRY, "app", MANIFEST, tag="v1")
    raw = await raw_request(
        agent.port,
        "GET",
        "/v2/app/manifests/v1",
        [
            ("Accept", "application/vnd.docker.distribution.manifest.v2+json"),
            ("Accept", f"{OCI_MANIFEST}, {OCI_INDEX};q=0.9"),
            ("Accept", "*/*"),
        ],
    )
    assert raw.status == 200
    assert agent.fetcher.calls[-1].accept == (
        "application/vnd.docker.distribution.manifest.v2+json",
        OCI_MANIFEST,
        OCI_INDEX,
        "*/*",
    )


async def test_client_identity_is_passed_on(agent: Agent) -> None:
    agent.fetcher.add_manifest(REGISTRY, "app", MANIFEST, tag="v1")
    headers = {"Authorization": "Basic YTpi", PEER_HEADER: "node-b", PEER_TOKEN_HEADER: "tok"}
    assert (await agent.client.get("/v2/app/manifests/v1", headers=headers)).status == 200
    client = agent.fetcher.calls[-1].client
    assert client is not None
    assert (client.authorization, client.peer, client.peer_token) == ("Basic YTpi", "node-b", "tok")


async def test_unknown_manifest(agent: Agent) -> None:
    for method in ("GET", "HEAD"):
        resp = await agent.client.request(method, "/v2/app/manifests/nope")
        assert resp.status == 404
        if method == "GET":
            assert (await get_error(resp))["code"] == "MANIFEST_UNKNOWN"


async def test_manifest_that_does_not_match_its_digest_is_not_served(agent: Agent) -> None:
    digest = agent.fetcher.add_manifest(REGISTRY, "app", MANIFEST, tag="v1")
    # a buggy fetcher: the digest of one document with the bytes of another
    good = agent.fetcher.manifests[(REGISTRY, "app", "v1")]
    bad = type(good)(good.digest, good.media_type, MANIFEST + b" ", good.source)
    agent.fetcher.manifests[(REGISTRY, "app", "v1")] = bad
    agent.fetcher.manifests[(REGISTRY, "app", str(digest))] = bad
    for reference in ("v1", str(digest)):
        resp = await agent.client.get(f"/v2/app/manifests/{reference}")
        assert resp.status == 502
        assert MANIFEST not in await resp.read()


async def test_manifest_for_another_digest_is_not_served(agent: Agent) -> None:
    agent.fetcher.add_manifest(REGISTRY, "app", MANIFEST, tag="v1")
    other = Digest.of(b"other")
    agent.fetcher.manifests[(REGISTRY, "app", str(other))] = agent.fetcher.manifests[
        (REGISTRY, "app", "v1")
    ]
    assert (await agent.client.get(f"/v2/app/manifests/{other}")).status == 502


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (UnauthorizedError("who are you"), 401, "UNAUTHORIZED"),
        (DeniedError("no"), 403, "DENIED"),
        (UnavailableError("all down"), 503, "UNAVAILABLE"),
        (FetchError("odd"), 502, "UNKNOWN"),
        (RegistryNotFound("gone"), 404, "MANIFEST_UNKNOWN"),
        (aiohttp.ClientConnectionError("refused"), 503, "UNAVAILABLE"),
        (TimeoutError(), 503, "UNAVAILABLE"),
        (RuntimeError("a bug"), 500, "UNKNOWN"),
    ],
)
async def test_fetch_errors_on_manifests(
    agent: Agent, error: Exception, status: int, code: str
) -> None:
    agent.fetcher.errors[("get_manifest", "v1")] = error
    resp = await agent.client.get("/v2/app/manifests/v1")
    assert resp.status == status
    assert (await get_error(resp))["code"] == code
    assert resp.headers["Docker-Distribution-API-Version"] == API
    if status == 401:
        assert resp.headers["WWW-Authenticate"] == 'Basic realm="warmstart"'
    assert "a bug" not in (await resp.text())  # internals are logged, not shown


class TooMany(FetchError):
    status = 429
    code = "TOOMANYREQUESTS"
    retry_after = 7.0


async def test_too_many_requests(agent: Agent) -> None:
    d = agent.fetcher.add_blob(DATA)
    agent.fetcher.errors[("get_blob", str(d))] = TooMany("upstream rate limit")
    resp = await agent.client.get(f"/v2/app/blobs/{d}")
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "7"
    assert (await get_error(resp))["code"] == "TOOMANYREQUESTS"


# -- blobs ---------------------------------------------------------------------------------------

MODES = ["file", "stream"]


@pytest.mark.parametrize("mode", MODES)
async def test_blob_get(agent: Agent, mode: str) -> None:
    agent.fetcher.mode = mode
    d = agent.fetcher.add_blob(DATA)
    resp = await agent.client.get(f"/v2/team/app/blobs/{d}")
    assert resp.status == 200
    assert await resp.read() == DATA
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-Length"] == str(len(DATA))
    assert resp.headers["Docker-Content-Digest"] == str(d)
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers["Docker-Distribution-API-Version"] == API
    assert "Content-Range" not in resp.headers


async def test_blob_head_uses_stat_and_sends_no_body(agent: Agent) -> None:
    d = agent.fetcher.add_blob(DATA)
    resp = await agent.client.head(f"/v2/app/blobs/{d}", headers={"Range": "bytes=0-9"})
    assert resp.status == 200  # Range is defined for GET only
    assert await resp.read() == b""
    assert resp.headers["Content-Length"] == str(len(DATA))
    assert resp.headers["Docker-Content-Digest"] == str(d)
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert [c.method for c in agent.fetcher.calls] == ["stat_blob"]
    raw = await raw_request(agent.port, "HEAD", f"/v2/app/blobs/{d}")
    assert raw.status == 200 and raw.body == b""


RANGE_TABLE = [
    # header, status, content-range, (start, end) of the body or None
    ("bytes=0-0", 206, "bytes 0-0/10240", (0, 0)),
    ("bytes=100-199", 206, "bytes 100-199/10240", (100, 199)),
    ("bytes=10000-", 206, "bytes 10000-10239/10240", (10000, 10239)),
    ("bytes=-10", 206, "bytes 10230-10239/10240", (10230, 10239)),
    ("bytes=-99999", 206, "bytes 0-10239/10240", (0, 10239)),
    ("bytes=5000-99999", 206, "bytes 5000-10239/10240", (5000, 10239)),
    ("bytes=10240-", 416, "bytes */10240", None),
    ("bytes=20000-20001", 416, "bytes */10240", None),
    ("bytes=-0", 416, "bytes */10240", None),
    ("bytes=abc", 416, "bytes */10240", None),
    ("bytes=9-3", 416, "bytes */10240", None),
    ("bytes=", 416, "bytes */10240", None),
    ("items=0-5", 200, None, (0, 10239)),
    ("bytes=0-1,5-6", 200, None, (0, 10239)),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("header", "status", "content_range", "span"), RANGE_TABLE)
async def test_blob_ranges(
    agent: Agent,
    mode: str,
    header: str,
    status: int,
    content_range: str | None,
    span: tuple[int, int] | None,
) -> None:
    agent.fetcher.mode = mode
    d = agent.fetcher.add_blob(DATA)
    resp = await agent.client.get(f"/v2/app/blobs/{d}", headers={"Range": header})
    assert resp.status == status
    assert resp.headers.get("Content-Range") == content_range
    assert resp.headers["Docker-Content-Digest"] == str(d)
    assert resp.headers["Accept-Ranges"] == "bytes"
    body = await resp.read()
    if span is None:
        assert error_of(body)["code"] == "RANGE_INVALID"
        assert resp.headers["Content-Type"] == "application/json"
    else:
        want = DATA[span[0] : span[1] + 1]
        assert body == want
        assert resp.headers["Content-Length"] == str(len(want))
        assert resp.headers["Content-Type"] == "application/octet-stream"


@pytest.mark.parametrize("mode", MODES)
async def test_if_range(agent: Agent, mode: str) -> None:
    agent.fetcher.mode = mode
    d = agent.fetcher.add_blob(DATA)
    ok = await agent.client.get(
        f"/v2/app/blobs/{d}", headers={"Range": "bytes=1-2", "If-Range": f'"{d}"'}
    )
    assert ok.status == 206 and await ok.read() == DATA[1:3]
    stale = await agent.client.get(
        f"/v2/app/blobs/{d}", headers={"Range": "bytes=1-2", "If-Range": '"sha256:other"'}
    )
    assert stale.status == 200 and await stale.read() == DATA


@pytest.mark.parametrize("mode", MODES)
async def test_empty_blob(agent: Agent, mode: str) -> None:
    agent.fetcher.mode = mode
    d = agent.fetcher.add_blob(b"")
    resp = await agent.client.get(f"/v2/app/blobs/{d}")
    assert resp.status == 200 and await resp.read() == b""
    assert resp.headers["Content-Length"] == "0"
    ranged = await agent.client.get(f"/v2/app/blobs/{d}", headers={"Range": "bytes=0-"})
    assert ranged.status == 416 and ranged.headers["Content-Range"] == "bytes */0"


async def test_unknown_blob(agent: Agent) -> None:
    resp = await agent.client.get(f"/v2/app/blobs/{BAD_DIGEST}")
    assert resp.status == 404
    assert (await get_error(resp))["code"] == "BLOB_UNKNOWN"
    assert (await agent.client.head(f"/v2/app/blobs/{BAD_DIGEST}")).status == 404


async def test_mid_transfer_failure_aborts_the_connection(agent: Agent) -> None:
    agent.fetcher.mode = "stream"
    d = agent.fetcher.add_blob(DATA)
    agent.fetcher.fail_after[d] = 3000
    resp = await agent.client.get(f"/v2/app/blobs/{d}")
    assert resp.status == 200 and resp.headers["Content-Length"] == str(len(DATA))
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    # At the socket: a prefix of the right bytes, fewer than announced, then EOF.
    raw = await raw_request(agent.port, "GET", f"/v2/app/blobs/{d}")
    assert raw.status == 200 and raw.header("content-length") == str(len(DATA))
    assert 0 < len(raw.body) < len(DATA)
    assert DATA.startswith(raw.body)
    assert agent.fetcher.streams_closed == 2
    # the agent itself is fine
    assert (await agent.client.get("/v2/")).status == 200
    text = await (await agent.client.get("/metrics")).text()
    assert "warmstart_agent_aborted_responses_total 2.0" in text
    assert 'route="blob",status="aborted"' in text


async def test_mid_transfer_failure_in_a_range(agent: Agent) -> None:
    agent.fetcher.mode = "stream"
    d = agent.fetcher.add_blob(DATA)
    agent.fetcher.fail_after[d] = 5000
    resp = await agent.client.get(f"/v2/app/blobs/{d}", headers={"Range": "bytes=4000-"})
    assert resp.status == 206
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    # a range that ends before the failure point is served whole
    ok = await agent.client.get(f"/v2/app/blobs/{d}", headers={"Range": "bytes=4000-4999"})
    assert ok.status == 206 and await ok.read() == DATA[4000:5000]


async def test_stream_that_ends_early_aborts(agent: Agent) -> None:
    agent.fetcher.mode = "stream"
    d = agent.fetcher.add_blob(DATA)
    agent.fetcher.short_stream.add(d)
    raw = await raw_request(agent.port, "GET", f"/v2/app/blobs/{d}")
    assert raw.status == 200 and len(raw.body) == len(DATA) - 1
    assert DATA.startswith(raw.body)


async def test_stream_failing_before_the_first_byte_is_an_error_status(agent: Agent) -> None:
    agent.fetcher.mode = "stream"
    d = agent.fetcher.add_blob(DATA)
    agent.fetcher.fail_after[d] = 0
    resp = await agent.client.get(f"/v2/app/blobs/{d}")
    assert resp.status == 502
    assert (await get_error(resp))["code"] == "UNKNOWN"


async def test_client_going_away_mid_stream_is_harmless(agent: Agent) -> None:
    agent.fetcher.mode = "stream"
    agent.fetcher.stream_delay = 0.01
    d = agent.fetcher.add_blob(DATA * 10)
    reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
    writer.write(f"GET /v2/app/blobs/{d} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    await reader.read(100)
    writer.close()
    await asyncio.sleep(0.2)
    assert (await agent.client.get("/v2/")).status == 200
    assert agent.fetcher.streams_closed == 1  # the transfer's reader was closed


async def test_evicted_file_is_looked_up_again(agent: Agent, tmp_path: Any) -> None:
    d = agent.fetcher.add_blob(DATA)
    original = agent.fetcher.get_blob
    calls = 0

    async def evicting(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        result = await original(*args)
        if calls == 1:
            assert result.path is not None
            result.path.unlink()  # evicted between lookup and open
        return result

    agent.fetcher.get_blob = evicting  # type: ignore[method-assign]
    resp = await agent.client.get(f"/v2/app/blobs/{d}")
    assert resp.status == 200 and await resp.read() == DATA
    assert calls == 2


async def test_stored_file_of_the_wrong_size_is_not_served(agent: Agent) -> None:
    d = agent.fetcher.add_blob(DATA)
    agent.fetcher.wrong_size[d] = len(DATA) + 1
    resp = await agent.client.get(f"/v2/app/blobs/{d}")
    assert resp.status == 503
    assert DATA not in await resp.read()


async def test_fetcher_answering_another_digest_is_not_served(agent: Agent) -> None:
    d = agent.fetcher.add_blob(DATA)
    other = agent.fetcher.add_blob(b"other")
    agent.fetcher.blobs[d] = b"other"
    original = agent.fetcher.get_blob

    async def wrong(registry: str, repository: str, digest: Digest, client: Any) -> Any:
        return await original(registry, repository, other, client)

    agent.fetcher.get_blob = wrong  # type: ignore[method-assign]
    resp = await agent.client.get(f"/v2/app/blobs/{d}")
    assert resp.status == 502


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (UnauthorizedError("x"), 401, "UNAUTHORIZED"),
        (DeniedError("x"), 403, "DENIED"),
        (UnavailableError("x"), 503, "UNAVAILABLE"),
        (RegistryNotFound("x"), 404, "BLOB_UNKNOWN"),
    ],
)
async def test_fetch_errors_on_blobs(
    agent: Agent, error: Exception, status: int, code: str
) -> None:
    d = agent.fetcher.add_blob(DATA)
    agent.fetcher.errors[("get_blob", str(d))] = error
    agent.fetcher.errors[("stat_blob", str(d))] = error
    for method in ("GET", "HEAD"):
        resp = await agent.client.request(method, f"/v2/app/blobs/{d}")
        assert resp.status == status
        if method == "GET":
            assert (await get_error(resp))["code"] == code


# -- bad input ----------------------------------------------------------------------------------

BAD_TARGETS = [
    # request target as sent, status, code
    ("/v2/../../etc/passwd", 404, None),  # outside /v2/: aiohttp's own 404
    ("/v2/a/../../etc/manifests/v1", 400, "NAME_INVALID"),
    (f"/v2/a/../../../etc/blobs/{BAD_DIGEST}", 400, "NAME_INVALID"),
    (f"/v2/a/%2e%2e/%2e%2e/etc/blobs/{BAD_DIGEST}", 400, "NAME_INVALID"),
    (f"/v2/%2e%2e/blobs/{BAD_DIGEST}", 400, "NAME_INVALID"),
    ("/v2/a/./b/manifests/v1", 400, "NAME_INVALID"),
    ("/v2//a/manifests/v1", 400, "NAME_INVALID"),
    ("/v2/Upper/manifests/v1", 400, "NAME_INVALID"),
    ("/v2/a%00b/manifests/v1", 400, "NAME_INVALID"),
    ("/v2/a%20b/manifests/v1", 400, "NAME_INVALID"),
    ("/v2/a%2Fb%2F..%2Fc/manifests/v1", 400, "NAME_INVALID"),
    ("/v2/a$b/manifests/v1", 400, "NAME_INVALID"),
    ("/v2/-a/manifests/v1", 400, "NAME_INVALID"),
    ("/v2/" + "a" * 300 + "/manifests/v1", 400, "NAME_INVALID"),
    ("/v2/a/manifests/-v1", 400, "TAG_INVALID"),
    ("/v2/a/manifests/" + "t" * 200, 400, "TAG_INVALID"),
    ("/v2/a/manifests/v1%00", 400, "TAG_INVALID"),
    ("/v2/a/manifests/sha256:1234", 400, "DIGEST_INVALID"),
    ("/v2/a/blobs/latest", 400, "DIGEST_INVALID"),
    ("/v2/a/blobs/sha256:" + "A" * 64, 400, "DIGEST_INVALID"),
    ("/v2/a/blobs/md5:" + "a" * 32, 400, "DIGEST_INVALID"),
    ("/v2/a/blobs/sha256:" + "a" * 63, 400, "DIGEST_INVALID"),
    ("/v2/a/blobs/sha256:..%2F..%2Fetc", 404, "NOT_FOUND"),
    ("/v2/a/blobs/sha256%3a" + "a" * 64 + "%2f..", 404, "NOT_FOUND"),
    ("/v2/a/tags/list", 404, "NOT_FOUND"),
    ("/v2/_catalog", 404, "NOT_FOUND"),
    ("/v2/a/blobs/uploads/1234", 404, "NOT_FOUND"),
]


@pytest.mark.parametrize(("target", "status", "code"), BAD_TARGETS)
async def test_bad_input_never_reaches_the_fetcher(
    agent: Agent, target: str, status: int, code: str | None
) -> None:
    for method in ("GET", "HEAD"):
        raw = await raw_request(agent.port, method, target)
        assert raw.status == status, (method, raw.body)
        if code is not None and method == "GET":
            assert error_of(raw.body)["code"] == code
            assert raw.header("content-type") == "application/json"
    assert agent.fetcher.calls == []
    assert list(agent.fetcher.root.iterdir()) == []


async def test_oversized_header_is_refused_and_the_server_lives_on(agent: Agent) -> None:
    big = "x" * (agent.config.max_header_size + 100)
    raw = await raw_request(agent.port, "GET", "/v2/", [("X-Big", big)])
    assert raw.status in (400, 431)
    long_line = "/v2/" + "a" * (agent.config.max_header_size + 100) + "/manifests/v1"
    raw = await raw_request(agent.port, "GET", long_line)
    assert raw.status in (400, 414, 431)
    many = [(f"X-H{i}", "1") for i in range(500)]
    raw = await raw_request(agent.port, "GET", "/v2/", many)
    assert raw.status in (400, 431)
    assert (await agent.client.get("/v2/")).status == 200
    assert agent.fetcher.calls == []


async def test_header_limit_follows_the_config(make_agent: MakeAgent) -> None:
    agent = await make_agent(max_header_size=2048)
    raw = await raw_request(agent.port, "GET", "/v2/", [("X-Big", "x" * 3000)])
    assert raw.status in (400, 431)
    ok = await raw_request(agent.port, "GET", "/v2/", [("X-Big", "x" * 1500)])
    assert ok.status == 200


async def test_bogus_range_headers_do_not_crash(agent: Agent) -> None:
    d = agent.fetcher.add_blob(DATA)
    for header in ("bytes=" + "9" * 100, "bytes=-" + "9" * 25, "bytes=\x01", "bytes=0-0" * 200):
        raw = await raw_request(agent.port, "GET", f"/v2/app/blobs/{d}", [("Range", header)])
        assert raw.status in (200, 206, 416) or (raw.status == 400 and "\x01" in header), header
    two = await raw_request(
        agent.port, "GET", f"/v2/app/blobs/{d}", [("Range", "bytes=0-0"), ("Range", "bytes=1-1")]
    )
    assert two.status == 200 and two.body == DATA  # two Range headers: ignored


class ExplodingMetrics(AgentMetrics):
    def served(self, source: str, nbytes: int) -> None:
        raise RuntimeError("a bug after the headers went out")


@pytest.mark.parametrize("mode", MODES)
async def test_a_bug_after_the_headers_cuts_the_connection(
    make_agent: MakeAgent, mode: str
) -> None:
    agent = await make_agent(metrics=ExplodingMetrics())
    agent.fetcher.mode = mode
    d = agent.fetcher.add_blob(DATA)
    raw = await raw_request(agent.port, "GET", f"/v2/app/blobs/{d}")
    assert raw.status == 200 and raw.header("content-length") == str(len(DATA))
    assert len(raw.body) <= len(DATA) and DATA.startswith(raw.body)
    assert b"errors" not in raw.body  # no error document appended as if it were blob bytes
    if mode == "stream":
        assert len(raw.body) < len(DATA)
    assert (await agent.client.get("/v2/")).status == 200
