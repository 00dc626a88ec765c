"""Pure OCI data: references, digests, media types, manifests, platforms. No I/O."""

from __future__ import annotations

from warmstart.oci.digest import Digest, is_digest
from warmstart.oci.errors import (
    InvalidDigest,
    InvalidManifest,
    InvalidReference,
    ManifestTooLarge,
    NoMatchingPlatform,
    OCIError,
    UnsupportedMediaType,
)
from warmstart.oci.manifest import (
    MAX_MANIFEST_BYTES,
    Descriptor,
    ImageIndex,
    ImageManifest,
    Manifest,
    parse_manifest,
)
from warmstart.oci.platform import Platform, choose_platform
from warmstart.oci.reference import (
    Reference,
    parse_reference,
    validate_repository,
    validate_tag,
)
from warmstart.oci.registry_name import canonical_registry, registry_names

__all__ = [
    "MAX_MANIFEST_BYTES",
    "Descriptor",
    "Digest",
    "ImageIndex",
    "ImageManifest",
    "InvalidDigest",
    "InvalidManifest",
    "InvalidReference",
    "Manifest",
    "ManifestTooLarge",
    "NoMatchingPlatform",
    "OCIError",
    "Platform",
    "Reference",
    "UnsupportedMediaType",
    "canonical_registry",
    "choose_platform",
    "is_digest",
    "parse_manifest",
    "parse_reference",
    "registry_names",
    "validate_repository",
    "validate_tag",
]
