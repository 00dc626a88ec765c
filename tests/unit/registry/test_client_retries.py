from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import pytest

from warmstart.oci import Digest, Reference
from warmstart.registry import RegistryClient, RegistryError, UpstreamUnavailable
from warmstart.registry.transport import Answer, respond

from .conftest import MakeClient
from .fakes import FakeRegistry, Hook, Req, error, image_manifest, response, serve_bytes

DATA = os.urandom(2 * 1024 * 1024)
REPO = "app/web"
BODY = image_manifest()


async def collect(client: RegistryClient, host: str, digest: Digest, **kw: object) -> bytes:
    return b"".join([chunk async for chunk in client.blob_stream(host, REPO, digest, **kw)])  # type: ignore[arg-type]


def record_sleeps(client: RegistryClient) -> list[float]:
    sleeps: list[float] = []

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)

    client._requests.sleep = fake_sleep
    return sleeps


def failing(
    times: int, status: int, headers: dict[str, str] | None = None, path: str = "/v2/app"
) -> Hook:
    left = {"n": times}

    async def hook(request: Req) -> Answer | None:
        if request.path.startswith(path) and left["n"] > 0:
            left["n"] -= 1
            return error(status, "UNAVAILABLE", "try later", headers)
        return None

    return hook


@pytest.fixture
async def release() -> AsyncIterator[asyncio.Event]:
    """Set at teardown so that stalled handlers finish and the server can stop."""
    event = asyncio.Event()
    yield event
    event.set()


async def test_503_then_success(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    fake.add_manifest(REPO, "v1", BODY)
    digest = fake.add_blob(DATA)
    fake.hooks.append(failing(2, 503))
    client = make_client(fake_host)
    sleeps = record_sleeps(client)
    await client.get_manifest(Reference.parse(f"{fake_host}/{REPO}:v1"))
    assert len(sleeps) == 2
    assert sleeps[0] <= 0.001 and sleeps[1] <= 0.002  # full jitter under base * 2**n
    fake.hooks.append(failing(2, 502))
    assert await collect(client, fake_host, digest, size=len(DATA)) == DATA
    assert len(sleeps) == 4


async def test_429_retry_after_is_honoured(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    fake.add_manifest(REPO, "v1", BODY)
    digest = fake.add_blob(DATA)
    client = make_client(fake_host)
    sleeps = record_sleeps(client)
    fake.hooks.append(failing(1, 429, {"Retry-After": "7"}))
    await client.get_manifest(Reference.parse(f"{fake_host}/{REPO}:v1"))
    fake.hooks.append(failing(1, 429, {"Retry-After": "3"}))
    assert await collect(client, fake_host, digest) == DATA
    fake.hooks.append(failing(1, 503, {"Retry-After": "2"}))
    assert await client.head_blob(fake_host, REPO, digest) == len(DATA)
    assert sleeps == [7.0, 3.0, 2.0]


async def test_429_retry_after_really_waits(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    fake.add_manifest(REPO, "v1", BODY)
    fake.hooks.append(failing(1, 429, {"Retry-After": "1"}))
    started = time.monotonic()
    await make_client(fake_host).get_manifest(Reference.parse(f"{fake_host}/{REPO}:v1"))
    assert 0.95 <= time.monotonic() - started < 5


async def test_retry_after_too_long_gives_up_at_once(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    fake.hooks.append(failing(10, 429, {"Retry-After": "3600"}))
    client = make_client(fake_host)
    sleeps = record_sleeps(client)
    with pytest.raises(UpstreamUnavailable, match="retry after 3600 s"):
        await client.get_manifest(Reference.parse(f"{fake_host}/{REPO}:v1"))
    assert sleeps == []
    assert len(fake.requests) == 1


async def test_retries_exhausted(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    digest = fake.add_blob(DATA)
    fake.hooks.append(failing(100, 503))
    client = make_client(fake_host, max_attempts=4)
    sleeps = record_sleeps(client)
    r = Reference.parse(f"{fake_host}/{REPO}:v1")
    with pytest.raises(UpstreamUnavailable) as err:
        await client.get_manifest(r)
    assert str(r) in str(err.value) and "503" in str(err.value) and "4 attempts" in str(err.value)
    assert len(fake.requests) == 4 and len(sleeps) == 3
    with pytest.raises(UpstreamUnavailable, match="4 attempts"):
        await collect(client, fake_host, digest)
    assert len(fake.requests) == 8


async def test_501_is_not_retried(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    fake.hooks.append(failing(100, 501))
    with pytest.raises(RegistryError) as err:
        await make_client(fake_host).get_manifest(Reference.parse(f"{fake_host}/{REPO}:v1"))
    assert not isinstance(err.value, UpstreamUnavailable)
    assert len(fake.requests) == 1


async def test_connection_refused_is_retried_then_unavailable(make_client: MakeClient) -> None:
    client = make_client("127.0.0.1:1", max_attempts=3)
    sleeps = record_sleeps(client)
    with pytest.raises(UpstreamUnavailable, match="3 attempts"):
        await client.ping("127.0.0.1:1")
    assert len(sleeps) == 2


async def test_stalled_body_times_out_and_resumes(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient, release: asyncio.Event
) -> None:
    digest = fake.add_blob(DATA)
    stalls = [1]

    async def stall(request: Req) -> Answer | None:
        if "/blobs/" not in request.path or not stalls:
            return None
        stalls.pop()

        async def body() -> AsyncIterator[bytes]:
            yield DATA[:300_000]
            await asyncio.wait_for(release.wait(), 10)

        return respond(200, body(), {"Content-Length": str(len(DATA))})

    fake.hooks.append(stall)
    resumed: list[int] = []
    client = make_client(fake_host, read_timeout=0.3)
    started = time.monotonic()
    got = await collect(client, fake_host, digest, size=len(DATA), on_resume=resumed.append)
    assert got == DATA
    assert resumed == [300_000]
    assert time.monotonic() - started < 3


async def test_timeout_everywhere_is_upstream_unavailable(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient, release: asyncio.Event
) -> None:
    async def hang(request: Req) -> Answer | None:
        try:
            await asyncio.wait_for(release.wait(), 10)
        except TimeoutError:
            pass
        return response(status=500)

    fake.hooks.append(hang)
    client = make_client(fake_host, read_timeout=0.2, max_attempts=2)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable, match="2 attempts"):
        await client.get_manifest(Reference.parse(f"{fake_host}/{REPO}:v1"))
    assert time.monotonic() - started < 3


async def test_resume_counts_against_max_attempts(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    digest = fake.add_blob(DATA)

    async def always_drop(request: Req) -> Answer | None:
        if "/blobs/" in request.path:
            return await serve_bytes(request, DATA, cut_after=1000)
        return None

    fake.hooks.append(always_drop)
    client = make_client(fake_host, max_attempts=3)
    resumed: list[int] = []
    with pytest.raises(UpstreamUnavailable, match="3 attempts at byte 3000"):
        await collect(client, fake_host, digest, size=len(DATA), on_resume=resumed.append)
    assert resumed == [1000, 2000]


async def test_backoff_resets_after_progress(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    digest = fake.add_blob(DATA)
    cuts = [100_000, 200_000, 300_000]

    async def drop(request: Req) -> Answer | None:
        if "/blobs/" in request.path and cuts:
            return await serve_bytes(request, DATA, cut_after=cuts.pop(0))
        return None

    fake.hooks.append(drop)
    client = make_client(fake_host, backoff_base=1.0, backoff_max=100.0)
    client._requests.random = lambda: 0.5
    sleeps = record_sleeps(client)
    assert await collect(client, fake_host, digest, size=len(DATA)) == DATA
    assert sleeps == [0.5, 0.5, 0.5]  # every failure followed progress: no growth


async def test_503_from_storage_on_resume(
    fake: FakeRegistry, fake_host: str, make_client: MakeClient
) -> None:
    digest = fake.add_blob(DATA)
    calls = {"n": 0}

    async def flaky(request: Req) -> Answer | None:
        if "/blobs/" not in request.path:
            return None
        calls["n"] += 1
        if calls["n"] == 1:
            return await serve_bytes(request, DATA, cut_after=5000)
        if calls["n"] == 2:
            return response(status=503)
        return None

    fake.hooks.append(flaky)
    resumed: list[int] = []
    client = make_client(fake_host)
    assert await collect(client, fake_host, digest, on_resume=resumed.append) == DATA
    assert resumed == [5000, 5000]
