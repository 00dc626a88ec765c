"""An in-memory Fetcher for the agent's HTTP tests (the seam of ``warmstart.fetch.interfaces``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from warmstart.agent.api import PrewarmResponse
from warmstart.fetch.interfaces import (
    BlobResult,
    ClientIdentity,
    FetchError,
    ManifestResult,
    NotFoundError,
)
from warmstart.oci import Digest, Platform, Reference

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@dataclass
class Call:
    method: str
    registry: str
    repository: str
    reference: str
    accept: tuple[str, ...] = ()
    client: ClientIdentity | None = None


@dataclass
class MemoryFetcher:
    """Manifests by (registry, repository, reference), blobs by digest.

    A blob is served as a file (``mode="file"``, written under ``root``) or as a stream of
    ``chunk``-sized pieces (``mode="stream"``); ``fail_after[digest] = n`` makes the stream
    raise after ``n`` bytes. ``errors[(method, reference)]`` raises instead of answering.
    """

    root: Path
    manifests: dict[tuple[str, str, str], ManifestResult] = field(default_factory=dict)
    blobs: dict[Digest, bytes] = field(default_factory=dict)
    mode: str = "file"
    chunk: int = 1000
    source: str = "local"
    fail_after: dict[Digest, int] = field(default_factory=dict)
    short_stream: set[Digest] = field(default_factory=set)
    stream_delay: float = 0.0
    errors: dict[tuple[str, str], Exception] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    wrong_size: dict[Digest, int] = field(default_factory=dict)
    streams_closed: int = 0

    def add_manifest(
        self,
        registry: str,
        repository: str,
        body: bytes,
        media_type: str = OCI_MANIFEST,
        tag: str | None = None,
        source: str = "upstream",
    ) -> Digest:
        digest = Digest.of(body)
        result = ManifestResult(digest, media_type, body, source)
        self.manifests[(registry, repository, str(digest))] = result
        if tag is not None:
            self.manifests[(registry, repository, tag)] = result
        return digest

    def add_blob(self, data: bytes) -> Digest:
        digest = Digest.of(data)
        self.blobs[digest] = data
        return digest

    def _raise(self, method: str, reference: str) -> None:
        error = self.errors.get((method, reference))
        if error is not None:
            raise error

    async def get_manifest(
        self,
        registry: str,
        repository: str,
        reference: str,
        accept: Sequence[str],
        client: ClientIdentity,
    ) -> ManifestResult:
        self.calls.append(
            Call("get_manifest", registry, repository, reference, tuple(accept), client)
        )
        self._raise("get_manifest", reference)
        try:
            return self.manifests[(registry, repository, reference)]
        except KeyError:
            raise NotFoundError(f"manifest {repository}:{reference} not found") from None

    def _data(self, digest: Digest) -> bytes:
        try:
            return self.blobs[digest]
        except KeyError:
            raise NotFoundError(f"blob {digest} not found") from None

    async def stat_blob(
        self, registry: str, repository: str, digest: Digest, client: ClientIdentity
    ) -> int:
        self.calls.append(Call("stat_blob", registry, repository, str(digest), (), client))
        self._raise("stat_blob", str(digest))
        return len(self._data(digest))

    async def get_blob(
        self, registry: str, repository: str, digest: Digest, client: ClientIdentity
    ) -> BlobResult:
        self.calls.append(Call("get_blob", registry, repository, str(digest), (), client))
        self._raise("get_blob", str(digest))
        data = self._data(digest)
        size = self.wrong_size.get(digest, len(data))
        if self.mode == "file":
            path = self.root / digest.hex
            if not path.exists():
                path.write_bytes(data)
            return BlobResult(digest, size, self.source, path=path)
        return BlobResult(digest, size, self.source, open_stream=self._opener(digest, data))

    def _opener(self, digest: Digest, data: bytes):
        fetcher = self

        async def stream(start: int) -> AsyncGenerator[bytes, None]:
            try:
                fail_at = fetcher.fail_after.get(digest)
                end = len(data) - 1 if digest in fetcher.short_stream else len(data)
                pos = start
                while pos < end:
                    if fail_at is not None and pos >= fail_at:
                        raise FetchError("upstream connection lost")
                    stop = min(end, pos + fetcher.chunk)
                    if fail_at is not None and pos < fail_at:
                        stop = min(stop, fail_at)
                    if fetcher.stream_delay:
                        await asyncio.sleep(fetcher.stream_delay)
                    yield data[pos:stop]
                    pos = stop
                if fail_at is not None and pos >= fail_at and fail_at < len(data):
                    raise FetchError("upstream connection lost")
            finally:
                fetcher.streams_closed += 1

        return stream


@dataclass
class RecordingPrewarmer:
    calls: list[tuple[Reference, Platform | None, bool]] = field(default_factory=list)
    clients: list[ClientIdentity | None] = field(default_factory=list)
    models: list[bool] = field(default_factory=list)
    error: Exception | None = None

    async def prewarm(
        self,
        ref: Reference,
        platform: Platform | None,
        hot: bool,
        *,
        client: ClientIdentity | None = None,
        model: bool = False,
    ) -> PrewarmResponse:
        self.calls.append((ref, platform, hot))
        self.clients.append(client)
        self.models.append(model)
        if self.error is not None:
            raise self.error
        return PrewarmResponse(
            reference=str(ref),
            digest="sha256:" + "0" * 64,
            manifest_digest="sha256:" + "0" * 64,
            platform=str(platform) if platform else None,
            blobs=0,
            bytes=0,
            sources={},
            warm_seconds=0.0,
            seconds=0.0,
            hot=hot,
        )


@dataclass
class FixedHot:
    names: frozenset[str] = frozenset()

    async def hot_images(self) -> list[tuple[str, str]]:
        """Each name as a reference whose digest is unknown."""
        return [(name, "") for name in sorted(self.names)]
