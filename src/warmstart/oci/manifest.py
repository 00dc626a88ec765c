"""Manifests and indexes (Docker v2 and OCI) as validated, immutable data."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from warmstart.oci import mediatypes as mt
from warmstart.oci.digest import Digest
from warmstart.oci.errors import (
    InvalidDigest,
    InvalidManifest,
    ManifestTooLarge,
    OCIError,
    UnsupportedMediaType,
)
from warmstart.oci.platform import Platform, choose_platform

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # what distribution and containerd accept
MAX_BLOB_SIZE = 1 << 50
# Content types that say nothing about the document; then its shape decides.
_GENERIC_CONTENT_TYPES = frozenset({"application/json", "text/plain", "application/octet-stream"})


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def from_json(cls, data: Any, where: str) -> Descriptor:
        if not isinstance(data, dict):
            raise InvalidManifest(f"{where}: descriptor is not an object")
        media_type = data.get("mediaType")
        if not isinstance(media_type, str) or not media_type or len(media_type) > 255:
            raise InvalidManifest(f"{where}: descriptor has no valid mediaType")
        try:
            digest = Digest.parse(data.get("digest"))
        except InvalidDigest as e:
            raise InvalidManifest(f"{where}: {e}") from None
        size = data.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_BLOB_SIZE:
            raise InvalidManifest(f"{where}: descriptor size {size!r} is not a valid byte count")
        annotations = data.get("annotations") or {}
        if not isinstance(annotations, dict):
            annotations = {}
        return cls(
            media_type,
            digest,
            size,
            Platform.from_descriptor(data.get("platform")),
            {str(k): str(v) for k, v in annotations.items()},
        )


@dataclass(frozen=True)
class ImageManifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    artifact_type: str | None = None

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """Every blob the manifest references: config first, then layers."""
        return (self.config, *self.layers)

    @property
    def total_size(self) -> int:
        return sum(d.size for d in self.blobs)


@dataclass(frozen=True)
class ImageIndex:
    media_type: str
    manifests: tuple[Descriptor, ...]

    def choose(self, wanted: Platform) -> Descriptor:
        images = [d for d in self.manifests if d.media_type in mt.MANIFESTS]
        return choose_platform(((d.platform, d) for d in images), wanted)


Manifest = ImageManifest | ImageIndex


def detect_media_type(doc: dict[str, Any], content_type: str | None) -> str:
    """The manifest's media type: its own ``mediaType`` field, else the HTTP Content-Type."""
    declared = doc.get("mediaType")
    header = mt.base_media_type(content_type)
    if declared is not None and not isinstance(declared, str):
        raise InvalidManifest("manifest mediaType is not a string")
    if doc.get("schemaVersion") == 1 or header in (mt.DOCKER_SCHEMA1, mt.DOCKER_SCHEMA1_SIGNED):
        raise UnsupportedMediaType(
            "Docker schema 1 manifests are not supported: push the image again with a current client"
        )
    if declared:
        if declared not in mt.MANIFESTS:
            raise UnsupportedMediaType(f"unsupported manifest media type {declared[:100]!r}")
        if header in mt.MANIFESTS and header != declared:
            raise InvalidManifest(
                f"manifest declares mediaType {declared} but was served as {header}"
            )
        media_type = declared
    elif header in mt.MANIFESTS:
        media_type = header
    elif header and header not in _GENERIC_CONTENT_TYPES:
        raise UnsupportedMediaType(f"unsupported manifest media type {header[:100]!r}")
    elif "manifests" in doc:
        media_type = mt.OCI_INDEX
    elif "config" in doc and "layers" in doc:
        media_type = mt.OCI_MANIFEST
    else:
        media_type = header or "(none)"
    if media_type not in mt.MANIFESTS:
        raise UnsupportedMediaType(f"unsupported manifest media type {media_type[:100]!r}")
    return media_type


def parse_manifest(body: bytes, content_type: str | None = None) -> Manifest:
    """Validate and parse a manifest or index body. Raises :class:`OCIError` subclasses."""
    if len(body) > MAX_MANIFEST_BYTES:
        raise ManifestTooLarge(
            f"manifest is {len(body)} bytes, over the {MAX_MANIFEST_BYTES} byte limit"
        )
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidManifest(f"manifest is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidManifest("manifest is not a JSON object")
    media_type = detect_media_type(doc, content_type)
    if doc.get("schemaVersion") != 2:
        raise InvalidManifest(f"manifest schemaVersion {doc.get('schemaVersion')!r} is not 2")
    if mt.is_index(media_type):
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise InvalidManifest("index has no 'manifests' list")
        return ImageIndex(
            media_type,
            tuple(Descriptor.from_json(e, f"manifests[{i}]") for i, e in enumerate(entries)),
        )
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise InvalidManifest("image manifest has no 'layers' list")
    artifact_type = doc.get("artifactType")
    return ImageManifest(
        media_type,
        Descriptor.from_json(doc.get("config"), "config"),
        tuple(Descriptor.from_json(e, f"layers[{i}]") for i, e in enumerate(layers)),
        artifact_type if isinstance(artifact_type, str) else None,
    )


def is_manifest_like(body: bytes) -> bool:
    """Whether ``body`` could be a manifest of any kind (image manifest, index, Docker schema 1,
    an artifact manifest): at most :data:`MAX_MANIFEST_BYTES` of JSON object with a
    ``schemaVersion``, a manifest-ish ``mediaType`` or a ``manifests``/``layers``/``blobs``
    list. Layers, configs and other blobs are not: asked for as a manifest, they are unknown.
    Looser than :func:`parse_manifest`, which only accepts what this project can use."""
    if len(body) > MAX_MANIFEST_BYTES or not body.lstrip()[:1] == b"{":
        return False
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    if not isinstance(doc, dict):
        return False
    if "schemaVersion" in doc:
        return True
    media_type = doc.get("mediaType")
    if isinstance(media_type, str) and ("manifest" in media_type or "index" in media_type):
        return True
    return any(isinstance(doc.get(k), list) for k in ("manifests", "layers", "blobs"))


__all__ = [
    "MAX_MANIFEST_BYTES",
    "Descriptor",
    "ImageIndex",
    "ImageManifest",
    "Manifest",
    "OCIError",
    "detect_media_type",
    "is_manifest_like",
    "parse_manifest",
]
