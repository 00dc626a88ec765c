"""Manifests for the tiered fetcher: by digest from the store, the home peer or the upstream
(verified, one fetch per key at a time), kept in the store, and learnt from on their way out.

What a manifest teaches: the sizes of the blobs it lists, which digests belong to its
repository (for the access checks), and the images that become complete in the store (recorded
once all their blobs are there).
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from typing import Protocol

from warmstart.fetch.access import AccessControl
from warmstart.fetch.cache import LRUMap
from warmstart.fetch.images import ImageTracker, PendingImage
from warmstart.fetch.interfaces import ManifestResult, NotFoundError
from warmstart.fetch.local import LocalSource
from warmstart.fetch.plan import Step, What
from warmstart.fetch.run import PlanRunner
from warmstart.fetch.source import (
    Source,
    SourceCorrupt,
    SourceError,
    SourceManifest,
    SourceNotManifest,
)
from warmstart.oci import (
    MAX_MANIFEST_BYTES,
    Digest,
    ImageIndex,
    ImageManifest,
    OCIError,
    parse_manifest,
)
from warmstart.oci import mediatypes as mt
from warmstart.store import ContentStore, StoreError
from warmstart.store.singleflight import Flight, SingleFlight

log = logging.getLogger(__name__)


class PlanSteps(Protocol):
    """Where to look for a digest now (the fetcher's plan from the peer ring and health)."""

    def __call__(self, what: What, digest: Digest, *, from_peer: bool) -> tuple[Step, ...]: ...


@dataclass(eq=False)
class Manifests:
    """The fetcher's manifests; ``steps(what, digest, from_peer=...)`` plans where to look."""

    store: ContentStore
    runner: PlanRunner
    sizes: LRUMap[Digest, int]
    access: AccessControl
    steps: PlanSteps
    flights: SingleFlight[tuple[object, ...], ManifestResult] = field(default_factory=SingleFlight)
    _images: ImageTracker = field(init=False, default_factory=ImageTracker)

    async def by_digest(
        self,
        registry: str,
        repository: str,
        digest: Digest,
        accept: tuple[str, ...],
        *,
        from_peer: bool,
    ) -> ManifestResult:
        known = self.sizes.get(digest)
        if known is not None and known > MAX_MANIFEST_BYTES:
            # A blob of a manifest served here: no need to ask anyone what it is.
            raise NotFoundError(
                f"{digest} is a blob of {known} bytes, not a manifest "
                f"(the limit is {MAX_MANIFEST_BYTES})"
            )
        if self.store.has(digest):
            try:
                local = await LocalSource(self.store).get_manifest(
                    registry, repository, str(digest), accept
                )
            except SourceNotManifest as e:
                raise NotFoundError(str(e)) from None
            except SourceError:
                pass  # corrupt (and removed by the store) or just evicted: fetch it again
            else:
                return self.served(registry, repository, local, "local")

        async def verified(source: Source) -> SourceManifest:
            got = await source.get_manifest(registry, repository, str(digest), accept)
            if Digest.of(got.body, digest.algorithm) != digest:
                raise SourceCorrupt(f"manifest content does not hash to {digest}")
            return SourceManifest(digest, got.media_type, got.body)

        async def fetch(_flight: Flight[tuple[object, ...], ManifestResult]) -> ManifestResult:
            steps = self.steps("manifest", digest, from_peer=from_peer)
            source, got = await self.runner.run(
                steps, f"manifest {digest}", registry, repository, digest, verified
            )
            self.keep(got)
            return self.served(registry, repository, got, source.kind)

        key = ("digest", registry, repository, digest, accept, from_peer)
        return await self.flights.do(key, fetch)

    def keep(self, got: SourceManifest) -> None:
        try:
            self.store.put_bytes(got.digest, got.body, got.media_type)
        except (StoreError, OSError, sqlite3.Error) as e:
            log.warning("could not keep manifest %s in the store: %s", got.digest, e)

    def served(
        self,
        registry: str,
        repository: str,
        got: SourceManifest,
        source: str,
        *,
        tag: str | None = None,
    ) -> ManifestResult:
        """Learn from a manifest on its way out: blob sizes, membership, pending images."""
        try:
            parsed = parse_manifest(got.body, got.media_type)
        except OCIError:
            parsed = None
        media_type = got.media_type or (parsed.media_type if parsed else mt.OCI_MANIFEST)
        members: list[Digest] = [got.digest]
        entry = (got.digest, len(got.body), media_type)
        tag_reference = f"{registry}/{repository}:{tag}" if tag is not None else None
        if isinstance(parsed, ImageIndex):
            for d in parsed.manifests:
                self.sizes.put(d.digest, d.size)
                members.append(d.digest)
            if tag_reference is not None:
                self._images.saw_index(registry, repository, tag_reference, parsed, entry)
        elif isinstance(parsed, ImageManifest):
            for d in parsed.blobs:
                self.sizes.put(d.digest, d.size)
                members.append(d.digest)
            self._images.saw_image(registry, repository, parsed, entry, tag_reference)
            self._record(self._images.complete(self.store.has, blob=got.digest))
        self.access.note_members(registry, repository, members)
        return ManifestResult(got.digest, media_type, got.body, source)

    def _record(self, images: list[PendingImage]) -> None:
        for image in images:
            try:
                self.store.record_image(
                    image.reference, image.top, list(image.entries), image.platform
                )
            except (StoreError, sqlite3.Error, ValueError) as e:
                log.warning("could not record image %s: %s", image.reference, e)

    def blob_stored(self, digest: Digest) -> None:
        """Record the images that ``digest`` completes in the store."""
        self._record(self._images.complete(self.store.has, blob=digest))


__all__ = ["Manifests"]
