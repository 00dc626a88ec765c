"""Pull one image into the node-local store: resolve, choose a platform, fetch every blob.

The registry client and the store meet here and nowhere else: blobs stream from the client
straight into :meth:`ContentStore.fetch`, which hashes while it writes (the client does not hash
a second time) and coalesces concurrent pulls of one digest into one transfer.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from warmstart.aio import run_all
from warmstart.oci import Descriptor, Digest, ImageManifest, Platform, Reference
from warmstart.oci.resolve import resolve_image
from warmstart.registry import FetchedManifest, RegistryClient
from warmstart.store import BlobSource, ContentStore

DEFAULT_CONCURRENCY = 4


class PullProgress(Protocol):
    """What a pull reports while it runs (a progress bar, a log, a test recorder)."""

    def resolved(self, ref: Reference, digest: Digest, platform: Platform | None) -> None: ...
    def blob_started(self, desc: Descriptor, cached: bool) -> None: ...
    def blob_advanced(self, desc: Descriptor, nbytes: int) -> None: ...
    def blob_finished(self, desc: Descriptor) -> None: ...


class _SilentProgress:
    def resolved(self, ref: Reference, digest: Digest, platform: Platform | None) -> None:
        pass

    def blob_started(self, desc: Descriptor, cached: bool) -> None:
        pass

    def blob_advanced(self, desc: Descriptor, nbytes: int) -> None:
        pass

    def blob_finished(self, desc: Descriptor) -> None:
        pass


@dataclass
class PullResult:
    reference: Reference
    digest: Digest  # what the reference resolved to (an index or a manifest)
    manifest_digest: Digest  # the image manifest for the chosen platform
    platform: Platform | None
    blobs: list[Descriptor] = field(default_factory=list)
    bytes_total: int = 0
    bytes_cached: int = 0  # already in the store before this pull
    seconds: float = 0.0

    @property
    def bytes_fetched(self) -> int:
        return self.bytes_total - self.bytes_cached


class Puller:
    """Pulls images from registries into a :class:`ContentStore`."""

    def __init__(
        self,
        client: RegistryClient,
        store: ContentStore,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        progress: PullProgress | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._client = client
        self._store = store
        self._concurrency = concurrency
        self._progress = progress or _SilentProgress()

    async def resolve(
        self, ref: Reference, platform: Platform
    ) -> tuple[FetchedManifest, FetchedManifest | None, Platform | None]:
        """The top-level manifest and, when it is an index, the chosen entry and its platform."""
        resolved = await resolve_image(
            ref,
            platform,
            lambda digest: self._client.get_manifest(
                ref if digest is None else ref.with_digest(digest)
            ),
        )
        return resolved.top, resolved.image if resolved.is_index else None, resolved.platform

    async def pull(self, ref: Reference, platform: Platform | None = None) -> PullResult:
        started = time.monotonic()
        wanted = platform or Platform.host()
        top, child, chosen_platform = await self.resolve(ref, wanted)
        image = child or top
        assert isinstance(image.manifest, ImageManifest)
        self._progress.resolved(ref, top.digest, chosen_platform)

        manifests = [top] if child is None else [top, child]
        blobs = list(image.manifest.blobs)
        digests = [m.digest for m in manifests] + [d.digest for d in blobs]
        result = PullResult(ref, top.digest, image.digest, chosen_platform, blobs)
        holder = f"pull:{os.getpid()}:{id(self)}:{ref}"
        with self._store.pin(holder, digests, reference=str(ref)):
            for m in manifests:
                if not self._store.has(m.digest):
                    self._store.put_bytes(m.digest, m.body, m.media_type)
            await self._fetch_blobs(ref, self._unique(blobs), result)
            self._store.record_image(
                str(ref),
                top.digest,
                [(m.digest, len(m.body), m.media_type) for m in manifests]
                + [(d.digest, d.size, d.media_type) for d in self._unique(blobs)],
                str(chosen_platform) if chosen_platform else None,
            )
        result.seconds = time.monotonic() - started
        return result

    @staticmethod
    def _unique(blobs: list[Descriptor]) -> list[Descriptor]:
        seen: dict[Digest, Descriptor] = {}
        for d in blobs:
            seen.setdefault(d.digest, d)
        return list(seen.values())

    async def _fetch_blobs(
        self, ref: Reference, blobs: list[Descriptor], result: PullResult
    ) -> None:
        limit = asyncio.Semaphore(self._concurrency)

        async def one(desc: Descriptor) -> None:
            async with limit:
                cached = self._store.has(desc.digest)
                result.bytes_total += desc.size
                self._progress.blob_started(desc, cached)
                if cached:
                    result.bytes_cached += desc.size
                else:
                    await self._store.fetch(
                        desc.digest,
                        desc.size,
                        self._source(ref, desc),
                        media_type=desc.media_type,
                        on_progress=lambda n: self._progress.blob_advanced(desc, n),
                    )
                self._progress.blob_finished(desc)

        tasks = [asyncio.create_task(one(d)) for d in blobs]
        await run_all(tasks)

    def _source(self, ref: Reference, desc: Descriptor) -> BlobSource:
        def source(offset: int) -> AsyncIterator[bytes]:
            # The store hashes what it writes; hashing here too would cost a second pass.
            return self._client.blob_stream(
                ref.registry,
                ref.repository,
                desc.digest,
                size=desc.size,
                offset=offset,
                verify=False,
            )

        return source
