"""Resolving a reference to its image manifest (warmstart.oci.resolve)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from warmstart.oci import (
    Digest,
    InvalidManifest,
    Manifest,
    NoMatchingPlatform,
    Platform,
    Reference,
    parse_manifest,
)
from warmstart.oci import mediatypes as mt
from warmstart.oci.resolve import resolve_image

REF = Reference.parse("r.io/team/app:v1")


@dataclass(frozen=True)
class Fetched:
    digest: Digest
    manifest: Manifest


def image(arch: str) -> bytes:
    config = json.dumps({"architecture": arch, "os": "linux"}).encode()
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {
                "mediaType": mt.OCI_CONFIG,
                "digest": str(Digest.of(config)),
                "size": len(config),
            },
            "layers": [],
        }
    ).encode()


def index(entries: dict[str, bytes], media_type: str = mt.OCI_MANIFEST) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [
                {
                    "mediaType": media_type,
                    "digest": str(Digest.of(body)),
                    "size": len(body),
                    "platform": {"os": "linux", "architecture": arch},
                }
                for arch, body in entries.items()
            ],
        }
    ).encode()


class Registry:
    def __init__(self, top: bytes, *children: bytes) -> None:
        self.bodies = {str(Digest.of(b)): b for b in children}
        self.top = top
        self.asked: list[Digest | None] = []

    async def fetch(self, digest: Digest | None) -> Fetched:
        self.asked.append(digest)
        body = self.top if digest is None else self.bodies[str(digest)]
        return Fetched(Digest.of(body), parse_manifest(body, None))


async def test_a_single_manifest_is_its_own_image() -> None:
    registry = Registry(image("amd64"))
    resolved = await resolve_image(REF, Platform.parse("linux/arm64"), registry.fetch)
    assert resolved.image is resolved.top and not resolved.is_index
    assert resolved.platform is None and registry.asked == [None]


async def test_an_index_resolves_to_the_platforms_entry() -> None:
    amd, arm = image("amd64"), image("arm64")
    registry = Registry(index({"amd64": amd, "arm64": arm}), amd, arm)
    resolved = await resolve_image(REF, Platform.parse("linux/arm64"), registry.fetch)
    assert resolved.is_index and resolved.image.digest == Digest.of(arm)
    assert resolved.top.digest == Digest.of(registry.top)
    assert resolved.platform == Platform.parse("linux/arm64")
    assert registry.asked == [None, Digest.of(arm)]


async def test_an_index_entry_that_is_no_image_manifest_is_refused() -> None:
    inner = index({"amd64": image("amd64")})
    registry = Registry(index({"amd64": inner}, media_type=mt.OCI_INDEX), inner)
    with pytest.raises(InvalidManifest, match=r"r\.io/team/app:v1: index entry .* is not an image"):
        await resolve_image(REF, Platform.parse("linux/amd64"), registry.fetch)


async def test_no_entry_for_the_platform() -> None:
    amd = image("amd64")
    registry = Registry(index({"amd64": amd}), amd)
    with pytest.raises(NoMatchingPlatform):
        await resolve_image(REF, Platform.parse("linux/s390x"), registry.fetch)
    assert registry.asked == [None]
