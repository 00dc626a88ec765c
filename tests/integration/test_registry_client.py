"""The registry client against a real docker-registry (distribution 2.8).

Plain HTTP, token auth + TLS (its own CA, user alice), Basic auth + TLS, and a fault-injecting
proxy in front (dropped connections, corruption, 503/429, redirects to another host).
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from warmstart.oci import Digest, ImageIndex, ImageManifest, Platform, Reference
from warmstart.registry import (
    AuthError,
    ClientOptions,
    Credentials,
    CredentialStore,
    DigestMismatch,
    NotFound,
    RegistryClient,
    RegistryError,
    UpstreamUnavailable,
)
from warmstart.registry.tokens import TokenResponse


def client_for(reg: Any, *, login: bool = True, **options: Any) -> RegistryClient:
    """A client for a RegistryProcess / auth registry / fault proxy."""
    kw: dict[str, Any] = {"backoff_base": 0.01, "backoff_max": 0.05}
    if reg.url.startswith("http://"):
        kw["insecure"] = frozenset({reg.host})
    if reg.ca_file is not None:
        kw["ca_file"] = str(reg.ca_file)
    if login and reg.username is not None:
        kw["credentials"] = CredentialStore({reg.host: Credentials(reg.username, reg.password)})
    kw.update(options)
    return RegistryClient(ClientOptions(**kw))


async def read_blob(client: RegistryClient, host: str, repo: str, digest: str, **kw: Any) -> bytes:
    chunks = [c async for c in client.blob_stream(host, repo, Digest.parse(digest), **kw)]
    return b"".join(chunks)


# -- plain registry ------------------------------------------------------------------------


async def test_pull_an_image(registry: Any, image_builder: Any) -> None:
    image = image_builder.build(registry, "app/web", "v1", layer_sizes=[300_000, 5_000])
    async with client_for(registry) as client:
        await client.ping(registry.host)
        got = await client.get_manifest(Reference.parse(image.reference))
        assert str(got.digest) == image.manifest_digest
        assert got.body == image.manifest
        assert got.media_type == image.media_type
        assert isinstance(got.manifest, ImageManifest)
        assert [str(d.digest) for d in got.manifest.layers] == list(image.layer_digests)

        by_digest = await client.get_manifest(Reference.parse(image.digest_reference))
        assert by_digest.body == image.manifest
        head = await client.head_manifest(Reference.parse(image.reference))
        assert (str(head[0]), head[1], head[2]) == (
            image.manifest_digest,
            image.media_type,
            len(image.manifest),
        )

        for digest, size in image.blobs.items():
            data = await read_blob(client, registry.host, "app/web", digest, size=size)
            assert len(data) == size and str(Digest.of(data)) == digest
            assert await client.head_blob(registry.host, "app/web", Digest.parse(digest)) == size


async def test_index_and_platform_child(registry: Any, image_builder: Any) -> None:
    index = image_builder.build_index(registry, "multi/app", "v1", arches=("amd64", "arm64"))
    async with client_for(registry) as client:
        top = await client.get_manifest(Reference.parse(index.reference))
        assert str(top.digest) == index.index_digest
        assert isinstance(top.manifest, ImageIndex)
        chosen = top.manifest.choose(Platform.parse("linux/arm64"))
        child = await client.get_manifest(
            Reference.parse(index.reference).with_digest(chosen.digest)
        )
        assert str(child.digest) == index.manifests["linux/arm64"].manifest_digest


async def test_missing_things(registry: Any, image_builder: Any) -> None:
    image_builder.build(registry, "app/web", "v1")
    missing = Digest.of(b"nothing")
    async with client_for(registry) as client:
        with pytest.raises(NotFound, match="app/web:nope"):
            await client.get_manifest(Reference.parse(f"{registry.host}/app/web:nope"))
        with pytest.raises(NotFound):
            await client.get_manifest(Reference.parse(f"{registry.host}/no/such:v1"))
        assert await client.head_blob(registry.host, "app/web", missing) is None
        with pytest.raises(NotFound):
            await read_blob(client, registry.host, "app/web", str(missing))


async def test_resume_from_an_offset(registry: Any, image_builder: Any) -> None:
    data = os.urandom(2_000_000)
    digest = image_builder.push_blob(registry, "app/blob", data)
    async with client_for(registry) as client:
        got = await read_blob(client, registry.host, "app/blob", digest, offset=1_234_567)
        assert got == data[1_234_567:]


# -- faults through the proxy --------------------------------------------------------------


async def test_dropped_connections_resume_with_range(
    registry: Any, image_builder: Any, fault_proxy: Any
) -> None:
    data = os.urandom(3_000_000)
    digest = image_builder.push_blob(registry, "app/blob", data)
    proxy = fault_proxy(registry)
    proxy.drop_after(1_000_000, times=2)
    resumed: list[int] = []
    async with client_for(proxy) as client:
        got = await read_blob(
            client, proxy.host, "app/blob", digest, size=len(data), on_resume=resumed.append
        )
    assert got == data
    assert resumed == [1_000_000, 2_000_000]
    ranges = [r.header("Range") for r in proxy.requests_matching("/blobs/", "GET")]
    assert ranges == [None, "bytes=1000000-", "bytes=2000000-"]


async def test_corruption_is_caught(registry: Any, image_builder: Any, fault_proxy: Any) -> None:
    data = os.urandom(500_000)
    digest = image_builder.push_blob(registry, "app/blob", data)
    proxy = fault_proxy(registry)
    proxy.corrupt()
    async with client_for(proxy) as client:
        with pytest.raises(DigestMismatch):
            await read_blob(client, proxy.host, "app/blob", digest, size=len(data))
        # The next read (no fault left) is fine.
        assert await read_blob(client, proxy.host, "app/blob", digest) == data


async def test_503_and_429_are_retried(registry: Any, image_builder: Any, fault_proxy: Any) -> None:
    image = image_builder.build(registry, "app/web", "v1")
    proxy = fault_proxy(registry)
    proxy.fail_status(503, times=2, path_contains="/manifests/")
    proxy.fail_status(429, times=1, path_contains="/blobs/", headers={"Retry-After": "1"})
    ref = Reference.parse(f"{proxy.host}/app/web:v1")
    async with client_for(proxy) as client:
        got = await client.get_manifest(ref)
        assert str(got.digest) == image.manifest_digest
        started = time.monotonic()
        data = await read_blob(client, proxy.host, "app/web", image.config_digest)
        assert time.monotonic() - started >= 0.9
        assert str(Digest.of(data)) == image.config_digest
    assert len(proxy.requests_matching("/manifests/", "GET")) == 3


async def test_registry_down_is_upstream_unavailable(
    registry: Any, image_builder: Any, fault_proxy: Any
) -> None:
    image_builder.build(registry, "app/web", "v1")
    proxy = fault_proxy(registry)
    proxy.fail_status(502, times=None)
    async with client_for(proxy, max_attempts=3) as client:
        with pytest.raises(UpstreamUnavailable, match="3 attempts"):
            await client.get_manifest(Reference.parse(f"{proxy.host}/app/web:v1"))


# -- token auth + TLS ------------------------------------------------------------------------


async def test_token_auth_pull_and_token_cache(auth_registry: Any, image_builder: Any) -> None:
    image = image_builder.build(auth_registry, "private/app", "v1", layer_sizes=[100_000])
    reg = auth_registry
    before = len(reg.token_server.token_requests)  # the image builder's pushes got tokens too
    async with client_for(reg) as client:
        await client.ping(reg.host)
        got = await client.get_manifest(Reference.parse(image.reference))
        assert str(got.digest) == image.manifest_digest
        for digest, size in image.blobs.items():
            data = await read_blob(client, reg.host, "private/app", digest, size=size)
            assert str(Digest.of(data)) == digest
    ours = reg.token_server.token_requests[before:]
    assert all(r.username == "alice" for r in ours)
    scoped = [r for r in ours if r.scopes]
    assert len(scoped) == 1  # one token for the repository, cached for every later request
    assert scoped[0].scopes == ("repository:private/app:pull",)
    assert scoped[0].granted  # the token server gave pull access


async def test_rejected_cached_token_is_refreshed_once(
    auth_registry: Any, image_builder: Any
) -> None:
    image = image_builder.build(auth_registry, "private/app", "v1")
    reg = auth_registry
    async with client_for(reg) as client:
        ref = Reference.parse(image.reference)
        await client.get_manifest(ref)
        before = len(reg.token_server.token_requests)
        # Replace every cached token by one the registry will reject.
        for key in list(client._requests.tokens._entries):
            client._requests.tokens.put(key, TokenResponse("not-a-jwt", expires_in=300))
        await client.get_manifest(ref)
        assert len(reg.token_server.token_requests) == before + 1


async def test_token_auth_without_credentials(auth_registry: Any, image_builder: Any) -> None:
    image = image_builder.build(auth_registry, "private/app", "v1")
    async with client_for(auth_registry, login=False) as client:
        with pytest.raises(AuthError, match="docker login"):
            await client.get_manifest(Reference.parse(image.reference))


async def test_token_auth_wrong_password(auth_registry: Any, image_builder: Any) -> None:
    image = image_builder.build(auth_registry, "private/app", "v1")
    wrong = CredentialStore({auth_registry.host: Credentials("alice", "wrong")})
    async with client_for(auth_registry, login=False, credentials=wrong) as client:
        with pytest.raises(AuthError, match="denied access to alice"):
            await client.get_manifest(Reference.parse(image.reference))


async def test_tls_without_the_ca_fails_cleanly(auth_registry: Any) -> None:
    opts = ClientOptions(max_attempts=1)
    async with RegistryClient(opts) as client:
        with pytest.raises(RegistryError, match="TLS failure"):
            await client.ping(auth_registry.host)


async def test_token_server_hiccup_is_retried(auth_registry: Any, image_builder: Any) -> None:
    image = image_builder.build(auth_registry, "private/app", "v1")
    auth_registry.token_server.fail_status(503, times=2)
    async with client_for(auth_registry) as client:
        got = await client.get_manifest(Reference.parse(image.reference))
    assert str(got.digest) == image.manifest_digest


async def test_redirect_to_storage_drops_authorization(
    auth_registry: Any, image_builder: Any, fault_proxy: Any, blob_host: Any
) -> None:
    image = image_builder.build(auth_registry, "private/app", "v1", layer_sizes=[200_000])
    blob_host.copy_from(auth_registry, "private/app", image.blobs)
    proxy = fault_proxy(auth_registry, tls=True)
    proxy.redirect_blobs_to(blob_host.url)
    async with client_for(proxy) as client:
        await client.ping(proxy.host)  # learn the challenge: blob GETs carry a token from the start
        for digest, size in image.blobs.items():
            data = await read_blob(client, proxy.host, "private/app", digest, size=size)
            assert str(Digest.of(data)) == digest
    gets = proxy.requests_matching("/blobs/", "GET")
    assert gets and all(r.has_authorization for r in gets)  # the registry got the token ...
    assert blob_host.requests and not any(  # ... the storage host never did
        any(k.lower() == "authorization" for k, _ in r.headers) for r in blob_host.requests
    )


# -- Basic auth + TLS ------------------------------------------------------------------------


async def test_basic_auth(basic_auth_registry: Any, image_builder: Any) -> None:
    image = image_builder.build(basic_auth_registry, "private/app", "v1")
    async with client_for(basic_auth_registry) as client:
        got = await client.get_manifest(Reference.parse(image.reference))
        assert str(got.digest) == image.manifest_digest
    async with client_for(basic_auth_registry, login=False) as client:
        with pytest.raises(AuthError, match="docker login"):
            await client.get_manifest(Reference.parse(image.reference))


# -- throughput ------------------------------------------------------------------------------


async def test_stream_throughput(registry: Any, image_builder: Any) -> None:
    """256 MiB through the real registry, verified; prints MB/s (no hard bound: shared CI)."""
    data = os.urandom(256 << 20)
    digest = image_builder.push_blob(registry, "bench/big", data)
    del data
    async with client_for(registry) as client:
        for verify in (False, True):
            started = time.perf_counter()
            n = 0
            async for chunk in client.blob_stream(
                registry.host, "bench/big", Digest.parse(digest), size=256 << 20, verify=verify
            ):
                n += len(chunk)
            seconds = time.perf_counter() - started
            assert n == 256 << 20
            print(f"\nblob_stream verify={verify}: {n / seconds / 1e6:.0f} MB/s")
