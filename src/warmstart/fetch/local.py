"""The node's own content store as a :class:`~warmstart.fetch.source.Source`."""

from __future__ import annotations

import json
from collections.abc import Sequence

from warmstart.fetch.source import (
    BlobRequest,
    OpenedBlob,
    SourceCorrupt,
    SourceManifest,
    SourceNotFound,
    SourceNotManifest,
)
from warmstart.oci import MAX_MANIFEST_BYTES, Digest, InvalidDigest, OCIError, parse_manifest
from warmstart.oci import mediatypes as mt
from warmstart.oci.manifest import is_manifest_like
from warmstart.store import BlobNotFound, BlobTooLarge, ContentStore


def manifest_media_type(body: bytes) -> str:
    """The media type of a stored manifest: parsed, or its ``mediaType`` field, or OCI's."""
    try:
        return parse_manifest(body).media_type
    except OCIError:
        pass
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return mt.OCI_MANIFEST
    declared = doc.get("mediaType") if isinstance(doc, dict) else None
    return declared if isinstance(declared, str) and declared else mt.OCI_MANIFEST


class LocalSource:
    kind = "local"
    name = "local"

    def __init__(self, store: ContentStore) -> None:
        self._store = store

    async def stat_blob(self, registry: str, repository: str, digest: Digest) -> int:
        size = self._store.blob_size(digest) if self._store.has(digest) else None
        if size is None:
            raise SourceNotFound(f"blob {digest} is not in the local store")
        return size

    async def open_blob(self, want: BlobRequest) -> OpenedBlob:
        digest, offset = want.digest, want.offset
        total = await self.stat_blob(want.registry, want.repository, digest)
        if offset > total:
            raise SourceCorrupt(f"offset {offset} is past the end of {digest} ({total} bytes)")
        return OpenedBlob(total, self._store.open_reader(digest, offset))

    async def get_manifest(
        self, registry: str, repository: str, reference: str, accept: Sequence[str]
    ) -> SourceManifest:
        try:
            digest = Digest.parse(reference)
        except InvalidDigest:
            raise SourceNotFound("the local store keeps manifests by digest only") from None
        try:
            body = self._store.read_bytes(digest, MAX_MANIFEST_BYTES)
        except BlobNotFound as e:
            raise SourceNotFound(str(e)) from None
        except BlobTooLarge as e:
            # The store's files are verified: this digest is some other blob.
            raise SourceNotManifest(f"{digest} is not a manifest: {e}") from None
        if not is_manifest_like(body):
            raise SourceNotManifest(f"{digest} is a blob of {len(body)} bytes, not a manifest")
        return SourceManifest(digest, manifest_media_type(body), body)


__all__ = ["LocalSource", "manifest_media_type"]
