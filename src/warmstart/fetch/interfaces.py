"""The seam between the agent's HTTP layer and where bytes come from.

The agent's server (``warmstart.agent.server``) only talks to a :class:`Fetcher`; the tiered
implementation (``warmstart.fetch.tiered``) decides between the local store, the digest's home
peer, other peers and the upstream registry. Tests can plug an in-memory Fetcher.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from warmstart.errors import WarmstartError
from warmstart.oci import Digest

# Header a warmstart agent sets when it asks a peer; the peer then never asks other peers.
PEER_HEADER = "X-Warmstart-Peer"
# Header carrying the cluster's shared secret on peer requests (if one is configured).
PEER_TOKEN_HEADER = "X-Warmstart-Peer-Token"
# Header of a peer's piece request (a Range GET of one piece): answered only from verified
# pieces, within the node's upload slots (503 + Retry-After when none is free).
PIECE_HEADER = "X-Warmstart-Piece"


class FetchError(WarmstartError):
    """Base of the errors a Fetcher raises (the agent answers each with its status and code;
    a not-found as MANIFEST_UNKNOWN or BLOB_UNKNOWN by route)."""

    status = 502
    code = "UNKNOWN"


class NotFoundError(FetchError):
    status = 404
    code = "BLOB_UNKNOWN"  # the server uses MANIFEST_UNKNOWN for manifests


class UnauthorizedError(FetchError):
    """The client's credentials are missing or the upstream refused them for this repository."""

    status = 401
    code = "UNAUTHORIZED"


class DeniedError(FetchError):
    """The registry (``ns``) is not configured: the agent is never an open proxy."""

    status = 403
    code = "DENIED"


class ConflictError(FetchError):
    """The request cannot be answered as asked (a piece request for a blob this node does not
    cut the same way, or that travels whole here): the asker takes the whole-blob path."""

    status = 409
    code = "CONFLICT"


class UnavailableError(FetchError):
    """Every source failed (upstream down, peers down); ``retry_after`` when a source said
    how long to wait."""

    status = 503
    code = "UNAVAILABLE"
    retryable = True


class PieceBusyError(UnavailableError):
    """This node does not send that piece now (its upload slots are busy, or, as the home, it
    has sent the piece already and another node holds it): ask another holder."""


@dataclass(frozen=True)
class ClientIdentity:
    """What the downstream client presented; used to check access to private repositories."""

    authorization: str | None = None  # the raw Authorization header, if any
    peer: str | None = None  # node id from PEER_HEADER when the caller is a peer agent
    peer_token: str | None = None


@dataclass(frozen=True)
class ManifestResult:
    digest: Digest
    media_type: str
    body: bytes
    source: str  # "local", "peer", "upstream", "cache"


@dataclass(frozen=True)
class BlobResult:
    digest: Digest
    size: int
    source: str  # "local", "peer", "upstream"
    # Complete in the local store: serve this file (sendfile, Range handled by the server).
    path: Path | None = None
    # Otherwise: a transfer is in progress; open_stream(start) yields bytes from ``start`` as they
    # arrive, and raises if the transfer fails (nothing bad is ever stored).
    open_stream: Callable[[int], AsyncGenerator[bytes, None]] | None = None


class Fetcher(Protocol):
    async def get_manifest(
        self,
        registry: str,
        repository: str,
        reference: str,  # a tag or a digest string, already validated
        accept: Sequence[str],
        client: ClientIdentity,
    ) -> ManifestResult: ...

    async def get_blob(
        self, registry: str, repository: str, digest: Digest, client: ClientIdentity
    ) -> BlobResult: ...

    async def stat_blob(
        self, registry: str, repository: str, digest: Digest, client: ClientIdentity
    ) -> int:
        """Size of the blob (for HEAD) without starting a transfer if it can be avoided."""
        ...


@runtime_checkable
class PieceServer(Protocol):
    """The piece side of a fetcher (``warmstart.fetch.swarm``): the tracker route and the
    pieces this node serves to peers."""

    async def pieces_request(
        self, registry: str, digest: Digest, body: Any, client: ClientIdentity
    ) -> dict[str, Any]:
        """``POST /pieces/<digest>``: take the asker's announcement, answer the piece list and
        the holders (long-polled). ValueError: the body is not a piece request."""
        ...

    async def get_piece(
        self,
        registry: str,
        repository: str,
        digest: Digest,
        start: int,
        end: int,
        client: ClientIdentity,
    ) -> BlobResult:
        """Bytes ``start..end`` of the blob, only from what this node holds verified (the
        complete file, or accepted pieces); :class:`NotFoundError` otherwise,
        :class:`PieceBusyError` when this node does not send that piece now."""
        ...

    def piece_sent(self, digest: Digest, start: int) -> None:
        """The piece of ``digest`` at byte ``start`` went out to a peer in full."""
        ...
