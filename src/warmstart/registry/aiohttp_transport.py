"""The :class:`~warmstart.registry.transport.Transport` over an :class:`aiohttp.ClientSession`.

Also what aiohttp's errors mean to the client: which a new attempt may fix
(:func:`is_retryable_error`) and how the others read as a :class:`RegistryError`
(:func:`wrap_error`).
"""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp

from warmstart.oci.errors import OCIError
from warmstart.registry.backoff import RETRYABLE_BUILTIN_ERRORS
from warmstart.registry.errors import RegistryError
from warmstart.registry.retry import describe
from warmstart.registry.transport import Request, Response

# Failures of one attempt that a new attempt may fix. TLS failures are OSErrors too, but retrying
# a bad certificate only delays the error, so they are excluded in :func:`is_retryable_error`.
_RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    *RETRYABLE_BUILTIN_ERRORS,
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
)


def raw_session(connector: aiohttp.BaseConnector, **options: Any) -> aiohttp.ClientSession:
    """A session for registry traffic: bytes as sent (no decompression), no cookies, no proxy
    settings from the environment. ``options`` go to the session (``read_bufsize``: 1 MiB
    unless given)."""
    options.setdefault("read_bufsize", 1 << 20)
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        **options,
    )


def is_retryable_error(exc: BaseException) -> bool:
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return False
    return isinstance(exc, _RETRYABLE_ERRORS)


def wrap_error(exc: BaseException, what: str) -> BaseException:
    """Non-retryable errors as :class:`RegistryError` (ours pass through unchanged)."""
    if isinstance(exc, RegistryError):
        return exc
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        text = describe(exc)
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            hint = " (pass ca_file with the registry's CA?)"
        elif "WRONG_VERSION_NUMBER" in text:
            hint = " (the server does not speak TLS: mark it insecure?)"
        else:
            hint = ""
        return RegistryError(f"{what}: TLS failure: {text}{hint}")
    if isinstance(exc, OCIError):
        return exc
    if isinstance(exc, aiohttp.ClientError):
        return RegistryError(f"{what}: {describe(exc)}")
    return exc


class AiohttpTransport:
    """Requests through an aiohttp session: its own (created on first use) or the caller's."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession | None = None,
        ca_file: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        read_bufsize: int = 1 << 16,
    ) -> None:
        self._session = session
        self._owns_session = session is None
        self._ssl: ssl.SSLContext | bool = True
        if ca_file:
            ctx = ssl.create_default_context()
            ctx.load_verify_locations(cafile=ca_file)
            self._ssl = ctx
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._read_bufsize = read_bufsize

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit=64)
            self._session = raw_session(
                connector, timeout=self._timeout, read_bufsize=self._read_bufsize
            )
        return self._session

    def open(self) -> None:
        self._get_session()

    async def handle_request(self, request: Request) -> Response:
        resp = await self._get_session().request(
            request.method,
            request.url,
            headers=dict(request.headers),
            data=dict(request.form) if request.form is not None else request.content,
            allow_redirects=False,
            timeout=self._timeout,
            ssl=self._ssl,
            auto_decompress=False,
            read_bufsize=self._read_bufsize,
        )
        return Response(
            resp.status,
            resp.headers,
            url=resp.url,
            method=resp.method,
            read=resp.content.read,
            release=resp.release,
            close=resp.close,
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._owns_session and not session.closed:
            await session.close()


__all__ = ["AiohttpTransport", "is_retryable_error", "raw_session", "wrap_error"]
