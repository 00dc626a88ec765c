"""Getting a Bearer token from a registry's token server (the distribution token spec).

With an identity token (``docker login`` to a registry that issues refresh tokens) the OAuth2
``POST`` comes first, falling back to the plain ``GET`` (Basic credentials, ``account``) where
the server has no OAuth2 endpoint. Credentials never go to a plain HTTP realm unless it is
marked insecure; failures are retried by the client's :class:`~.retry.RequestRetries`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from yarl import URL

from warmstart.registry import answers
from warmstart.registry.backoff import is_retryable_status
from warmstart.registry.challenge import Challenge
from warmstart.registry.credentials import Credentials
from warmstart.registry.endpoints import Endpoint, may_send_credentials
from warmstart.registry.errors import AuthError, InsecureCredentials, ProtocolError
from warmstart.registry.retry import RequestRetries, Retry
from warmstart.registry.sending import read_at_most, url_origin
from warmstart.registry.tokens import (
    MAX_TOKEN_RESPONSE_BYTES,
    TokenError,
    TokenResponse,
    parse_token_response,
)
from warmstart.registry.transport import Response


class Send(Protocol):
    def __call__(
        self,
        method: str,
        url: URL,
        headers: dict[str, str],
        authorization: str | None,
        auth_origin: tuple[str, str, int],
        *,
        data: dict[str, str] | None = None,
    ) -> Awaitable[Response]: ...


async def fetch_token(
    send: Send,
    attempts: RequestRetries,
    *,
    endpoint: Endpoint,
    challenge: Challenge,
    scopes: tuple[str, ...],
    creds: Credentials | None,
    insecure: frozenset[str],
    client_id: str,
    clock: Callable[[], float],
) -> TokenResponse:
    """A token for ``scopes`` from ``challenge.realm``, for a request on ``attempts.what``."""
    what = attempts.what
    realm = challenge.realm or ""
    realm_url = URL(realm)
    if realm_url.scheme not in ("http", "https") or not realm_url.host:
        raise AuthError(f"{what}: unusable token realm {realm[:100]!r}")
    if creds is not None and not creds.is_empty:
        if not may_send_credentials(realm, insecure):
            raise InsecureCredentials(
                f"{what}: refusing to send credentials for {endpoint.registry} over plain "
                f"HTTP to the token server {realm_url.host}; use https or mark it insecure"
            )
    auth_origin = url_origin(realm_url)
    where = f"token server {realm_url.host}"

    async def once() -> TokenResponse:
        if creds is not None and creds.identity_token:
            resp = await _token_post(
                send, realm_url, challenge, scopes, creds, auth_origin, client_id
            )
            if resp.status in (404, 405):
                resp.close()  # no OAuth2 endpoint: fall back to the plain GET
                resp = await _token_get(send, realm_url, challenge, scopes, creds, auth_origin)
        else:
            resp = await _token_get(send, realm_url, challenge, scopes, creds, auth_origin)
        try:
            if resp.status == 200:
                body = await read_at_most(resp, MAX_TOKEN_RESPONSE_BYTES + 1)
                if len(body) > MAX_TOKEN_RESPONSE_BYTES:
                    raise ProtocolError(f"{what}: {where} answered with an oversized token")
                try:
                    return parse_token_response(body)
                except TokenError as e:
                    raise ProtocolError(f"{what}: {where}: {e}") from None
            code, message = await answers.error_details(resp)
            if is_retryable_status(resp.status):
                raise Retry(
                    f"{where} answered {resp.status}",
                    retry_after=answers.retry_after(resp, clock()),
                )
            if resp.status in (401, 403):
                raise answers.denied(creds, endpoint, what, resp.status, code, message, where=where)
            raise AuthError(
                f"{what}: {where} answered {resp.status}"
                + (f" ({code or ''} {message or ''})".rstrip() if code or message else ""),
                upstream_status=resp.status,
                upstream_code=code,
            )
        finally:
            resp.release()

    return await attempts.run(once)


async def _token_get(
    send: Send,
    realm: URL,
    challenge: Challenge,
    scopes: tuple[str, ...],
    creds: Credentials | None,
    auth_origin: tuple[str, str, int],
) -> Response:
    query: list[tuple[str, str]] = list(realm.query.items())
    if challenge.service:
        query.append(("service", challenge.service))
    query.extend(("scope", s) for s in scopes)
    authorization = None
    if creds is not None and creds.has_basic:
        query.append(("account", creds.username or ""))
        authorization = creds.basic_header()
    url = realm.with_query(query)
    return await send("GET", url, {"Accept": "application/json"}, authorization, auth_origin)


async def _token_post(
    send: Send,
    realm: URL,
    challenge: Challenge,
    scopes: tuple[str, ...],
    creds: Credentials,
    auth_origin: tuple[str, str, int],
    client_id: str,
) -> Response:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": creds.identity_token or "",
        "client_id": client_id,
    }
    if challenge.service:
        form["service"] = challenge.service
    if scopes:
        form["scope"] = " ".join(scopes)
    return await send("POST", realm, {"Accept": "application/json"}, None, auth_origin, data=form)


__all__ = ["Send", "fetch_token"]
