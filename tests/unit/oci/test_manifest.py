from __future__ import annotations

import json

import pytest

from warmstart.oci import (
    MAX_MANIFEST_BYTES,
    ImageIndex,
    ImageManifest,
    InvalidManifest,
    ManifestTooLarge,
    NoMatchingPlatform,
    Platform,
    UnsupportedMediaType,
    parse_manifest,
)
from warmstart.oci import mediatypes as mt

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def image(media_type: str | None = mt.OCI_MANIFEST, **extra) -> dict:
    doc = {
        "schemaVersion": 2,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": D1, "size": 10},
        "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": D2, "size": 20}],
        **extra,
    }
    if media_type:
        doc["mediaType"] = media_type
    return doc


def index(*platforms: dict | None) -> dict:
    return {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            {"mediaType": mt.OCI_MANIFEST, "digest": "sha256:" + str(i) * 64, "size": 5}
            | ({"platform": p} if p else {})
            for i, p in enumerate(platforms)
        ],
    }


def dump(doc: dict) -> bytes:
    return json.dumps(doc).encode()


def test_image_manifest():
    m = parse_manifest(dump(image()))
    assert isinstance(m, ImageManifest)
    assert [str(d.digest) for d in m.blobs] == [D1, D2]
    assert m.total_size == 30


def test_docker_manifest_from_header_only():
    m = parse_manifest(dump(image(None)), mt.DOCKER_MANIFEST_V2 + "; charset=utf-8")
    assert m.media_type == mt.DOCKER_MANIFEST_V2


def test_media_type_guessed_from_shape_when_absent():
    assert parse_manifest(dump(image(None)), "application/json").media_type == mt.OCI_MANIFEST


def test_header_and_body_disagree():
    with pytest.raises(InvalidManifest):
        parse_manifest(dump(image(mt.OCI_MANIFEST)), mt.DOCKER_MANIFEST_V2)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        dump({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST}),
        dump(image(schemaVersion=3)),
        dump(image(config={"mediaType": mt.OCI_CONFIG, "digest": "sha256:bad", "size": 1})),
        dump(image(config={"mediaType": mt.OCI_CONFIG, "digest": D1, "size": -1})),
        dump(image(config={"mediaType": mt.OCI_CONFIG, "digest": D1, "size": True})),
        dump(image(layers=[{"digest": D1, "size": 1}])),
    ],
)
def test_invalid(body):
    with pytest.raises(InvalidManifest):
        parse_manifest(body)


def test_unknown_media_type_and_schema1():
    with pytest.raises(UnsupportedMediaType):
        parse_manifest(dump(image("application/vnd.example.thing+json")))
    with pytest.raises(UnsupportedMediaType):
        parse_manifest(dump({"schemaVersion": 1, "name": "x", "fsLayers": []}))


def test_too_large():
    with pytest.raises(ManifestTooLarge):
        parse_manifest(b" " * (MAX_MANIFEST_BYTES + 1))


def test_index_choice():
    amd = {"os": "linux", "architecture": "amd64"}
    arm = {"os": "linux", "architecture": "arm64", "variant": "v8"}
    attestation = {"os": "unknown", "architecture": "unknown"}
    idx = parse_manifest(dump(index(attestation, arm, amd, None)))
    assert isinstance(idx, ImageIndex)
    assert idx.choose(Platform.parse("linux/amd64")).digest.hex == "2" * 64
    assert idx.choose(Platform.parse("linux/arm64")).digest.hex == "1" * 64
    with pytest.raises(NoMatchingPlatform, match="linux/amd64"):
        idx.choose(Platform.parse("linux/s390x"))


def test_unknown_content_type_without_declared_media_type_is_refused():
    with pytest.raises(UnsupportedMediaType):
        parse_manifest(dump(image(None)), "application/vnd.example.unknown+json")
    with pytest.raises(UnsupportedMediaType):
        parse_manifest(dump(image("application/vnd.example.unknown+json")), mt.OCI_MANIFEST)
