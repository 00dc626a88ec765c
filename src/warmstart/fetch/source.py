"""The ``Source`` seam: one interface for every place bytes come from (local store, a peer
agent, the upstream registry), in the spirit of httpx's transports. The tiered fetcher only
talks to Sources; tests plug in-memory ones (:mod:`warmstart.fetch.memory`).

No aiohttp here: the implementations that do network I/O live in :mod:`.upstream` and
:mod:`.peer`.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from warmstart.errors import WarmstartError
from warmstart.oci import Digest, is_digest
from warmstart.registry.credentials import Credentials


class SourceError(WarmstartError):
    """A source could not deliver; ``kind`` is a short word for metrics and logs. The fetcher
    tries the next source, and answers with what they all said (``retry_after`` kept)."""

    kind = "error"
    status = 502


class SourceNotFound(SourceError):
    kind = "not_found"
    status = 404
    code = "NOT_FOUND"


class SourceNotManifest(SourceNotFound):
    """What was asked for as a manifest is something else (a layer, a config, something over
    the manifest size limit): there is no manifest there, so clients get a 4xx, not a 5xx."""

    kind = "not_manifest"


class SourceUnavailable(SourceError):
    """Failed for now (5xx, timeouts, dropped connection): another source may work."""

    kind = "unavailable"
    status = 503
    code = "UNAVAILABLE"
    retryable = True


class SourceBusy(SourceUnavailable):
    """The peer has no upload slot free now (503 with ``Retry-After``): ask another holder."""

    kind = "busy"
    retry_after: float

    def __init__(self, message: str, retry_after: float = 0.25) -> None:
        super().__init__(message, retry_after=retry_after)


class SourceUnreachable(SourceUnavailable):
    """No connection or no answer at all: skip this source for a while."""

    kind = "unreachable"


class SourceDenied(SourceError):
    """The source refused us (401/403)."""

    kind = "auth"
    status = 401
    code = "UNAUTHORIZED"


class SourceCorrupt(SourceError):
    """The source sent content that does not match its digest (or a broken protocol answer)."""

    kind = "corrupt"


@dataclass(frozen=True)
class SourceManifest:
    digest: Digest
    media_type: str
    body: bytes = field(repr=False)


@dataclass
class OpenedBlob:
    """A blob whose request has been answered: its total size and its bytes from the offset
    asked for. Iterating may raise :class:`SourceError`; close it if not read to the end."""

    size: int
    chunks: AsyncIterator[bytes]

    async def aclose(self) -> None:
        await aclose_quietly(self.chunks)


@dataclass(frozen=True)
class BlobRequest:
    """What :meth:`Source.open_blob` is asked for: a blob of a repository from ``offset``;
    ``size`` when the caller already knows it (a source may then skip asking for it)."""

    registry: str
    repository: str
    digest: Digest
    offset: int = 0
    size: int | None = None


@dataclass(frozen=True)
class Probe:
    """What to ask the upstream when checking access to a repository."""

    kind: Literal["blob", "manifest"]
    reference: str  # a digest, or a tag (manifests only)

    @property
    def is_digest(self) -> bool:
        return is_digest(self.reference)


@dataclass(frozen=True)
class AccessQuery:
    """What :meth:`AccessChecker.check_access` is asked: may ``credentials`` (None and not
    ``as_agent``: anonymous; ``as_agent``: the agent's own configured credentials) read
    ``probe`` through the repository?"""

    registry: str
    repository: str
    probe: Probe
    credentials: Credentials | None = field(default=None, repr=False)
    as_agent: bool = False


class Access(enum.Enum):
    DENIED = "denied"  # 401/403: these credentials (or none) may not pull from the repository
    PRESENT = "present"  # allowed, and the probed object is in the repository
    ABSENT = "absent"  # allowed, but the probed object is not in the repository


class Source(Protocol):
    kind: str  # "local", "peer" or "upstream"
    name: str  # unique: "local", "upstream", or the peer's URL

    async def stat_blob(self, registry: str, repository: str, digest: Digest) -> int:
        """The blob's size; :class:`SourceNotFound` if the source does not have it."""
        ...

    async def open_blob(self, want: BlobRequest) -> OpenedBlob:
        """Send the request and wait for its answer (errors surface here), then stream."""
        ...

    async def get_manifest(
        self, registry: str, repository: str, reference: str, accept: Sequence[str]
    ) -> SourceManifest:
        """A manifest by tag or digest (by digest: verified against it)."""
        ...


@runtime_checkable
class AccessChecker(Protocol):
    """Asks the upstream whether someone may pull from a repository."""

    async def check_access(self, query: AccessQuery) -> Access:
        """Raises :class:`SourceUnavailable` if the upstream cannot answer."""
        ...


async def aclose_quietly(chunks: object) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


async def opened(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Start ``chunks`` now (so its request is sent and its errors raise here) and return an
    iterator over all of it, the first chunk included."""
    it = chunks.__aiter__()
    try:
        first: bytes | None = await it.__anext__()
    except StopAsyncIteration:
        first = None
    except BaseException:
        await aclose_quietly(it)
        raise
    return _chain(first, it)


async def _chain(first: bytes | None, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        if first is not None:
            yield first
            async for chunk in rest:
                yield chunk
    finally:
        await aclose_quietly(rest)


__all__ = [
    "Access",
    "AccessChecker",
    "AccessQuery",
    "BlobRequest",
    "OpenedBlob",
    "Probe",
    "Source",
    "SourceBusy",
    "SourceCorrupt",
    "SourceDenied",
    "SourceError",
    "SourceManifest",
    "SourceNotFound",
    "SourceNotManifest",
    "SourceUnavailable",
    "SourceUnreachable",
    "aclose_quietly",
    "opened",
]
