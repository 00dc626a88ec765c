"""The upstream registries as one :class:`~warmstart.fetch.source.Source` (and the
:class:`~warmstart.fetch.source.AccessChecker` that asks them who may pull).

One :class:`RegistryClient` per configured registry, with that registry's URL, CA and
credentials, all sharing one aiohttp session. Registry errors become Source errors here, so the
tiered fetcher never sees a registry exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace

import aiohttp

from warmstart.errors import retry_after_of
from warmstart.fetch.config import UpstreamSettings
from warmstart.fetch.source import (
    Access,
    AccessQuery,
    BlobRequest,
    OpenedBlob,
    Probe,
    SourceCorrupt,
    SourceDenied,
    SourceError,
    SourceManifest,
    SourceNotFound,
    SourceNotManifest,
    SourceUnavailable,
    opened,
)
from warmstart.oci import MAX_MANIFEST_BYTES, Digest, InvalidManifest, OCIError, Reference
from warmstart.oci import mediatypes as mt
from warmstart.oci.manifest import is_manifest_like, parse_manifest
from warmstart.registry import (
    AuthError,
    ClientOptions,
    CredentialStore,
    DigestMismatch,
    NotFound,
    RegistryClient,
    RegistryError,
    UpstreamUnavailable,
)
from warmstart.registry.aiohttp_transport import raw_session
from warmstart.registry.endpoints import canonical_registry

PROBE_ATTEMPTS = 2  # access checks fail fast: a client is waiting


def source_error(error: BaseException, what: str) -> SourceError:
    """What an exception of the registry client means to the fetcher (which source kind of
    failure: try the next source, or stop); the registry's ``retry_after`` is kept."""
    if isinstance(error, SourceError):
        return error
    text = str(error) or type(error).__name__
    if isinstance(error, NotFound):
        return SourceNotFound(text)
    if isinstance(error, AuthError):
        return SourceDenied(text)
    if isinstance(error, InvalidManifest):  # too large, not JSON, not a manifest type
        return SourceNotManifest(text)
    if isinstance(error, DigestMismatch | OCIError | ValueError):
        return SourceCorrupt(text)
    if not isinstance(error, RegistryError | aiohttp.ClientError | OSError | TimeoutError):
        text = f"unexpected {type(error).__name__}: {text}"
    return SourceUnavailable(f"{what}: {text}", retry_after=retry_after_of(error))


@dataclass
class _Registry:
    host: str  # what the registry client is given (host[:port] of the URL)
    options: ClientOptions  # with the agent's credentials
    client: RegistryClient
    anonymous: RegistryClient  # for "does this repository need credentials?"


class UpstreamSource:
    kind = "upstream"
    name = "upstream"

    def __init__(
        self,
        upstreams: Mapping[str, UpstreamSettings],
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_attempts: int = 6,
        user_agent: str = "warmstart-agent/0.1",
    ) -> None:
        self._settings = {canonical_registry(k): v for k, v in upstreams.items()}
        self._base = ClientOptions(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_attempts=max_attempts,
            user_agent=user_agent,
        )
        self._session: aiohttp.ClientSession | None = None
        self._registries: dict[str, _Registry] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = raw_session(aiohttp.TCPConnector(limit=128))
        return self._session

    async def aclose(self) -> None:
        registries, self._registries = list(self._registries.values()), {}
        for reg in registries:
            await reg.client.close()
            await reg.anonymous.close()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _registry(self, registry: str) -> _Registry:
        name = canonical_registry(registry)
        reg = self._registries.get(name)
        if reg is not None:
            return reg
        settings = self._settings.get(name)
        if settings is None:
            raise SourceDenied(f"registry {name} is not configured")
        host = settings.host(name)
        credentials = CredentialStore()
        if settings.credentials is not None:
            credentials.add(host, settings.credentials)
        options = replace(
            self._base,
            insecure=frozenset({host}) if settings.is_plain_http() else frozenset(),
            ca_file=settings.ca_file,
            credentials=credentials,
        )
        session = self._get_session()
        anonymous = replace(options, credentials=CredentialStore(), max_attempts=PROBE_ATTEMPTS)
        reg = _Registry(
            host,
            options,
            RegistryClient(options, session=session),
            RegistryClient(anonymous, session=session),
        )
        self._registries[name] = reg
        return reg

    # -- Source ----------------------------------------------------------------------------

    async def stat_blob(self, registry: str, repository: str, digest: Digest) -> int:
        reg = self._registry(registry)
        what = f"blob {digest} in {registry}/{repository}"
        try:
            size = await reg.client.head_blob(reg.host, repository, digest)
        except Exception as e:
            raise source_error(e, what) from e
        if size is None:
            raise SourceNotFound(f"{what}: not found")
        return size

    async def open_blob(self, want: BlobRequest) -> OpenedBlob:
        registry, repository, digest = want.registry, want.repository, want.digest
        offset, size = want.offset, want.size
        reg = self._registry(registry)
        what = f"blob {digest} in {registry}/{repository}"
        if size is None:
            size = await self.stat_blob(registry, repository, digest)
        if offset > size:
            raise SourceCorrupt(f"{what}: offset {offset} is past its size {size}")
        if offset == size:
            return OpenedBlob(size, _nothing())
        # The store hashes what it writes: no second hash pass here.
        stream = reg.client.blob_stream(
            reg.host, repository, digest, size=size, offset=offset, verify=False
        )
        return OpenedBlob(size, await opened(_mapped(stream, what)))

    async def get_manifest(
        self, registry: str, repository: str, reference: str, accept: Sequence[str]
    ) -> SourceManifest:
        reg = self._registry(registry)
        what = f"manifest {registry}/{repository}:{reference}"
        try:
            ref = _reference(reg.host, repository, reference)
            got = await reg.client.get_manifest(ref, tuple(accept) or mt.MANIFEST_ACCEPT)
        except Exception as e:
            if ref.digest is None or not _server_failed(e):
                raise source_error(e, what) from e
            # distribution answers 500 for a digest that is a layer or config: read the same
            # content-addressed bytes from the blob route and judge them ourselves.
            return await self._manifest_as_blob(reg, repository, ref.digest, e, what)
        return SourceManifest(got.digest, got.media_type, got.body)

    async def _manifest_as_blob(
        self,
        reg: _Registry,
        repository: str,
        digest: Digest,
        failure: BaseException,
        what: str,
    ) -> SourceManifest:
        """The manifest ``digest`` read through ``/blobs/`` after ``/manifests/`` failed with a
        server error: :class:`SourceNotManifest` if those bytes are no manifest, the original
        failure if the blob route does not have them either."""
        try:
            size = await reg.client.head_blob(reg.host, repository, digest)
        except Exception as e:
            raise source_error(failure, what) from e
        if size is None:
            raise source_error(failure, what) from failure
        if size > MAX_MANIFEST_BYTES:
            raise SourceNotManifest(
                f"{what}: {digest} is a blob of {size} bytes, not a manifest "
                f"(the limit is {MAX_MANIFEST_BYTES})"
            )
        chunks: list[bytes] = []
        try:
            async for chunk in reg.client.blob_stream(reg.host, repository, digest, size=size):
                chunks.append(chunk)
        except Exception as e:
            raise source_error(e, what) from e
        body = b"".join(chunks)
        if not is_manifest_like(body):
            raise SourceNotManifest(f"{what}: {digest} is a blob of {size} bytes, not a manifest")
        try:
            media_type = parse_manifest(body).media_type
        except OCIError as e:
            raise SourceNotManifest(f"{what}: {e}") from None
        return SourceManifest(digest, media_type, body)

    # -- AccessChecker -----------------------------------------------------------------------

    async def check_access(self, query: AccessQuery) -> Access:
        reg, repository, probe = self._registry(query.registry), query.repository, query.probe
        if query.as_agent:
            return await self._ask(reg, repository, probe, reg.client)
        if query.credentials is None:
            return await self._ask(reg, repository, probe, reg.anonymous)
        store = CredentialStore()
        store.add(reg.host, query.credentials)
        options = replace(reg.options, credentials=store, max_attempts=PROBE_ATTEMPTS)
        client = RegistryClient(options, session=self._get_session())
        try:
            return await self._ask(reg, repository, probe, client)
        finally:
            await client.close()

    async def _ask(
        self, reg: _Registry, repository: str, probe: Probe, client: RegistryClient
    ) -> Access:
        what = f"access to {reg.host}/{repository}"
        try:
            if probe.kind == "blob":
                size = await client.head_blob(reg.host, repository, Digest.parse(probe.reference))
                return Access.PRESENT if size is not None else Access.ABSENT
            await client.head_manifest(_reference(reg.host, repository, probe.reference))
            return Access.PRESENT
        except NotFound:
            return Access.ABSENT
        except AuthError:
            return Access.DENIED
        except InvalidManifest:  # e.g. over the size limit: no manifest is there
            return Access.ABSENT
        except Exception as e:
            if not (probe.kind == "manifest" and probe.is_digest and _server_failed(e)):
                raise source_error(e, what) from e
            failure: BaseException = e
        # distribution answers 500 for a manifest digest that is a layer: the blob route says
        # whether the digest is in the repository (and too big to be a manifest).
        try:
            size = await client.head_blob(reg.host, repository, Digest.parse(probe.reference))
        except AuthError:
            return Access.DENIED
        except Exception as e:
            raise source_error(failure, what) from e
        if size is None:
            raise source_error(failure, what) from failure
        return Access.ABSENT if size > MAX_MANIFEST_BYTES else Access.PRESENT


def _server_failed(error: BaseException) -> bool:
    """The registry answered with a server error (5xx, after retries), rather than answering
    no, or not being reachable at all (then asking it something else is no use)."""
    if isinstance(error, UpstreamUnavailable):
        return not isinstance(error.__cause__, aiohttp.ClientConnectionError | OSError)
    status = error.upstream_status if type(error) is RegistryError else None
    return status is not None and status >= 500


def _reference(host: str, repository: str, reference: str) -> Reference:
    if ":" in reference:
        return Reference(host, repository, digest=Digest.parse(reference))
    return Reference(host, repository, tag=reference)


async def _mapped(chunks: AsyncIterator[bytes], what: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield chunk
    except Exception as e:
        raise source_error(e, what) from e
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


__all__ = ["UpstreamSource", "source_error"]
