"""An async client of the OCI Distribution API: manifests and blobs, pulled and pushed.

It sends through a :class:`~.transport.Transport` (:mod:`.aiohttp_transport` unless given one,
e.g. an in-memory :class:`~.transport.MemoryTransport` in tests); :mod:`.sending` follows
redirects by hand so that ``Authorization`` never leaves the registry's origin. The rules it
applies live in small modules next to it: :mod:`.auth` (what to do on a 401),
:mod:`.token_fetch` (asking a token server), :mod:`.challenge` (WWW-Authenticate),
:mod:`.tokens` (token cache), :mod:`.retry` and :mod:`.backoff` (what to retry, how long to
wait), :mod:`.answers` (what an error answer means), :mod:`.manifest_answers` (a manifest's body
and digest checked), :mod:`.ranges` (Range/Content-Range), :mod:`.credentials` and
:mod:`.endpoints`; :mod:`.authorized` sends each request with them.

Blob streams resume with ``Range`` after a dropped connection and are hashed while they
stream; uploads (:mod:`.upload`) go in chunks and resume where the registry stopped; no blob is
ever held in memory as a whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import aiohttp
from yarl import URL

from warmstart.oci import mediatypes as mt
from warmstart.oci.digest import Digest
from warmstart.oci.errors import InvalidDigest, OCIError
from warmstart.oci.manifest import MAX_MANIFEST_BYTES, Manifest, parse_manifest
from warmstart.oci.reference import Reference, validate_repository
from warmstart.registry import answers
from warmstart.registry.aiohttp_transport import (
    AiohttpTransport,
)
from warmstart.registry.authorized import AuthorizedRequests
from warmstart.registry.backoff import (
    BackoffPolicy,
)
from warmstart.registry.credentials import CredentialStore
from warmstart.registry.endpoints import (
    Endpoint,
    resolve_endpoint,
)
from warmstart.registry.errors import (
    DigestMismatch,
    InvalidManifest,
    ManifestTooLarge,
    ProtocolError,
    RegistryError,
    SizeMismatch,
)
from warmstart.registry.manifest_answers import manifest_digest, read_manifest_body
from warmstart.registry.ranges import (
    RangeError,
    SizeConflict,
    parse_content_range,
    parse_unsatisfied_range,
    range_header,
    resume_response,
)
from warmstart.registry.retry import Retry
from warmstart.registry.sending import BodyFactory, url_origin
from warmstart.registry.transport import Response, Transport
from warmstart.registry.upload import (
    DEFAULT_PUSH_CHUNK,
    BlobPush,
    BlobReader,
    BlobUpload,
    push_scope,
)

MANIFEST_ACCEPT: tuple[str, ...] = mt.MANIFEST_ACCEPT
DOCKER_CONTENT_DIGEST = "Docker-Content-Digest"

T = TypeVar("T")


@dataclass
class ClientOptions:
    insecure: frozenset[str] = frozenset()  # "host:port" to reach over plain HTTP
    ca_file: str | None = None  # extra CA bundle for TLS
    credentials: CredentialStore | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0  # per socket read (sock_read), not whole-request
    max_attempts: int = 6  # for retries and blob resumes
    backoff_base: float = 0.2
    backoff_max: float = 10.0
    user_agent: str = "warmstart/0.1"
    chunk_size: int = 1 << 20
    push_chunk_size: int = DEFAULT_PUSH_CHUNK  # bytes per PATCH of a blob upload
    max_retry_after: float = 60.0  # a longer Retry-After gives up at once

    def backoff_policy(self) -> BackoffPolicy:
        return BackoffPolicy(
            base=self.backoff_base,
            cap=self.backoff_max,
            max_attempts=self.max_attempts,
            max_retry_after=self.max_retry_after,
        )


@dataclass(frozen=True)
class FetchedManifest:
    digest: Digest
    media_type: str
    body: bytes = field(repr=False)
    manifest: Manifest = field(repr=False)


def _pull_scope(repository: str) -> tuple[str, ...]:
    return (f"repository:{repository}:pull",)


class RegistryClient:
    """Read-side client of the Distribution API. Use as ``async with RegistryClient() as c``.

    One instance holds its own token cache and auth state (nothing is global). It sends through
    ``transport``, or else through an aiohttp session: its own, or ``session`` (left open).
    """

    def __init__(
        self,
        options: ClientOptions | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.options = options or ClientOptions()
        if self.options.chunk_size < 1 or self.options.push_chunk_size < 1:
            raise ValueError("chunk_size and push_chunk_size must be positive")
        if transport is not None and session is not None:
            raise ValueError("pass a transport or a session, not both")
        self._transport: Transport = transport or AiohttpTransport(
            session=session,
            ca_file=self.options.ca_file,
            connect_timeout=self.options.connect_timeout,
            read_timeout=self.options.read_timeout,
            read_bufsize=max(1 << 16, min(self.options.chunk_size, 1 << 22)),
        )
        self._requests = AuthorizedRequests(
            self._transport,
            self.options.backoff_policy(),
            self.options.credentials or CredentialStore(),
            insecure=self.options.insecure,
            user_agent=self.options.user_agent,
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> RegistryClient:
        if self._requests.closed:
            raise RegistryError("registry client is closed")
        if isinstance(self._transport, AiohttpTransport):
            self._transport.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the transport (which leaves a caller's session open). No use after this."""
        if not self._requests.closed:
            self._requests.closed = True
            await self._transport.aclose()

    def endpoint(self, registry: str) -> Endpoint:
        try:
            return resolve_endpoint(registry, self.options.insecure)
        except ValueError as e:
            raise RegistryError(str(e)) from None

    # -- public API ----------------------------------------------------------------------

    async def ping(self, registry: str) -> None:
        """``GET /v2/``: the registry is reachable, speaks the API and accepts us."""
        endpoint = self.endpoint(registry)
        what = f"registry {endpoint.registry}"

        async def once() -> None:
            resp = await self._requests.request(
                "GET", endpoint, "/v2/", scopes=(), headers={}, what=what
            )
            try:
                if resp.status == 200:
                    return
                if resp.status == 404:
                    raise RegistryError(
                        f"{what}: {endpoint.base_url}/v2/ answered 404; not an OCI registry?",
                        upstream_status=404,
                    )
                await self._requests.fail(resp, what, endpoint)
            finally:
                resp.release()

        await self._requests.retrying(what, once)

    async def get_manifest(
        self, ref: Reference, accept: Sequence[str] = MANIFEST_ACCEPT
    ) -> FetchedManifest:
        endpoint = self.endpoint(ref.registry)
        what = f"manifest {ref}"
        path = f"/v2/{ref.repository}/manifests/{ref.reference}"
        headers = {"Accept": ", ".join(accept)}
        scopes = _pull_scope(ref.repository)

        async def once() -> tuple[bytes, str | None, str | None]:
            resp = await self._requests.request(
                "GET", endpoint, path, scopes=scopes, headers=headers, what=what
            )
            try:
                if resp.status != 200:
                    await self._requests.fail(resp, what, endpoint)
                body = await read_manifest_body(resp, MAX_MANIFEST_BYTES, what)
                return (
                    body,
                    resp.headers.get("Content-Type"),
                    resp.headers.get(DOCKER_CONTENT_DIGEST),
                )
            finally:
                resp.release()

        body, content_type, header_digest = await self._requests.retrying(what, once)
        digest = manifest_digest(ref, header_digest, body, what)
        try:
            manifest = parse_manifest(body, content_type)
        except OCIError as e:
            raise InvalidManifest(f"{what}: {e}") from None
        return FetchedManifest(digest, manifest.media_type, body, manifest)

    async def head_manifest(
        self, ref: Reference, accept: Sequence[str] = MANIFEST_ACCEPT
    ) -> tuple[Digest, str, int]:
        """(digest, media type, size) of a manifest without fetching it."""
        endpoint = self.endpoint(ref.registry)
        what = f"manifest {ref}"
        path = f"/v2/{ref.repository}/manifests/{ref.reference}"
        headers = {"Accept": ", ".join(accept)}
        scopes = _pull_scope(ref.repository)

        async def once() -> tuple[str | None, str, int | None]:
            resp = await self._requests.request(
                "HEAD", endpoint, path, scopes=scopes, headers=headers, what=what
            )
            try:
                if resp.status != 200:
                    await self._requests.fail(resp, what, endpoint)
                return (
                    resp.headers.get(DOCKER_CONTENT_DIGEST),
                    mt.base_media_type(resp.headers.get("Content-Type")),
                    resp.content_length,
                )
            finally:
                resp.release()

        header_digest, media_type, size = await self._requests.retrying(what, once)
        digest: Digest | None = None
        if header_digest:
            try:
                digest = Digest.parse(header_digest.strip())
            except InvalidDigest:
                digest = None
        if ref.digest is not None:
            if digest is not None and digest != ref.digest:
                raise DigestMismatch(
                    f"{what}: registry says its digest is {digest}",
                    expected=str(ref.digest),
                    actual=str(digest),
                )
            digest = ref.digest
        if digest is None:
            raise ProtocolError(f"{what}: HEAD answer has no usable {DOCKER_CONTENT_DIGEST}")
        if size is None:
            raise ProtocolError(f"{what}: HEAD answer has no Content-Length")
        if size > MAX_MANIFEST_BYTES:
            raise ManifestTooLarge(
                f"{what}: manifest is {size} bytes, over the {MAX_MANIFEST_BYTES} byte limit"
            )
        return digest, media_type, size

    async def head_blob(self, registry: str, repository: str, digest: Digest) -> int | None:
        """The blob's size, or None if the repository does not have it."""
        validate_repository(repository)
        endpoint = self.endpoint(registry)
        what = f"blob {digest} in {endpoint.registry}/{repository}"
        return await self._head_blob(endpoint, repository, digest, _pull_scope(repository), what)

    async def _head_blob(
        self,
        endpoint: Endpoint,
        repository: str,
        digest: Digest,
        scopes: tuple[str, ...],
        what: str,
    ) -> int | None:
        path = f"/v2/{repository}/blobs/{digest}"

        async def once() -> tuple[bool, int | None]:
            resp = await self._requests.request(
                "HEAD", endpoint, path, scopes=scopes, headers={}, what=what
            )
            try:
                foreign = url_origin(resp.url) != endpoint.origin
                if resp.status == 200:
                    return True, resp.content_length
                if resp.status == 404 and not foreign:
                    return False, None
                if foreign and resp.status in (400, 401, 403, 405):
                    # Storage behind a redirect that only signed GET: the blob exists.
                    return True, None
                await self._requests.fail(resp, what, endpoint)
            finally:
                resp.release()

        exists, size = await self._requests.retrying(what, once)
        if not exists:
            return None
        if size is None:
            size = await self._blob_size_by_range(endpoint, path, scopes, what)
        return size

    # -- push ------------------------------------------------------------------------------

    async def push_blob(
        self,
        registry: str,
        repository: str,
        digest: Digest,
        size: int,
        reader: BlobReader,
        *,
        name: str | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> BlobPush:
        """Put a blob into ``repository`` unless a HEAD finds it there already.

        The bytes come from ``reader(offset, length)`` in PATCH chunks of
        ``options.push_chunk_size``; a broken chunk is resumed where the registry says it
        stopped (or the session started afresh), then ``PUT ?digest=`` lets the registry check
        the digest. ``on_progress(position)`` follows the bytes of the blob sent or held (it may
        go back after a failure). ``name`` (a file name) goes into error messages.
        """
        validate_repository(repository)
        if size < 0:
            raise ValueError(f"invalid blob size {size}")
        endpoint = self.endpoint(registry)
        label = f" ({name})" if name else ""
        what = f"push of blob {digest}{label} to {endpoint.registry}/{repository}"
        scopes = push_scope(repository)

        async def exists() -> bool:
            return await self._head_blob(endpoint, repository, digest, scopes, what) is not None

        if await exists():
            if on_progress is not None:
                on_progress(size)
            return BlobPush(digest, size, existed=True)

        async def request(
            method: str, url: URL, *, headers: dict[str, str], content: BodyFactory | None = None
        ) -> Response:
            return await self._requests.request(
                method,
                endpoint,
                url.path,
                scopes=scopes,
                headers=headers,
                what=what,
                url=url,
                content=content,
            )

        def error_for(resp: Response, code: str | None, message: str | None) -> Exception:
            return answers.error_for(resp, code, message, what, endpoint, self._requests.clock())

        upload = BlobUpload(
            request,
            error_for,
            self._requests.attempts(what),
            uploads_url=URL(endpoint.url(f"/v2/{repository}/blobs/uploads/"), encoded=True),
            digest=digest,
            size=size,
            reader=reader,
            chunk_size=self.options.push_chunk_size,
            exists=exists,
            on_progress=on_progress,
        )
        return await upload.run()

    async def put_manifest(self, ref: Reference, body: bytes, media_type: str) -> Digest:
        """PUT a manifest under ``ref``'s tag (its blobs must be in the repository first);
        return its digest, checked against what the registry says it stored."""
        endpoint = self.endpoint(ref.registry)
        what = f"manifest {ref}"
        if len(body) > MAX_MANIFEST_BYTES:
            raise ManifestTooLarge(
                f"{what}: manifest is {len(body)} bytes, over the {MAX_MANIFEST_BYTES} byte limit"
            )
        digest = Digest.of(body)
        if ref.digest is not None and ref.digest != digest:
            raise DigestMismatch(
                f"{what}: the manifest hashes to {digest}", expected=str(ref.digest)
            )
        path = f"/v2/{ref.repository}/manifests/{ref.reference}"
        headers = {"Content-Type": media_type, "Content-Length": str(len(body))}
        scopes = push_scope(ref.repository)

        async def once() -> str | None:
            resp = await self._requests.request(
                "PUT",
                endpoint,
                path,
                scopes=scopes,
                headers=headers,
                what=what,
                content=lambda: body,
            )
            try:
                if resp.status not in (200, 201, 202, 204):
                    await self._requests.fail(resp, what, endpoint)
                return resp.headers.get(DOCKER_CONTENT_DIGEST)
            finally:
                resp.release()

        said = await self._requests.retrying(what, once)
        if said and said.strip() != str(digest):
            raise DigestMismatch(
                f"{what}: the registry stored the manifest as {said.strip()[:80]}, not {digest}",
                expected=str(digest),
                actual=said.strip()[:80],
            )
        return digest

    async def blob_stream(
        self,
        registry: str,
        repository: str,
        digest: Digest,
        *,
        size: int | None = None,
        offset: int = 0,
        verify: bool = True,
        on_resume: Callable[[int], None] | None = None,
    ) -> AsyncIterator[bytes]:
        """Yield the blob's bytes from ``offset`` on, resuming with Range after failures.

        With ``verify`` and ``offset == 0`` the bytes are hashed as they pass and
        :class:`DigestMismatch` is raised after the last chunk. More bytes than ``size`` raise
        :class:`SizeMismatch` at once. ``on_resume(position)`` is called before each resume.
        """
        validate_repository(repository)
        if offset < 0 or (size is not None and (size < 0 or offset > size)):
            raise ValueError(f"invalid offset {offset} for a blob of size {size}")
        endpoint = self.endpoint(registry)
        what = f"blob {digest} in {endpoint.registry}/{repository}"
        path = f"/v2/{repository}/blobs/{digest}"
        scopes = _pull_scope(repository)
        hasher = digest.hasher() if verify and offset == 0 else None
        chunk_size = self.options.chunk_size
        attempts = self._requests.attempts(what)

        pos = offset
        total = size  # full length of the blob, once known
        while total is None or pos < total:
            resp: Response | None = None
            complete = False
            progressed = False
            try:
                headers = {"Accept-Encoding": "identity"}
                if pos > 0:
                    headers["Range"] = range_header(pos)
                resp = await self._requests.request(
                    "GET", endpoint, path, scopes=scopes, headers=headers, what=what
                )
                skip, total, done = await self._check_blob_answer(resp, endpoint, pos, total, what)
                if done:
                    complete = True
                    break
                async for chunk in resp.chunks(chunk_size):
                    if skip:
                        if len(chunk) <= skip:
                            skip -= len(chunk)
                            continue
                        chunk = chunk[skip:]
                        skip = 0
                    pos += len(chunk)
                    if total is not None and pos > total:
                        raise SizeMismatch(
                            f"{what}: registry sent more than the expected {total} bytes",
                            expected=str(digest),
                        )
                    if hasher is not None:
                        hasher.update(chunk)
                    progressed = True
                    yield chunk
                if skip:
                    raise Retry(f"answer ended before the {pos} bytes we already have")
                complete = True
                if total is None or pos >= total:
                    break
                complete = False
                raise Retry(f"short read: got {pos} of {total} bytes")
            except Exception as e:
                await attempts.failed(e, progressed=progressed, where=f" at byte {pos}")
                if on_resume is not None:
                    on_resume(pos)
            finally:
                if resp is not None:
                    if complete:
                        resp.release()
                    else:
                        resp.close()
        if hasher is not None:
            actual = hasher.hexdigest()
            if actual != digest.hex:
                raise DigestMismatch(
                    f"{what}: content hashes to {digest.algorithm}:{actual}",
                    expected=str(digest),
                    actual=f"{digest.algorithm}:{actual}",
                )

    # -- blob helpers ----------------------------------------------------------------------

    async def _check_blob_answer(
        self,
        resp: Response,
        endpoint: Endpoint,
        pos: int,
        total: int | None,
        what: str,
    ) -> tuple[int, int | None, bool]:
        """(bytes to skip, total length, already done) for an answer to a blob GET at ``pos``."""
        status = resp.status
        if status in (200, 206):
            try:
                skip, total = resume_response(resp, pos, total)
            except SizeConflict as e:
                raise SizeMismatch(f"{what}: {e}") from None
            except RangeError as e:
                raise ProtocolError(f"{what}: {e}") from None
            return skip, total, False
        if status == 416:
            have = parse_unsatisfied_range(resp.headers.get("Content-Range"))
            if pos > 0 and have == pos and total in (None, pos):
                return 0, pos, True
            raise ProtocolError(f"{what}: registry refused the range from byte {pos} (416)")
        await self._requests.fail(resp, what, endpoint)

    async def _blob_size_by_range(
        self, endpoint: Endpoint, path: str, scopes: tuple[str, ...], what: str
    ) -> int | None:
        """The size of a blob whose HEAD did not say: ask for its first byte."""
        headers = {"Range": range_header(0, 0), "Accept-Encoding": "identity"}

        async def once() -> int | None:
            resp = await self._requests.request(
                "GET", endpoint, path, scopes=scopes, headers=headers, what=what
            )
            try:
                if resp.status == 206:
                    try:
                        return parse_content_range(resp.headers.get("Content-Range")).total
                    except RangeError:
                        return None
                if resp.status == 200:
                    return resp.content_length
                await self._requests.fail(resp, what, endpoint)
            finally:
                resp.release()

        return await self._requests.retrying(what, once)


__all__ = ["MANIFEST_ACCEPT", "ClientOptions", "FetchedManifest", "RegistryClient"]
