"""What an unexpected answer from a registry or token server means, as an error to raise.

:func:`fail` raises :class:`~.retry.Retry` for what a later attempt may fix (5xx, 429, storage
refusing an expired pre-signed URL) and the matching :class:`RegistryError` otherwise;
:func:`denied` words a refused authentication, with a hint when no credentials were given.
"""

from __future__ import annotations

from typing import NoReturn

from warmstart.registry.backoff import is_retryable_status, parse_retry_after
from warmstart.registry.credentials import Credentials
from warmstart.registry.endpoints import Endpoint
from warmstart.registry.errors import AuthError, NotFound, RegistryError, parse_error_body
from warmstart.registry.retry import Retry
from warmstart.registry.sending import BODY_ERRORS, MAX_ERROR_BODY, read_at_most, url_origin
from warmstart.registry.transport import Response


def fmt(code: str | None, message: str | None) -> str:
    parts = [p for p in (code, message) if p]
    return (" " + ": ".join(parts)) if parts else ""


async def error_details(resp: Response) -> tuple[str | None, str | None]:
    """(code, message) of the answer's error body, if it has a readable one."""
    if resp.method == "HEAD":
        return None, None
    try:
        body = await read_at_most(resp, MAX_ERROR_BODY)
    except BODY_ERRORS:
        return None, None
    return parse_error_body(body)


def retry_after(resp: Response, now: float) -> float | None:
    return parse_retry_after(resp.headers.get("Retry-After"), now)


def hint(creds: Credentials | None, registry: str) -> str:
    if creds is None:
        return (
            f"; no credentials for {registry}: pass credentials "
            f"(username/password) or run 'docker login {registry}'"
        )
    return ""


def denied(
    creds: Credentials | None,
    endpoint: Endpoint,
    what: str,
    status: int,
    code: str | None,
    message: str | None,
    *,
    where: str | None = None,
) -> AuthError:
    who = where or endpoint.registry
    if creds is None:
        text = f"{what}: {who} requires authentication ({status}{fmt(code, message)})"
        return AuthError(
            text + hint(creds, endpoint.registry), upstream_status=status, upstream_code=code
        )
    user = creds.username or "identity token"
    return AuthError(
        f"{what}: {who} denied access to {user} ({status}{fmt(code, message)})",
        upstream_status=status,
        upstream_code=code,
    )


async def fail(resp: Response, what: str, endpoint: Endpoint | None, now: float) -> NoReturn:
    """Raise the error an unexpected answer stands for (:class:`Retry` if retryable)."""
    code, message = await error_details(resp)
    raise error_for(resp, code, message, what, endpoint, now)


def error_for(
    resp: Response,
    code: str | None,
    message: str | None,
    what: str,
    endpoint: Endpoint | None,
    now: float,
) -> Exception:
    """The error an unexpected answer stands for, its error body already read as (code,
    message): :class:`Retry` if retryable."""
    status = resp.status
    detail = fmt(code, message)
    if is_retryable_status(status) or code == "TOOMANYREQUESTS":
        return Retry(f"registry answered {status}{detail}", retry_after=retry_after(resp, now))
    host = resp.url.host or "?"
    if endpoint is not None and url_origin(resp.url) != endpoint.origin:
        if status in (401, 403):
            # Storage behind a redirect refusing an (expired?) pre-signed URL: asking the
            # registry again gets a fresh one.
            return Retry(f"storage at {host} answered {status}{detail}")
    if code in ("UNAUTHORIZED", "DENIED") or status in (401, 403):
        return AuthError(
            f"{what}: access denied ({status}{detail})", upstream_status=status, upstream_code=code
        )
    if status == 404 or (code is not None and code.endswith("_UNKNOWN")):
        return NotFound(
            f"{what}: not found ({status}{detail})", upstream_status=status, upstream_code=code
        )
    return RegistryError(
        f"{what}: {host} answered {status}{detail}", upstream_status=status, upstream_code=code
    )


__all__ = ["denied", "error_details", "error_for", "fail", "fmt", "hint", "retry_after"]
