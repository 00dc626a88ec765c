from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from warmstart.oci import Digest
from warmstart.registry import (
    DigestMismatch,
    NotFound,
    ProtocolError,
    RegistryClient,
    SizeMismatch,
)
from warmstart.registry.transport import Answer, respond

from .conftest import MakeClient, Serve
from .fakes import FakeRegistry, Handler, Req, response, serve_bytes

DATA = os.urandom(3 * 1024 * 1024 + 17)
REPO = "app/web"


async def collect(client: RegistryClient, host: str, digest: Digest, **kw: object) -> bytes:
    return b"".join([chunk async for chunk in client.blob_stream(host, REPO, digest, **kw)])  # type: ignore[arg-type]


def blob_requests(fake: FakeRegistry) -> list[str | None]:
    """The Range header of each blob GET the registry saw."""
    return [
        s.headers.get("Range") for s in fake.requests if "/blobs/" in s.path and s.method == "GET"
    ]


async def test_stream_verifies_and_respects_chunk_size(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    digest = fake.add_blob(DATA)
    client = make_client(fake_host, chunk_size=256 * 1024)
    chunks = [c async for c in client.blob_stream(fake_host, REPO, digest, size=len(DATA))]
    assert b"".join(chunks) == DATA
    assert max(len(c) for c in chunks) <= 256 * 1024
    assert fake.requests[-1].headers.get("Accept-Encoding") == "identity"
    assert blob_requests(fake) == [None]


async def test_resume_after_a_mid_body_disconnect(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    digest = fake.add_blob(DATA)
    cuts = [1_000_000, 500_000]

    async def drop(request: Req) -> Answer | None:
        if "/blobs/" in request.path and cuts:
            return await serve_bytes(request, DATA, cut_after=cuts.pop(0))
        return None

    fake.hooks.append(drop)
    resumed: list[int] = []
    got = await collect(
        make_client(fake_host), fake_host, digest, size=len(DATA), on_resume=resumed.append
    )
    assert got == DATA
    assert resumed == [1_000_000, 1_500_000]
    assert blob_requests(fake) == [None, "bytes=1000000-", "bytes=1500000-"]


async def test_resume_without_a_known_size(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    digest = fake.add_blob(DATA)
    cuts = [123_457]

    async def drop(request: Req) -> Answer | None:
        if "/blobs/" in request.path and cuts:
            return await serve_bytes(request, DATA, cut_after=cuts.pop(0))
        return None

    fake.hooks.append(drop)
    assert await collect(make_client(fake_host), fake_host, digest) == DATA


async def test_server_answers_200_to_a_range_request(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    digest = fake.add_blob(DATA)
    calls = {"n": 0}

    async def no_ranges(request: Req) -> Answer | None:
        if "/blobs/" not in request.path:
            return None
        calls["n"] += 1
        cut = 700_001 if calls["n"] == 1 else None
        return await serve_bytes(request, DATA, honour_range=False, cut_after=cut)

    fake.hooks.append(no_ranges)
    resumed: list[int] = []
    got = await collect(
        make_client(fake_host), fake_host, digest, size=len(DATA), on_resume=resumed.append
    )
    assert got == DATA  # the first 700001 bytes of the 200 answer were skipped, not repeated
    assert resumed == [700_001]
    assert blob_requests(fake) == [None, "bytes=700001-"]


async def test_start_at_an_offset(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    digest = fake.add_blob(DATA)
    client = make_client(fake_host)
    assert await collect(client, fake_host, digest, offset=1000, size=len(DATA)) == DATA[1000:]
    assert blob_requests(fake) == ["bytes=1000-"]
    assert await collect(client, fake_host, digest, offset=len(DATA), size=len(DATA)) == b""
    # Not verifiable from an offset: a wrong digest goes unnoticed (the caller hashes the prefix).
    fake.blobs[str(Digest.of(b"x"))] = DATA
    assert await collect(client, fake_host, Digest.of(b"x"), offset=5) == DATA[5:]


async def test_corrupted_body_is_a_digest_mismatch_after_the_last_chunk(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    digest = fake.add_blob(DATA)
    corrupted = bytearray(DATA)
    corrupted[len(DATA) // 2] ^= 0xFF
    fake.blobs[str(digest)] = bytes(corrupted)
    received = bytearray()
    with pytest.raises(DigestMismatch) as err:
        async for chunk in make_client(fake_host).blob_stream(
            fake_host, REPO, digest, size=len(DATA)
        ):
            received += chunk
    assert bytes(received) == bytes(corrupted)  # every chunk was delivered first
    assert err.value.expected == str(digest)
    assert err.value.actual == str(Digest.of(bytes(corrupted)))
    assert "\n" not in str(err.value)


async def test_no_verification_when_asked(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    wrong = Digest.of(b"not the data")
    fake.blobs[str(wrong)] = DATA
    assert await collect(make_client(fake_host), fake_host, wrong, verify=False) == DATA


async def test_more_bytes_than_the_size_abort(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    digest = fake.add_blob(DATA)
    with pytest.raises(SizeMismatch):
        await collect(make_client(fake_host), fake_host, digest, size=1000)


async def test_more_bytes_than_the_size_abort_without_content_length(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    digest = fake.add_blob(DATA)

    async def chunked(request: Req) -> Answer | None:
        if "/blobs/" not in request.path:
            return None

        async def body() -> AsyncIterator[bytes]:
            for i in range(0, len(DATA), 65536):
                yield DATA[i : i + 65536]

        return respond(200, body())  # no Content-Length: chunked

    fake.hooks.append(chunked)
    received = 0
    with pytest.raises(SizeMismatch):
        async for chunk in make_client(fake_host).blob_stream(
            fake_host, REPO, digest, size=100_000
        ):
            received += len(chunk)
    assert received <= 100_000


async def test_bad_content_range_is_a_protocol_error(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    digest = fake.add_blob(DATA)
    calls = {"n": 0}

    async def wrong_range(request: Req) -> Answer | None:
        if "/blobs/" not in request.path:
            return None
        calls["n"] += 1
        if calls["n"] == 1:
            return await serve_bytes(request, DATA, cut_after=1000)
        return response(
            status=206, body=DATA[:10], headers={"Content-Range": f"bytes 0-9/{len(DATA)}"}
        )

    fake.hooks.append(wrong_range)
    with pytest.raises(ProtocolError, match="asked for bytes from 1000"):
        await collect(make_client(fake_host), fake_host, digest, size=len(DATA))


async def test_other_total_in_content_range_is_a_size_mismatch(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    digest = fake.add_blob(DATA)

    async def other_total(request: Req) -> Answer | None:
        if "/blobs/" in request.path and request.headers.get("Range"):
            return response(
                status=206, body=b"x", headers={"Content-Range": "bytes 1000-1000/999999999"}
            )
        if "/blobs/" in request.path:
            return await serve_bytes(request, DATA, cut_after=1000)
        return None

    fake.hooks.append(other_total)
    with pytest.raises(SizeMismatch):
        await collect(make_client(fake_host), fake_host, digest, size=len(DATA))


async def test_missing_blob(fake_host: str, make_client: MakeClient) -> None:
    client = make_client(fake_host)
    missing = Digest.of(b"missing")
    with pytest.raises(NotFound, match="BLOB_UNKNOWN"):
        await collect(client, fake_host, missing)
    assert await client.head_blob(fake_host, REPO, missing) is None


async def test_head_blob(fake: FakeRegistry, fake_host: str, make_client: MakeClient) -> None:
    digest = fake.add_blob(DATA)
    assert await make_client(fake_host).head_blob(fake_host, REPO, digest) == len(DATA)
    assert fake.requests[-1].method == "HEAD"


async def test_closing_the_stream_early_closes_the_response(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    digest = fake.add_blob(DATA)
    client = make_client(fake_host, chunk_size=65536)
    stream = client.blob_stream(fake_host, REPO, digest)
    first = await stream.__anext__()  # type: ignore[attr-defined]
    assert first == DATA[: len(first)]
    await stream.aclose()  # type: ignore[attr-defined]
    # The client is still usable afterwards.
    assert await collect(client, fake_host, digest) == DATA


@pytest.mark.parametrize(("size", "offset"), [(10, 11), (-1, 0), (None, -1)])
async def test_invalid_arguments(
    fake_host: str, make_client: MakeClient, size: int | None, offset: int
) -> None:
    with pytest.raises(ValueError):
        await collect(make_client(fake_host), fake_host, Digest.of(b""), size=size, offset=offset)


# -- redirects --------------------------------------------------------------------------------


class Storage:
    """Blob storage on another origin (as S3 behind ECR): records what it was sent."""

    def __init__(self, data: bytes, cuts: tuple[int, ...] = ()) -> None:
        self.data = data
        self.cuts = list(cuts)  # drop the connection after this many bytes, once each
        self.seen: list[dict[str, str]] = []

    def app(self) -> Handler:
        return self.get

    async def get(self, request: Req) -> Answer:
        if request.method != "GET" or not request.path.startswith("/bucket/"):
            return response(404)
        self.seen.append(dict(request.headers))
        assert request.query.get("X-Amz-Signature") == "a%2Fb"  # kept as encoded
        return await serve_bytes(
            request, self.data, cut_after=self.cuts.pop(0) if self.cuts else None
        )


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirect_to_storage_never_carries_authorization(
    serve: Serve, make_client: MakeClient, status: int
) -> None:
    storage = Storage(DATA)
    storage_server = serve(storage.app())
    fake = FakeRegistry(auth="bearer")
    digest = fake.add_blob(DATA)

    async def redirect(request: Req) -> Answer | None:
        if "/blobs/" in request.path and request.headers.get("Authorization"):
            location = f"http://localhost:{storage_server.port}/bucket/blob?X-Amz-Signature=a%252Fb"
            return response(status=status, headers={"Location": location})
        return None

    fake.hooks.append(redirect)
    server = serve(fake.app())
    host = f"127.0.0.1:{server.port}"
    assert await collect(make_client(host), host, digest, size=len(DATA)) == DATA
    assert len(storage.seen) == 1
    assert "Authorization" not in storage.seen[0]
    assert fake.requests[-1].authorization is not None  # the registry itself got the token


async def test_redirect_on_the_same_origin_keeps_authorization(
    serve: Serve, make_client: MakeClient
) -> None:
    fake = FakeRegistry(auth="bearer")
    digest = fake.add_blob(DATA)

    async def relative(request: Req) -> Answer | None:
        if "/blobs/" in request.path and "hop" not in request.query:
            return response(status=307, headers={"Location": "?hop=1"})
        return None

    fake.hooks.append(relative)
    server = serve(fake.app())
    host = f"127.0.0.1:{server.port}"
    client = make_client(host)
    await client.ping(host)  # learn the challenge: the blob GET carries a token from the start
    assert await collect(client, host, digest, size=len(DATA)) == DATA
    first, second = [s for s in fake.requests if "/blobs/" in s.path]
    assert second.query == {"hop": ["1"]}
    assert first.authorization is not None
    assert second.authorization == first.authorization


async def test_resume_through_a_redirect_keeps_the_range(
    serve: Serve, make_client: MakeClient
) -> None:
    storage = Storage(DATA, cuts=(99_999,))
    storage_server = serve(storage.app())
    fake = FakeRegistry()
    digest = fake.add_blob(DATA)

    async def redirect(request: Req) -> Answer | None:
        if "/blobs/" in request.path:
            location = f"http://localhost:{storage_server.port}/bucket/blob?X-Amz-Signature=a%252Fb"
            return response(status=307, headers={"Location": location})
        return None

    fake.hooks.append(redirect)
    server = serve(fake.app())
    host = f"127.0.0.1:{server.port}"
    assert await collect(make_client(host), host, digest, size=len(DATA)) == DATA
    assert [s.get("Range") for s in storage.seen] == [None, "bytes=99999-"]
    assert blob_requests(fake) == [None, "bytes=99999-"]


async def test_too_many_redirects(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    digest = fake.add_blob(DATA)

    async def loop(request: Req) -> Answer | None:
        return response(status=302, headers={"Location": request.path + "x"})

    fake.hooks.append(loop)
    with pytest.raises(ProtocolError, match="redirects"):
        await collect(make_client(fake_host), fake_host, digest)
    assert len(fake.requests) == 6


async def test_head_blob_through_storage_that_refuses_head(
    serve: Serve, make_client: MakeClient
) -> None:
    fake = FakeRegistry()
    digest = fake.add_blob(DATA)

    async def signed_for_get_only(request: Req) -> Answer:
        if request.method == "HEAD":
            return response(status=403)
        return await serve_bytes(request, DATA)

    storage_server = serve(signed_for_get_only)

    async def redirect(request: Req) -> Answer | None:
        if "/blobs/" in request.path:
            return response(
                status=307, headers={"Location": f"http://localhost:{storage_server.port}/b"}
            )
        return None

    fake.hooks.append(redirect)
    server = serve(fake.app())
    host = f"127.0.0.1:{server.port}"
    assert await make_client(host).head_blob(host, REPO, digest) == len(DATA)


async def test_many_concurrent_streams(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    blobs = [os.urandom(200_000 + i) for i in range(20)]
    digests = [fake.add_blob(b) for b in blobs]
    client = make_client(fake_host)
    got = await asyncio.gather(*(collect(client, fake_host, d) for d in digests))
    assert got == blobs
