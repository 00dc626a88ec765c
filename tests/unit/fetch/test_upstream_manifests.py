"""The upstream Source asked for a manifest that is not one (a layer's or a config's digest):
the answer is "no such manifest" (a 4xx for the client), never "unavailable" (a 5xx, which
every registry client retries).

Two registry behaviours: one that hands out the blob's bytes on the manifest route, and
distribution's, which answers 500 (it reads the blob and fails to parse it)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer

from tests.unit.registry.fakes import (
    FakeRegistry,
    Req,
    aiohttp_app,
    error,
    image_manifest,
    serve_bytes,
)
from warmstart.fetch import UpstreamSettings
from warmstart.fetch.source import (
    Access,
    AccessQuery,
    Probe,
    SourceNotManifest,
    SourceUnavailable,
)
from warmstart.fetch.upstream import UpstreamSource
from warmstart.oci import MAX_MANIFEST_BYTES, Digest
from warmstart.oci import mediatypes as mt
from warmstart.registry.transport import Answer

REG = "reg.example"
REPO = "team/app"
BIG = os.urandom(MAX_MANIFEST_BYTES + 1000)
CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {}}).encode()


def manifest_route_digest(request: Req) -> str | None:
    tail = request.path
    if "/manifests/sha256:" not in tail:
        return None
    return tail.rsplit("/", 1)[1]


def blob_on_manifest_route(fake: FakeRegistry):  # a registry that answers with the blob
    async def hook(request: Req) -> Answer | None:
        ref = manifest_route_digest(request)
        if ref is None or ref not in fake.blobs:
            return None
        return await serve_bytes(request, fake.blobs[ref])

    return hook


def server_error_on_manifest_route(only: set[str] | None = None):  # distribution 2.8
    async def hook(request: Req) -> Answer | None:
        ref = manifest_route_digest(request)
        if ref is None or (only is not None and ref not in only):
            return None
        return error(500, "UNKNOWN", "unknown error")

    return hook


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeRegistry, UpstreamSource]]:
    registry = FakeRegistry()
    server = TestServer(aiohttp_app(registry.app()), host="127.0.0.1")
    await server.start_server()
    source = UpstreamSource(
        {REG: UpstreamSettings(url=f"http://127.0.0.1:{server.port}")}, max_attempts=2
    )
    try:
        yield registry, source
    finally:
        await source.aclose()
        await server.close()


def manifest_probe(digest: Digest) -> Probe:
    return Probe("manifest", str(digest))


async def test_a_layer_served_on_the_manifest_route_is_not_a_manifest(fake) -> None:
    registry, source = fake
    layer, config = registry.add_blob(BIG), registry.add_blob(CONFIG)
    registry.hooks.append(blob_on_manifest_route(registry))
    for digest in (layer, config):
        with pytest.raises(SourceNotManifest):
            await source.get_manifest(REG, REPO, str(digest), mt.MANIFEST_ACCEPT)
    probe = manifest_probe(layer)
    assert await source.check_access(AccessQuery(REG, REPO, probe)) is Access.ABSENT
    assert await source.check_access(AccessQuery(REG, REPO, probe, as_agent=True)) is Access.ABSENT


async def test_a_server_error_for_a_layer_digest_is_judged_on_the_blob_route(fake) -> None:
    registry, source = fake
    layer, config = registry.add_blob(BIG), registry.add_blob(CONFIG)
    registry.hooks.append(server_error_on_manifest_route())
    for digest in (layer, config):
        with pytest.raises(SourceNotManifest):
            await source.get_manifest(REG, REPO, str(digest), mt.MANIFEST_ACCEPT)
    # access: the layer is in the repository, and no manifest of its size exists
    assert await source.check_access(AccessQuery(REG, REPO, manifest_probe(layer))) is Access.ABSENT
    assert (
        await source.check_access(AccessQuery(REG, REPO, manifest_probe(config))) is Access.PRESENT
    )
    # a big blob is never read whole: HEAD only
    assert not [s for s in registry.requests if s.method == "GET" and str(layer) in s.path
                and "/blobs/" in s.path]  # fmt: skip


async def test_a_real_manifest_behind_a_failing_manifest_route_is_still_served(fake) -> None:
    registry, source = fake
    body = image_manifest(CONFIG)
    digest = registry.add_manifest(REPO, "v1", body)
    registry.blobs[str(digest)] = body  # distribution keeps manifests as blobs too
    registry.hooks.append(server_error_on_manifest_route())
    got = await source.get_manifest(REG, REPO, str(digest), mt.MANIFEST_ACCEPT)
    assert (got.digest, got.media_type, got.body) == (digest, mt.OCI_MANIFEST, body)


async def test_a_server_error_for_an_unknown_digest_stays_unavailable(fake) -> None:
    registry, source = fake
    registry.hooks.append(server_error_on_manifest_route())
    missing = Digest.of(b"nowhere")
    with pytest.raises(SourceUnavailable):
        await source.get_manifest(REG, REPO, str(missing), mt.MANIFEST_ACCEPT)
    with pytest.raises(SourceUnavailable):
        await source.check_access(AccessQuery(REG, REPO, manifest_probe(missing)))


async def test_an_unreachable_upstream_is_not_asked_twice() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = UpstreamSource({REG: UpstreamSettings(url=f"http://127.0.0.1:{port}")}, max_attempts=1)
    try:
        client = source._registry(REG).client
        heads: list[Digest] = []

        async def head_blob(host: str, repository: str, digest: Digest) -> int | None:
            heads.append(digest)
            return None

        client.head_blob = head_blob  # type: ignore[method-assign]
        with pytest.raises(SourceUnavailable):
            await source.get_manifest(REG, REPO, str(Digest.of(b"x")), mt.MANIFEST_ACCEPT)
        assert heads == []
    finally:
        await source.aclose()
