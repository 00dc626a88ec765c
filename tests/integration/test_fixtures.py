"""The test fixtures themselves, checked with independent clients (skopeo, python-dxf, aiohttp)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
import requests
from dxf import DXF, DXFBase
from dxf.exceptions import DXFUnauthorizedError

from tests.support.fault_proxy import BlobHost, FaultProxy
from tests.support.http_client import RegistryClient
from tests.support.images import (
    INDEX_ACCEPT,
    OCI_INDEX,
    OCI_MANIFEST,
    BuiltImage,
    ImageBuilder,
    Layer,
    payload,
    skopeo_args,
)
from tests.support.tools import require_tool
from warmstart_harness.testbed.registry import BasicAuthRegistry, RegistryProcess, TokenAuthRegistry
from warmstart_harness.testbed.token_server import decode_jwt_unverified


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def skopeo_inspect(
    registry: RegistryProcess, ref: str, *extra: str, anonymous: bool = False
) -> subprocess.CompletedProcess[str]:
    skopeo = require_tool("skopeo")
    return subprocess.run(
        [
            skopeo,
            "--insecure-policy",
            "inspect",
            *skopeo_args(registry, anonymous=anonymous),
            *extra,
            f"docker://{ref}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def dxf_for(
    registry: RegistryProcess, repo: str, *, username: str | None, password: str | None
) -> DXF:
    def auth(dxf: DXFBase, response: requests.Response) -> None:
        dxf.authenticate(username, password, response=response)

    return DXF(
        registry.host,
        repo,
        auth=auth,
        insecure=not registry.tls,
        tlsverify=str(registry.ca_file) if registry.ca_file else True,
    )


def pull_with_dxf(dxf: DXF, digest: str) -> bytes:
    return b"".join(dxf.pull_blob(digest))


# -- images -------------------------------------------------------------------------------


def test_built_image_matches_skopeo_inspect(
    registry: RegistryProcess, image_builder: ImageBuilder
) -> None:
    img = image_builder.build(registry, "team/app", "v1", layer_sizes=[1000, 50_000], seed=7)
    assert img.reference == f"{registry.host}/team/app:v1"
    assert img.media_type == OCI_MANIFEST
    assert len(img.layer_digests) == 2
    assert img.layer_sizes[1] > 50_000  # random bytes do not compress; gzip adds a little

    raw = skopeo_inspect(registry, img.reference, "--raw")
    assert raw.returncode == 0, raw.stderr
    assert sha256(raw.stdout.encode()) == img.manifest_digest
    info = json.loads(skopeo_inspect(registry, img.reference).stdout)
    assert info["Digest"] == img.manifest_digest
    assert info["Layers"] == list(img.layer_digests)
    assert info["Architecture"] == "amd64"
    manifest = json.loads(img.manifest)
    assert manifest["config"]["digest"] == img.config_digest

    # The layer holds exactly the seeded payload.
    client = RegistryClient.for_registry(registry)
    blob = client.get_blob("team/app", img.layer_digests[0]).body
    assert sha256(blob) == img.layer_digests[0]
    assert img.layers[0] == Layer(1000, "7-0")


def test_layers_are_deterministic_and_shareable(
    registry: RegistryProcess, image_builder: ImageBuilder
) -> None:
    base = Layer(20_000, "shared-base")
    a = image_builder.build(registry, "a", "1", [base, 3000], seed="a")
    b = image_builder.build(registry, "b", "1", [base, 3000], seed="b")
    again = image_builder.build(registry, "a", "2", [base, 3000], seed="a")
    assert a.layer_digests[0] == b.layer_digests[0]
    assert a.layer_digests[1] != b.layer_digests[1]
    assert again.manifest_digest == a.manifest_digest  # fixed timestamps: reproducible builds


def test_multi_platform_index(registry: RegistryProcess, image_builder: ImageBuilder) -> None:
    idx = image_builder.build_index(registry, "multi", "v1", arches=["amd64", "arm64"])
    assert idx.media_type == OCI_INDEX
    assert set(idx.manifests) == {"linux/amd64", "linux/arm64"}
    assert len(set(idx.platform_digests.values())) == 2
    assert idx.manifests["linux/arm64"].architecture == "arm64"

    raw = skopeo_inspect(registry, idx.reference, "--raw")
    index = json.loads(raw.stdout)
    assert index["mediaType"] == OCI_INDEX
    assert len(index["manifests"]) == 2
    assert sha256(raw.stdout.encode()) == idx.index_digest
    for arch in ("amd64", "arm64"):
        out = skopeo_inspect(
            registry, idx.reference, "--override-arch", arch, "--override-os", "linux"
        )
        info = json.loads(out.stdout)
        # skopeo reports the digest of the index it resolved, and the chosen platform's layers.
        assert info["Digest"] == idx.index_digest
        assert info["Architecture"] == arch
        assert info["Layers"] == list(idx.manifests[f"linux/{arch}"].layer_digests)


def test_push_raw_manifest(registry: RegistryProcess, image_builder: ImageBuilder) -> None:
    img = image_builder.build(registry, "raw", "v1")
    ok = image_builder.push_raw_manifest(registry, "raw", "copy", img.manifest, OCI_MANIFEST)
    assert ok.status == 201
    assert ok.header("Docker-Content-Digest") == img.manifest_digest
    unknown = image_builder.push_raw_manifest(
        registry, "raw", "bad", img.manifest, "application/vnd.example.unknown+json"
    )
    assert unknown.status == 400
    oversized = json.loads(img.manifest)
    oversized["annotations"] = {"pad": "x" * (4 << 20)}
    too_big = image_builder.push_raw_manifest(
        registry, "raw", "big", json.dumps(oversized).encode(), OCI_MANIFEST
    )
    assert too_big.status == 400  # distribution 2.8 caps manifest bodies at 4 MiB


# -- request accounting ----------------------------------------------------------------------


def test_blob_get_counting_with_dxf(registry: RegistryProcess, image_builder: ImageBuilder) -> None:
    img = image_builder.build(registry, "count", "v1", layer_sizes=[100_000])
    digest = img.layer_digests[0]
    dxf = dxf_for(registry, "count", username=None, password=None)

    start = registry.mark()
    assert registry.blob_gets(digest, since=start) == 0
    blob = pull_with_dxf(dxf, digest)
    assert sha256(blob) == digest
    assert registry.blob_gets(digest, since=start) == 1
    assert registry.blob_gets(since=start) == 1

    after_get = registry.mark()
    assert dxf.blob_size(digest) == img.layer_sizes[0]  # a HEAD
    reqs = registry.requests(after_get)
    assert [(r.method, r.status) for r in reqs] == [("HEAD", 200)]
    assert registry.blob_gets(digest, since=after_get) == 0

    status, _, body = registry.http("GET", f"/v2/count/blobs/{digest}", {"Range": "bytes=10-19"})
    assert (status, len(body)) == (206, 10)
    ranged = registry.requests(after_get)[-1]
    assert (ranged.method, ranged.status, ranged.size) == ("GET", 206, 10)
    assert registry.blob_gets(digest, since=after_get) == 1


def test_registry_restarts_on_the_same_port(tmp_path: Path) -> None:
    """An outage and its end: stopped, started again where clients expect it, with its
    storage and its access log going on."""
    require_tool("docker-registry")
    reg = RegistryProcess(tmp_path / "reg")
    try:
        port = reg.port
        assert reg.http("GET", "/v2/")[0] == 200
        before = reg.mark()
        reg.stop()
        assert not reg.running
        with pytest.raises(OSError):
            reg.http("GET", "/v2/", timeout=2)
        reg.start(same_port=True)
        assert reg.running and reg.port == port
        assert reg.http("GET", "/v2/?after=1")[0] == 200
        assert [r.path for r in reg.requests(before)] == ["/v2/?after=1"]
    finally:
        reg.stop()


def test_token_auth_registry_with_dxf(
    auth_registry: TokenAuthRegistry, image_builder: ImageBuilder
) -> None:
    img = image_builder.build(auth_registry, "private/app", "v1", layer_sizes=[30_000])
    digest = img.layer_digests[0]
    assert auth_registry.url.startswith("https://127.0.0.1:")
    tokens = auth_registry.token_server

    before = len(tokens.token_requests)
    start = auth_registry.mark()
    alice = dxf_for(auth_registry, "private/app", username="alice", password="secret")
    assert sha256(pull_with_dxf(alice, digest)) == digest
    alice_requests = tokens.token_requests[before:]
    assert [r.username for r in alice_requests] == ["alice"]
    assert alice_requests[0].scopes == ("repository:private/app:pull",)
    _, claims = decode_jwt_unverified(alice_requests[0].token or "")
    assert claims["access"] == [{"type": "repository", "name": "private/app", "actions": ["pull"]}]
    # 401 challenge, then the authorised GET: both are GETs, one of them transfers the blob.
    assert auth_registry.blob_gets(digest, since=start) == 2
    assert auth_registry.blob_gets(digest, since=start, successful_only=True) == 1
    statuses = [r.status for r in auth_registry.blob_get_requests(digest, since=start)]
    assert statuses == [401, 200]

    # Anonymous: the token server grants nothing, the registry answers 401 (dxf gives up).
    start = auth_registry.mark()
    anonymous = dxf_for(auth_registry, "private/app", username=None, password=None)
    with pytest.raises(DXFUnauthorizedError):
        pull_with_dxf(anonymous, digest)
    assert tokens.token_requests[-1].username is None
    assert tokens.token_requests[-1].granted == ()
    assert {r.status for r in auth_registry.blob_get_requests(digest, since=start)} == {401}

    wrong = dxf_for(auth_registry, "private/app", username="alice", password="wrong")
    with pytest.raises(DXFUnauthorizedError):
        pull_with_dxf(wrong, digest)
    assert tokens.token_requests[-1].status == 401  # the token server refused the password

    denied = skopeo_inspect(auth_registry, img.reference, anonymous=True)
    assert denied.returncode != 0
    allowed = skopeo_inspect(auth_registry, img.reference)
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["Digest"] == img.manifest_digest


def test_basic_auth_registry_with_dxf(
    basic_auth_registry: BasicAuthRegistry, image_builder: ImageBuilder
) -> None:
    img = image_builder.build(basic_auth_registry, "basic/app", "v1", layer_sizes=[10_000])
    digest = img.layer_digests[0]
    alice = dxf_for(basic_auth_registry, "basic/app", username="alice", password="secret")
    assert sha256(pull_with_dxf(alice, digest)) == digest
    anonymous = dxf_for(basic_auth_registry, "basic/app", username=None, password=None)
    with pytest.raises((DXFUnauthorizedError, requests.HTTPError)):
        pull_with_dxf(anonymous, digest)
    allowed = skopeo_inspect(basic_auth_registry, img.reference)
    assert allowed.returncode == 0, allowed.stderr


def test_token_server_knobs(auth_registry: TokenAuthRegistry, image_builder: ImageBuilder) -> None:
    img = image_builder.build(auth_registry, "knobs", "v1")
    tokens = auth_registry.token_server
    tokens.expires_in = 7
    client = RegistryClient.for_registry(auth_registry)
    assert client.get_blob("knobs", img.config_digest).status == 200

    # A token whose exp is past distribution's 60 s leeway is refused by the registry.
    tokens.jwt_lifetime = -120
    stale = RegistryClient.for_registry(auth_registry)
    assert stale.get_blob("knobs", img.config_digest).status == 401
    tokens.jwt_lifetime = None

    tokens.fail_status(503, times=1)
    failing = RegistryClient.for_registry(auth_registry)
    with pytest.raises(PermissionError, match="503"):
        failing.get_blob("knobs", img.config_digest)
    assert failing.get_blob("knobs", img.config_digest).status == 200


# -- fault proxy --------------------------------------------------------------------------


@pytest.fixture
def proxied(
    registry: RegistryProcess, image_builder: ImageBuilder, fault_proxy: Callable[..., FaultProxy]
) -> tuple[FaultProxy, BuiltImage]:
    proxy = fault_proxy(registry)
    # Pushing through the proxy checks request bodies, Location headers and PUTs too.
    img = image_builder.build(proxy, "proxied", "v1", layer_sizes=[200_000])
    return proxy, img


async def test_fault_proxy_drop_and_corrupt(
    proxied: tuple[FaultProxy, BuiltImage], registry: RegistryProcess
) -> None:
    proxy, img = proxied
    digest, size = img.layer_digests[0], img.layer_sizes[0]
    url = f"{proxy.url}/v2/proxied/blobs/{digest}"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            assert sha256(await resp.read()) == digest

        proxy.drop_after(1000)
        async with session.get(url) as resp:
            assert resp.status == 200
            assert resp.content_length == size
            received = bytearray()
            with pytest.raises(aiohttp.ClientPayloadError):
                async for chunk in resp.content.iter_any():
                    received += chunk
            assert len(received) == 1000
        assert proxy.requests[-1].fault == "drop"

        proxy.corrupt()
        async with session.get(url) as resp:
            body = await resp.read()
            assert len(body) == size
            assert sha256(body) != digest

        async with session.get(url) as resp:  # faults were one-shot
            assert sha256(await resp.read()) == digest

        proxy.fail_status(503, times=2, path_contains="/blobs/")
        statuses = []
        for _ in range(3):
            async with session.get(url) as resp:
                statuses.append(resp.status)
                await resp.read()
        assert statuses == [503, 503, 200]

        # Two Accept headers are merged into one upstream; the index is found.
        headers = [("Accept", OCI_INDEX), ("Accept", OCI_MANIFEST)]
        async with session.get(f"{proxy.url}/v2/proxied/manifests/v1", headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers["Docker-Content-Digest"] == img.manifest_digest

        start = time.monotonic()
        proxy.throttle(400_000, path_contains="/blobs/")
        async with session.get(url) as resp:
            assert sha256(await resp.read()) == digest
        assert time.monotonic() - start >= 0.4
        proxy.clear()

    assert registry.blob_gets(digest) >= 6


async def test_fault_proxy_redirect_to_blob_host(
    proxied: tuple[FaultProxy, BuiltImage], blob_host: BlobHost
) -> None:
    proxy, img = proxied
    digest = img.layer_digests[0]
    blob_host.copy_from(proxy, "proxied", [digest])
    proxy.redirect_blobs_to(blob_host.url)
    headers = {"Authorization": "Bearer secret-token"}
    async with aiohttp.ClientSession() as session:
        url = f"{proxy.url}/v2/proxied/blobs/{digest}"
        async with session.get(url, headers=headers, allow_redirects=False) as resp:
            assert resp.status == 307
            assert resp.headers["Location"] == f"{blob_host.url}/v2/proxied/blobs/{digest}"
        async with session.get(url, headers=headers) as resp:  # aiohttp follows the redirect
            assert sha256(await resp.read()) == digest
        async with session.get(url, headers={"Range": "bytes=0-99"}) as resp:
            assert resp.status == 206
            assert len(await resp.read()) == 100

    redirected = proxy.requests_matching(digest)
    assert redirected[-1].fault == "redirect"
    assert redirected[-2].header("Authorization") == "Bearer secret-token"
    served = [r for r in blob_host.requests if r.method == "GET" and r.status in (200, 206)]
    assert len(served) == 2
    # aiohttp drops credentials on a cross-origin redirect; the blob host can tell.
    assert not any(r.has_authorization for r in served)


def test_fault_proxy_in_front_of_token_auth(
    auth_registry: TokenAuthRegistry,
    image_builder: ImageBuilder,
    fault_proxy: Callable[..., FaultProxy],
) -> None:
    img = image_builder.build(auth_registry, "secure", "v1")
    proxy = fault_proxy(auth_registry, tls=True)
    assert proxy.url.startswith("https://")
    client = RegistryClient.for_registry(proxy)
    resp = client.get_blob("secure", img.layer_digests[0])
    assert resp.status == 200
    assert sha256(resp.body) == img.layer_digests[0]
    assert [r.status for r in proxy.requests_matching("/blobs/")] == [401, 200]


# -- pull-through cache -----------------------------------------------------------------------


def test_pull_through_cache_registry(
    registry: RegistryProcess,
    registry_factory: Callable[..., RegistryProcess],
    image_builder: ImageBuilder,
) -> None:
    img = image_builder.build(registry, "library/cached", "v1", layer_sizes=[50_000])
    cache = registry_factory(proxy_remoteurl=registry.url)
    digest = img.layer_digests[0]
    client = RegistryClient.for_registry(cache)
    manifest = client.get_manifest("library/cached", "v1", OCI_MANIFEST)
    assert manifest.status == 200
    assert manifest.header("Docker-Content-Digest") == img.manifest_digest
    start = registry.mark()
    assert sha256(client.get_blob("library/cached", digest).body) == digest
    first_miss = registry.blob_gets(digest, since=start)
    assert first_miss >= 1  # distribution fetches a missed blob from the origin (twice, in 2.8)
    assert sha256(client.get_blob("library/cached", digest).body) == digest
    assert cache.blob_gets(digest) == 2
    index = client.get_manifest("library/cached", "v1", INDEX_ACCEPT)
    assert index.status == 404  # an image manifest is not served to an index-only Accept


# -- tools ---------------------------------------------------------------------------------


def test_require_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    assert require_tool("skopeo").endswith("skopeo")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        require_tool("warmstart-no-such-tool")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        require_tool("warmstart-no-such-tool")


def test_payload_is_seeded() -> None:
    assert payload("x", 64) == payload("x", 64)
    assert payload("x", 64) != payload("y", 64)
