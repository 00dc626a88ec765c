from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator

import pytest

from warmstart.oci import MAX_MANIFEST_BYTES, Digest, ImageManifest, Reference
from warmstart.oci import mediatypes as mt
from warmstart.registry import (
    MANIFEST_ACCEPT,
    AuthError,
    DigestMismatch,
    InvalidManifest,
    ManifestTooLarge,
    NotFound,
    RegistryError,
)
from warmstart.registry.transport import Answer, MemoryTransport, respond

from .conftest import MakeClient, Serve
from .fakes import FakeRegistry, Req, error, image_manifest, response

BODY = image_manifest(b'{"architecture":"amd64"}', (b"layer-1", b"layer-2"))


def ref(host: str, rest: str = "app/web:v1") -> Reference:
    return Reference.parse(f"{host}/{rest}")


async def test_get_manifest_by_tag(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    digest = fake.add_manifest("app/web", "v1", BODY)
    got = await make_client(fake_host).get_manifest(ref(fake_host))
    assert got.digest == digest
    assert got.body == BODY
    assert got.media_type == mt.OCI_MANIFEST
    assert isinstance(got.manifest, ImageManifest)
    assert [layer.size for layer in got.manifest.layers] == [7, 7]
    seen = fake.requests[-1]
    assert seen.method == "GET" and seen.path == "/v2/app/web/manifests/v1"
    assert seen.headers["Accept"] == ", ".join(MANIFEST_ACCEPT)
    assert seen.headers["User-Agent"] == "warmstart/0.1"


async def test_get_manifest_by_digest_and_custom_accept(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    digest = fake.add_manifest("app/web", None, BODY)
    r = ref(fake_host, f"app/web@{digest}")
    got = await make_client(fake_host).get_manifest(r, accept=[mt.OCI_MANIFEST])
    assert got.digest == digest
    assert fake.requests[-1].path == f"/v2/app/web/manifests/{digest}"
    assert fake.requests[-1].headers["Accept"] == mt.OCI_MANIFEST


async def test_body_not_matching_requested_digest(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    wanted = Digest.of(b"something else")
    fake.manifests[("app/web", str(wanted))] = (BODY, mt.OCI_MANIFEST)
    with pytest.raises(DigestMismatch) as err:
        await make_client(fake_host).get_manifest(ref(fake_host, f"app/web@{wanted}"))
    assert err.value.expected == str(wanted)
    assert err.value.actual == str(Digest.of(BODY))


async def test_body_not_matching_header_digest(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    lie = str(Digest.of(b"other"))

    async def hook(request: Req) -> Answer | None:
        return response(
            body=BODY, headers={"Docker-Content-Digest": lie, "Content-Type": mt.OCI_MANIFEST}
        )

    fake.hooks.append(hook)
    with pytest.raises(DigestMismatch, match="registry says"):
        await make_client(fake_host).get_manifest(ref(fake_host))


@pytest.mark.parametrize(
    "header",
    [None, "sha384:" + hashlib.sha384(BODY).hexdigest(), "blake3:abcd", "garbage"],
)
async def test_unsupported_or_missing_header_digest_falls_back_to_sha256(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient, header: str | None
) -> None:
    async def hook(request: Req) -> Answer | None:
        headers = {"Content-Type": mt.OCI_MANIFEST}
        if header is not None:
            headers["Docker-Content-Digest"] = header
        return response(body=BODY, headers=headers)

    fake.hooks.append(hook)
    got = await make_client(fake_host).get_manifest(ref(fake_host))
    assert got.digest == Digest.of(BODY)


async def test_sha512_header_digest_is_verified(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    d512 = Digest.of(BODY, "sha512")

    async def hook(request: Req) -> Answer | None:
        return response(
            body=BODY, headers={"Docker-Content-Digest": str(d512), "Content-Type": mt.OCI_MANIFEST}
        )

    fake.hooks.append(hook)
    assert (await make_client(fake_host).get_manifest(ref(fake_host))).digest == d512


async def test_oversized_manifest_with_honest_length_is_not_read(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    sent = {"bytes": 0}

    async def hook(request: Req) -> Answer | None:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(64 * 16):
                yield b" " * (MAX_MANIFEST_BYTES // 16)
                sent["bytes"] += MAX_MANIFEST_BYTES // 16

        headers = {"Content-Type": mt.OCI_MANIFEST, "Content-Length": str(64 * MAX_MANIFEST_BYTES)}
        return respond(200, body(), headers)

    fake.hooks.append(hook)
    with pytest.raises(ManifestTooLarge, match="over the"):
        await make_client(fake_host).get_manifest(ref(fake_host))
    await asyncio.sleep(0.05)
    assert sent["bytes"] < 16 * MAX_MANIFEST_BYTES


async def test_oversized_manifest_without_length_stops_after_the_limit(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    sent = {"bytes": 0, "finished": False}

    async def hook(request: Req) -> Answer | None:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(64 * 16):  # 64 times the limit, if anyone read it all
                yield b" " * (MAX_MANIFEST_BYTES // 16)
                sent["bytes"] += MAX_MANIFEST_BYTES // 16
            sent["finished"] = True

        return respond(200, body(), {"Content-Type": mt.OCI_MANIFEST})  # chunked

    fake.hooks.append(hook)
    with pytest.raises(ManifestTooLarge):
        await make_client(fake_host).get_manifest(ref(fake_host))
    await asyncio.sleep(0.05)
    assert not sent["finished"]
    assert sent["bytes"] < 16 * MAX_MANIFEST_BYTES


async def test_manifest_exactly_at_the_limit_is_read(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    doc = json.loads(BODY)
    doc["annotations"] = {"pad": ""}
    base = len(json.dumps(doc).encode())
    doc["annotations"]["pad"] = "x" * (MAX_MANIFEST_BYTES - base)
    body = json.dumps(doc).encode()
    assert len(body) == MAX_MANIFEST_BYTES
    fake.add_manifest("app/web", "v1", body)
    got = await make_client(fake_host).get_manifest(ref(fake_host))
    assert len(got.body) == MAX_MANIFEST_BYTES


@pytest.mark.parametrize(
    ("status", "code", "exc", "words"),
    [
        (404, "MANIFEST_UNKNOWN", NotFound, "not found"),
        (404, "NAME_UNKNOWN", NotFound, "NAME_UNKNOWN"),
        (403, "DENIED", AuthError, "access denied"),
        (400, "TAG_INVALID", RegistryError, "answered 400 TAG_INVALID"),
        (410, "GONE", RegistryError, "answered 410"),
    ],
)
async def test_error_bodies_map_to_errors(
    fake: FakeRegistry,
    fake_host: str,
    make_client: MakeClient,
    status: int,
    code: str,
    exc: type[RegistryError],
    words: str,
) -> None:
    async def hook(request: Req) -> Answer | None:
        return error(status, code, "it went\nwrong")

    fake.hooks.append(hook)
    r = ref(fake_host)
    with pytest.raises(exc) as err:
        await make_client(fake_host).get_manifest(r)
    text = str(err.value)
    assert "\n" not in text
    assert str(r) in text and words in text
    assert err.value.upstream_code == code and err.value.upstream_status == status
    assert type(err.value) is exc or exc is RegistryError


async def test_missing_manifest(fake_host: str, make_client: MakeClient) -> None:
    with pytest.raises(NotFound, match=r"app/web:nope: not found \(404 MANIFEST_UNKNOWN"):
        await make_client(fake_host).get_manifest(ref(fake_host, "app/web:nope"))


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"schemaVersion": 1, "name": "x"}',
        json.dumps({"schemaVersion": 2, "mediaType": "x/y"}).encode(),
    ],
)
async def test_invalid_manifest(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient, body: bytes
) -> None:
    fake.add_manifest("app/web", "v1", body, media_type="application/json")
    with pytest.raises(InvalidManifest) as err:
        await make_client(fake_host).get_manifest(ref(fake_host))
    assert str(ref(fake_host)) in str(err.value)


async def test_head_manifest(fake: FakeRegistry, fake_host: str, make_client: MakeClient) -> None:
    digest = fake.add_manifest("app/web", "v1", BODY)
    client = make_client(fake_host)
    assert await client.head_manifest(ref(fake_host)) == (digest, mt.OCI_MANIFEST, len(BODY))
    assert fake.requests[-1].method == "HEAD"
    assert await client.head_manifest(ref(fake_host, f"app/web@{digest}")) == (
        digest,
        mt.OCI_MANIFEST,
        len(BODY),
    )
    with pytest.raises(NotFound):
        await client.head_manifest(ref(fake_host, "app/web:nope"))


async def test_head_manifest_digest_disagreement(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    fake.add_manifest("app/web", "v1", BODY)
    other = Digest.of(b"other")
    fake.manifests[("app/web", str(other))] = (BODY, mt.OCI_MANIFEST)
    with pytest.raises(DigestMismatch):
        await make_client(fake_host).head_manifest(ref(fake_host, f"app/web@{other}"))


async def test_ping(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient, serve: Serve
) -> None:
    await make_client(fake_host).ping(fake_host)
    assert fake.requests[-1].path == "/v2/"

    async def not_a_registry(request: Req) -> Answer:
        return response(404, text="404: Not Found")

    server = serve(not_a_registry)
    host = f"127.0.0.1:{server.port}"
    with pytest.raises(RegistryError, match="not an OCI registry"):
        await make_client(host).ping(host)


async def test_https_by_default_fails_on_plain_server(
    fake_host: str, make_client: MakeClient
) -> None:
    # Not marked insecure: the client speaks TLS and the plain server cannot answer.
    client = make_client(None, max_attempts=1)
    with pytest.raises(RegistryError):
        await client.ping(fake_host)


async def test_caller_session_is_left_open() -> None:
    import aiohttp

    from warmstart.registry import ClientOptions, RegistryClient

    async with aiohttp.ClientSession() as session:
        async with RegistryClient(ClientOptions(), session=session):
            pass
        assert not session.closed
        with pytest.raises(ValueError, match="not both"):
            RegistryClient(session=session, transport=MemoryTransport(not_found))


async def not_found(request: object) -> Answer:
    return respond(404)
