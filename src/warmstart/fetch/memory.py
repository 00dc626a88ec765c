"""In-memory Sources for tests (and tools): a registry that can misbehave on request, and a
peer that is another fetcher in the same process (a cluster without HTTP)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from warmstart.fetch.interfaces import ClientIdentity, Fetcher, FetchError, NotFoundError
from warmstart.fetch.interfaces import UnauthorizedError as FetchUnauthorized
from warmstart.fetch.rendezvous import node_key
from warmstart.fetch.source import (
    Access,
    AccessQuery,
    BlobRequest,
    OpenedBlob,
    SourceDenied,
    SourceError,
    SourceManifest,
    SourceNotFound,
    SourceUnavailable,
    SourceUnreachable,
)
from warmstart.oci import Digest
from warmstart.oci import mediatypes as mt
from warmstart.registry.credentials import Credentials


@dataclass
class MemorySource:
    """A registry in memory: blobs per repository, manifests by tag and digest, private
    repositories with users. Counts what it is asked; ``fail``, ``corrupt``, ``cut_after``,
    ``delay`` and ``gate`` make it misbehave."""

    kind: str = "upstream"
    name: str = "upstream"
    chunk_size: int = 64 * 1024
    blobs: dict[Digest, bytes] = field(default_factory=dict)
    repos: dict[str, set[Digest]] = field(default_factory=dict)  # repository -> digests in it
    manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    private: set[str] = field(default_factory=set)
    users: dict[str, str] = field(default_factory=dict)
    agent_credentials: Credentials | None = None  # what the agent itself is configured with
    # faults
    fail: SourceError | None = None  # raised by every call
    corrupt: set[Digest] = field(default_factory=set)  # one byte flipped in the stream
    cut_after: dict[Digest, int] = field(default_factory=dict)  # fail once after N bytes
    delay: float = 0.0  # seconds before each chunk
    gate: asyncio.Event | None = None  # blob streams wait for it before their first chunk
    # what was asked
    opens: list[tuple[Digest, int]] = field(default_factory=list)
    stats: list[Digest] = field(default_factory=list)
    manifest_gets: list[str] = field(default_factory=list)
    manifest_accepts: list[tuple[str, ...]] = field(default_factory=list)
    access_checks: list[tuple[str, str | None, bool]] = field(default_factory=list)

    # -- content -----------------------------------------------------------------------------

    def add_blob(self, data: bytes, repository: str) -> Digest:
        digest = Digest.of(data)
        self.blobs[digest] = data
        self.repos.setdefault(repository, set()).add(digest)
        return digest

    def add_manifest(
        self, repository: str, body: bytes, media_type: str, tag: str | None = None
    ) -> Digest:
        digest = Digest.of(body)
        self.manifests[(repository, str(digest))] = (body, media_type)
        if tag is not None:
            self.manifests[(repository, tag)] = (body, media_type)
        self.repos.setdefault(repository, set()).add(digest)
        return digest

    def add_image(
        self, repository: str, tag: str | None, layers: Sequence[bytes], config: bytes = b"{}"
    ) -> tuple[Digest, bytes]:
        """An OCI image manifest over ``config`` and ``layers`` (all added as blobs)."""
        config_digest = self.add_blob(config, repository)
        doc = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {
                "mediaType": mt.OCI_CONFIG,
                "digest": str(config_digest),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": mt.OCI_LAYER_GZIP,
                    "digest": str(self.add_blob(layer, repository)),
                    "size": len(layer),
                }
                for layer in layers
            ],
        }
        body = json.dumps(doc, separators=(",", ":")).encode()
        return self.add_manifest(repository, body, mt.OCI_MANIFEST, tag), body

    def add_index(
        self, repository: str, tag: str, children: Sequence[tuple[Digest, int, str]]
    ) -> tuple[Digest, bytes]:
        """An OCI index of image manifests given as (digest, size, "os/arch")."""
        entries = []
        for digest, size, platform in children:
            os_name, _, arch = platform.partition("/")
            entries.append(
                {
                    "mediaType": mt.OCI_MANIFEST,
                    "digest": str(digest),
                    "size": size,
                    "platform": {"os": os_name, "architecture": arch},
                }
            )
        doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
        body = json.dumps(doc, separators=(",", ":")).encode()
        return self.add_manifest(repository, body, mt.OCI_INDEX, tag), body

    # -- Source --------------------------------------------------------------------------------

    def _allowed(self, repository: str, credentials: Credentials | None) -> bool:
        if repository not in self.private:
            return True
        return (
            credentials is not None
            and credentials.username is not None
            and self.users.get(credentials.username) == credentials.password
        )

    def _enter(self, repository: str) -> None:
        if self.fail is not None:
            raise self.fail
        if not self._allowed(repository, self.agent_credentials):
            raise SourceDenied(f"{repository}: access denied")

    def _blob(self, repository: str, digest: Digest) -> bytes:
        self._enter(repository)
        if digest not in self.repos.get(repository, set()) or digest not in self.blobs:
            raise SourceNotFound(f"blob {digest} not in {repository}")
        return self.blobs[digest]

    async def stat_blob(self, registry: str, repository: str, digest: Digest) -> int:
        self.stats.append(digest)
        return len(self._blob(repository, digest))

    async def open_blob(self, want: BlobRequest) -> OpenedBlob:
        digest = want.digest
        self.opens.append((digest, want.offset))
        data = self._blob(want.repository, digest)
        if digest in self.corrupt and data:
            i = len(data) // 2
            data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
        cut = self.cut_after.pop(digest, None)
        return OpenedBlob(len(data), self._chunks(data, want.offset, cut))

    async def _chunks(self, data: bytes, offset: int, cut: int | None) -> AsyncIterator[bytes]:
        if self.gate is not None:
            await self.gate.wait()
        pos = offset
        while pos < len(data):
            if self.delay:
                await asyncio.sleep(self.delay)
            end = min(pos + self.chunk_size, len(data))
            if cut is not None and end > cut:
                if cut > pos:
                    yield data[pos:cut]
                raise SourceUnavailable(f"connection dropped at byte {cut}")
            yield data[pos:end]
            pos = end

    async def get_manifest(
        self, registry: str, repository: str, reference: str, accept: Sequence[str]
    ) -> SourceManifest:
        self.manifest_gets.append(reference)
        self.manifest_accepts.append(tuple(accept))
        self._enter(repository)
        found = self.manifests.get((repository, reference))
        if found is None:
            raise SourceNotFound(f"manifest {repository}:{reference} not found")
        body, media_type = found
        return SourceManifest(Digest.of(body), media_type, body)

    # -- AccessChecker -------------------------------------------------------------------------

    async def check_access(self, query: AccessQuery) -> Access:
        repository, probe, credentials = query.repository, query.probe, query.credentials
        who = "agent" if query.as_agent else (credentials.username if credentials else None)
        self.access_checks.append((repository, who, query.as_agent))
        if self.fail is not None:
            raise self.fail
        if query.as_agent:
            credentials = self.agent_credentials
        if not self._allowed(repository, credentials):
            return Access.DENIED
        if probe.is_digest:
            present = Digest.parse(probe.reference) in self.repos.get(repository, set())
        else:
            present = (repository, probe.reference) in self.manifests
        return Access.PRESENT if present else Access.ABSENT


def _source_error(error: FetchError) -> SourceError:
    if isinstance(error, NotFoundError):
        return SourceNotFound(str(error))
    if isinstance(error, FetchUnauthorized):
        return SourceDenied(str(error))
    return SourceUnavailable(str(error))


class FetcherPeer:
    """Another node's fetcher as a peer Source, called in-process with a peer identity."""

    kind = "peer"

    def __init__(
        self, url: str, fetcher: Fetcher, *, node_id: str = "peer", token: str | None = None
    ) -> None:
        self.name = node_key(url)
        self.fetcher = fetcher
        self.identity = ClientIdentity(peer=node_id, peer_token=token)
        self.reachable = True
        self.corrupt = False  # flip a byte in every blob it sends
        self.drop_after: int | None = None  # stop every blob stream after this many bytes
        self.requests: list[tuple[str, str]] = []  # (kind, digest or reference)

    def _enter(self, kind: str, what: str) -> None:
        self.requests.append((kind, what))
        if not self.reachable:
            raise SourceUnreachable(f"peer {self.name} does not answer")

    async def stat_blob(self, registry: str, repository: str, digest: Digest) -> int:
        self._enter("stat", str(digest))
        try:
            return await self.fetcher.stat_blob(registry, repository, digest, self.identity)
        except FetchError as e:
            raise _source_error(e) from e

    async def open_blob(self, want: BlobRequest) -> OpenedBlob:
        offset = want.offset
        self._enter("blob", str(want.digest))
        try:
            result = await self.fetcher.get_blob(
                want.registry, want.repository, want.digest, self.identity
            )
        except FetchError as e:
            raise _source_error(e) from e
        if result.path is not None:
            chunks = _read_file(result.path, offset)
        else:
            assert result.open_stream is not None
            chunks = result.open_stream(offset)
        return OpenedBlob(result.size, self._relay(chunks, offset))

    async def _relay(self, chunks: AsyncIterator[bytes], offset: int) -> AsyncIterator[bytes]:
        flipped = not self.corrupt
        sent = 0
        try:
            async for chunk in chunks:
                if not flipped and chunk:
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                    flipped = True
                if self.drop_after is not None and sent + len(chunk) >= self.drop_after:
                    yield chunk[: self.drop_after - sent]
                    raise SourceUnavailable(f"peer {self.name} dropped the connection")
                sent += len(chunk)
                yield chunk
        except FetchError as e:
            raise SourceUnavailable(f"peer {self.name}: {e}") from e
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def get_manifest(
        self, registry: str, repository: str, reference: str, accept: Sequence[str]
    ) -> SourceManifest:
        self._enter("manifest", reference)
        try:
            got = await self.fetcher.get_manifest(
                registry, repository, reference, accept, self.identity
            )
        except FetchError as e:
            raise _source_error(e) from e
        return SourceManifest(got.digest, got.media_type, got.body)


async def _read_file(path: Path, offset: int, chunk: int = 1 << 20) -> AsyncIterator[bytes]:
    fd = os.open(path, os.O_RDONLY)
    try:
        pos = offset
        while True:
            data = await asyncio.to_thread(os.pread, fd, chunk, pos)
            if not data:
                return
            pos += len(data)
            yield data
    finally:
        os.close(fd)


__all__ = ["FetcherPeer", "MemorySource"]
