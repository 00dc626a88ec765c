"""The registry client's requests: authorization, redirects and retries, below the
Distribution API.

:class:`AuthorizedRequests` sends one request through a :class:`~.transport.Transport`
(redirects followed by hand in :mod:`.sending`, so that ``Authorization`` never leaves the
registry's origin), answers a 401 once as :mod:`.auth` decides (a token from the cache or the
token server, or Basic credentials), and runs whole requests again with
:class:`~.retry.RequestRetries`. It holds the auth state of one client: credentials, cached
tokens and the last challenge per registry. ``sleep``, ``random`` and ``clock`` are seams for
tests.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar

from yarl import URL

from warmstart.registry import answers, auth
from warmstart.registry.aiohttp_transport import is_retryable_error, wrap_error
from warmstart.registry.backoff import BackoffPolicy
from warmstart.registry.challenge import Challenge
from warmstart.registry.credentials import CredentialStore
from warmstart.registry.endpoints import Endpoint
from warmstart.registry.errors import AuthError, RegistryError
from warmstart.registry.retry import RequestRetries
from warmstart.registry.sending import BodyFactory, send, url_origin
from warmstart.registry.token_fetch import fetch_token
from warmstart.registry.tokens import TokenCache, TokenKey, TokenResponse
from warmstart.registry.transport import Response, Transport

T = TypeVar("T")


@dataclass(eq=False)
class AuthorizedRequests:
    """Requests to registries on behalf of one client, with its auth state."""

    transport: Transport
    policy: BackoffPolicy
    credentials: CredentialStore
    insecure: frozenset[str]
    user_agent: str
    closed: bool = False
    tokens: TokenCache = field(default_factory=TokenCache)
    _challenges: dict[str, Challenge] = field(init=False, default_factory=dict)
    _token_locks: dict[TokenKey, asyncio.Lock] = field(init=False, default_factory=dict)
    # Seams for tests: how to wait, where jitter comes from, what time it is.
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep
    random: Callable[[], float] = field(default_factory=lambda: random.Random().random)
    clock: Callable[[], float] = time.time

    def attempts(self, what: str) -> RequestRetries:
        return RequestRetries(
            what,
            self.policy,
            sleep=self.sleep,
            rand=self.random,
            is_retryable=is_retryable_error,
            wrap=wrap_error,
        )

    async def retrying(self, what: str, once: Callable[[], Awaitable[T]]) -> T:
        return await self.attempts(what).run(once)

    async def request(
        self,
        method: str,
        endpoint: Endpoint,
        path: str,
        *,
        scopes: tuple[str, ...],
        headers: dict[str, str],
        what: str,
        url: URL | None = None,
        content: BodyFactory | None = None,
    ) -> Response:
        """One request with authorization and redirects; the caller closes the response.

        It goes to ``path`` on the endpoint, or to ``url`` (an upload's Location) when given.
        A 401 from the registry is answered once (token fetched or refreshed, or Basic
        credentials sent); a second 401 is an :class:`AuthError`. ``content()`` makes the
        request body, again for each time it is sent.
        """
        if url is None:
            url = URL(endpoint.url(path), encoded=True)
        creds = self.credentials.get(endpoint.registry)
        has_basic = creds is not None and creds.has_basic
        action = auth.before_request(
            self._challenges.get(endpoint.registry), scopes, has_basic=has_basic
        )
        sent, header = await self._act(action, endpoint, what)
        resp = await self._send(method, url, headers, header, endpoint.origin, content=content)
        if resp.status != 401 or url_origin(resp.url) != endpoint.origin:
            return resp
        www_authenticate = resp.headers.getall("WWW-Authenticate", [])
        code, message = await answers.error_details(resp)
        resp.close()
        decision = auth.on_unauthorized(www_authenticate, sent, scopes, has_basic=has_basic)
        if decision.challenge is not None:
            self._challenges[endpoint.registry] = decision.challenge
        self._forget(decision)
        if isinstance(decision.action, auth.GiveUp):
            if decision.action.no_challenge:
                raise AuthError(
                    f"{what}: {endpoint.registry} answered 401 without a usable challenge"
                    + self._hint(endpoint),
                    upstream_status=401,
                    upstream_code=code,
                )
            raise self._denied(endpoint, what, code, message)
        sent, header = await self._act(decision.action, endpoint, what)
        resp = await self._send(method, url, headers, header, endpoint.origin, content=content)
        if resp.status == 401 and url_origin(resp.url) == endpoint.origin:
            code, message = await answers.error_details(resp)
            resp.close()
            self._forget(auth.after_retry(sent))  # do not offer that token again
            raise self._denied(endpoint, what, code, message)
        return resp

    async def _act(
        self, action: auth.Action, endpoint: Endpoint, what: str
    ) -> tuple[auth.Sent, str | None]:
        """Carry out what :mod:`.auth` decided: (what is sent, the Authorization header)."""
        if isinstance(action, auth.GetToken):
            kind, token = await self._bearer_token(endpoint, action, what)
            return auth.Sent(kind, action.key, token), f"Bearer {token}"
        if isinstance(action, auth.UseBasic):
            creds = self.credentials.get(endpoint.registry)
            assert creds is not None
            return auth.Sent("basic"), creds.basic_header()
        return auth.Sent("none"), None

    def _forget(self, decision: auth.Decision) -> None:
        if decision.invalidate is not None:
            self.tokens.invalidate(*decision.invalidate)

    async def _send(
        self,
        method: str,
        url: URL,
        headers: dict[str, str],
        authorization: str | None,
        auth_origin: tuple[str, str, int],
        *,
        data: dict[str, str] | None = None,
        content: BodyFactory | None = None,
    ) -> Response:
        if self.closed:
            raise RegistryError("registry client is closed")
        return await send(
            self.transport,
            method,
            url,
            headers,
            authorization,
            auth_origin,
            user_agent=self.user_agent,
            insecure=self.insecure,
            data=data,
            content=content,
        )

    async def _bearer_token(
        self, endpoint: Endpoint, get: auth.GetToken, what: str
    ) -> tuple[auth.SentKind, str]:
        """("cached" or "fresh", token) for the scopes; one fetch at a time per key."""
        key = get.key
        token = self.tokens.get(key)
        if token is not None and token != get.stale:
            return "cached", token
        lock = self._token_locks.setdefault(key, asyncio.Lock())
        async with lock:
            token = self.tokens.get(key)
            if token is not None and token != get.stale:
                return "cached", token
            response = await self._fetch_token(endpoint, get.challenge, get.scopes, what)
            self.tokens.put(key, response)
            return "fresh", response.token

    async def _fetch_token(
        self, endpoint: Endpoint, challenge: Challenge, scopes: tuple[str, ...], what: str
    ) -> TokenResponse:
        return await fetch_token(
            self._send,
            self.attempts(what),
            endpoint=endpoint,
            challenge=challenge,
            scopes=scopes,
            creds=self.credentials.get(endpoint.registry),
            insecure=self.insecure,
            client_id=self.user_agent.split("/", 1)[0] or "warmstart",
            clock=self.clock,
        )

    # -- errors ------------------------------------------------------------------------------

    def _hint(self, endpoint: Endpoint) -> str:
        return answers.hint(self.credentials.get(endpoint.registry), endpoint.registry)

    def _denied(
        self, endpoint: Endpoint, what: str, code: str | None, message: str | None
    ) -> AuthError:
        """The error for a 401 that another token or credentials will not fix."""
        creds = self.credentials.get(endpoint.registry)
        return answers.denied(creds, endpoint, what, 401, code, message)

    async def fail(self, resp: Response, what: str, endpoint: Endpoint | None = None) -> NoReturn:
        await answers.fail(resp, what, endpoint, self.clock())


__all__ = ["AuthorizedRequests"]
