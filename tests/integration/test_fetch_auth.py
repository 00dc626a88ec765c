"""Cached content of a private repository goes only to clients whose credentials the upstream
accepts: the real agent app (tiered fetcher) in front of a TLS + token-auth docker-registry
(user alice/secret) and an anonymous-readable plain registry."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from warmstart.agent.app import PartMakers, build_app, given_store, server_kwargs
from warmstart.agent.config import build_config
from warmstart.store import ContentStore
from warmstart_harness.testbed.net import LOOPBACK, free_port
from warmstart_harness.testbed.registry import RegistryProcess, TokenAuthRegistry

ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


ALICE = basic("alice", "secret")
WRONG = basic("alice", "not-her-password")
NOBODY = basic("mallory", "secret")


@pytest.fixture
async def agent(
    tmp_path: Path,
    auth_registry: TokenAuthRegistry,
    registry: RegistryProcess,
    caplog: pytest.LogCaptureFixture,
) -> AsyncIterator[str]:
    """An agent mirroring both registries; it pulls from the private one as alice. Wrong and
    missing credentials are answered with a status: no traceback, no ERROR is logged."""
    port = free_port()
    config = build_config(
        {
            "listen": f"{LOOPBACK}:{port}",
            "store": str(tmp_path / "store"),
            "node_id": "node-a",
            "upstreams": {
                auth_registry.host: {
                    "url": auth_registry.url,
                    "username": "alice",
                    "password": "secret",
                    "ca_file": str(auth_registry.ca_file),
                },
                registry.host: {"url": registry.url},
            },
        }
    )
    store = ContentStore(tmp_path / "store")
    runner = web.AppRunner(
        await build_app(config, PartMakers(store=given_store(store))),
        access_log=None,
        shutdown_timeout=1,
        **server_kwargs(config),
    )
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, port).start()
    try:
        yield f"http://{LOOPBACK}:{port}"
        faults = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
        assert not faults, "\n".join(caplog.text.splitlines()[-60:])
    finally:
        await runner.cleanup()
        await store.aclose()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        yield s


async def get(
    session: aiohttp.ClientSession,
    agent: str,
    ns: str,
    path: str,
    auth: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Accept": ACCEPT}
    if auth is not None:
        headers["Authorization"] = auth
    async with session.get(f"{agent}/v2/{path}", params={"ns": ns}, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def test_private_repository_needs_credentials_the_upstream_accepts(
    auth_registry: TokenAuthRegistry,
    image_builder: Any,
    agent: str,
    session: aiohttp.ClientSession,
) -> None:
    image = image_builder.build(auth_registry, "team/private", "v1", layer_sizes=[300_000, 1000])
    ns = auth_registry.host
    manifest_path = f"team/private/manifests/{image.tag}"
    blob_paths = {d: f"team/private/blobs/{d}" for d in image.blobs}

    # without credentials, or with the wrong ones: 401 with a Basic challenge, before and
    # after the content is in the cache
    for round_ in ("cold", "cached"):
        for who in (None, WRONG, NOBODY):
            for path in (manifest_path, *blob_paths.values()):
                status, headers, _ = await get(session, agent, ns, path, who)
                assert status == 401, (round_, who, path)
                assert headers["WWW-Authenticate"] == 'Basic realm="warmstart"'
        if round_ == "cold":
            # alice gets everything (fetched upstream with the agent's own credentials)
            status, _, body = await get(session, agent, ns, manifest_path, ALICE)
            assert status == 200 and body == image.manifest
            for digest, path in blob_paths.items():
                status, _, body = await get(session, agent, ns, path, ALICE)
                assert status == 200 and sha256(body) == digest

    # cached: alice is served without asking the upstream for the blobs again, and her
    # accepted credentials are remembered (no new token request for each blob)
    mark = auth_registry.mark()
    tokens_before = len(auth_registry.token_requests)
    for digest, path in blob_paths.items():
        status, _, body = await get(session, agent, ns, path, ALICE)
        assert status == 200 and sha256(body) == digest
    assert auth_registry.blob_gets(since=mark) == 0
    assert len(auth_registry.token_requests) == tokens_before


async def test_anonymous_readable_registry_needs_nothing(
    registry: RegistryProcess, image_builder: Any, agent: str, session: aiohttp.ClientSession
) -> None:
    image = image_builder.build(registry, "open/app", "v1", layer_sizes=[100_000])
    status, _, body = await get(session, agent, registry.host, f"open/app/manifests/{image.tag}")
    assert status == 200 and body == image.manifest
    for digest in image.blobs:
        for _ in range(2):  # cold, then cached
            status, _, body = await get(session, agent, registry.host, f"open/app/blobs/{digest}")
            assert status == 200 and sha256(body) == digest
    # credentials, even wrong ones, do not matter for a public repository
    status, _, _ = await get(
        session, agent, registry.host, f"open/app/manifests/{image.tag}", WRONG
    )
    assert status == 200


async def test_private_layer_is_not_readable_through_a_public_repository(
    auth_registry: TokenAuthRegistry,
    registry: RegistryProcess,
    image_builder: Any,
    agent: str,
    session: aiohttp.ClientSession,
) -> None:
    """Knowing a private layer's digest is not enough: asked through a repository that does
    not hold it (here on the public registry) it is not found, although it is cached."""
    image = image_builder.build(auth_registry, "team/secret", "v1", layer_sizes=[50_000])
    layer = image.layer_digests[0]
    status, _, _ = await get(
        session, agent, auth_registry.host, f"team/secret/blobs/{layer}", ALICE
    )
    assert status == 200
    public = image_builder.build(registry, "open/other", "v1", layer_sizes=[10_000])
    assert public.manifest_digest
    statuses = await asyncio.gather(
        get(session, agent, registry.host, f"open/other/blobs/{layer}"),
        get(session, agent, auth_registry.host, f"team/secret/blobs/{layer}"),
    )
    assert [s for s, _, _ in statuses] == [404, 401]
