"""Media types of Docker v2 and OCI manifests, indexes and layers."""

from __future__ import annotations

from collections.abc import Sequence

DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

IMAGE_MANIFESTS = frozenset({DOCKER_MANIFEST_V2, OCI_MANIFEST})
INDEXES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
MANIFESTS = IMAGE_MANIFESTS | INDEXES

# What a pull asks for, most preferred first (the order containerd uses).
MANIFEST_ACCEPT = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST_V2)
MANIFEST_ACCEPT_HEADER = ", ".join(MANIFEST_ACCEPT)
# Accept entries that take any manifest: a registry then serves it as stored.
WILDCARDS = frozenset({"*/*", "application/*", "*"})


def manifest_accept(accepted: Sequence[str]) -> tuple[str, ...]:
    """What to ask a registry for, given the media types a client accepts.

    No ``Accept`` at all or a wildcard (``*/*``, ``application/*``: curl, many HTTP
    libraries, older tools) means "the manifest as stored, whatever its type": the client's
    named types first, then every manifest type. Registries such as distribution answer 404
    for an OCI manifest unless its type is named, so a wildcard must never reach them as is.
    """
    named = tuple(a for a in accepted if a not in WILDCARDS)
    if named and len(named) == len(accepted):
        return named
    return named + tuple(m for m in MANIFEST_ACCEPT if m not in named)


def is_index(media_type: str) -> bool:
    return media_type in INDEXES


def is_image_manifest(media_type: str) -> bool:
    return media_type in IMAGE_MANIFESTS


def base_media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()
