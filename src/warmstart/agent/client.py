"""The one client of a node agent's control API (``warmstart.agent.api`` is the schema).

``warmstart prewarm``, ``warmstart serve`` (pre-warm ahead, tiers from ``/status``) and the demo
talk to agents only through :class:`AgentClient`. It sends the cluster's peer token (when there
is one) on every call, and turns every way a call can fail into an :class:`AgentError` whose
message is one line: the agent is unreachable or too slow, it answered an error (its OCI error
message), or it answered something that does not fit the schema.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Self, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from warmstart.agent.api import (
    Health,
    PeersRequest,
    PeersResponse,
    PrewarmRequest,
    PrewarmResponse,
    StatusResponse,
    UnpinRequest,
    UnpinResponse,
    describe,
    error_code,
    error_message,
)
from warmstart.fetch.interfaces import PEER_TOKEN_HEADER

DEFAULT_TIMEOUT = 60.0
CONNECT_TIMEOUT = 10.0

A = TypeVar("A", bound=BaseModel)


class AgentError(Exception):
    """A call that did not get the answer it asked for; ``str()`` is one line."""

    def __init__(self, agent: str, message: str) -> None:
        super().__init__(message)
        self.agent = agent


class AgentUnreachable(AgentError):
    """No answer: connection refused or reset, name not resolved, or timed out."""


class AgentRefused(AgentError):
    """An error answer (status >= 300): ``status`` and the OCI error ``code``, if any."""

    def __init__(self, agent: str, message: str, status: int, code: str | None = None) -> None:
        super().__init__(agent, message)
        self.status = status
        self.code = code


class AgentBadAnswer(AgentError):
    """A success status whose body is not the schema's answer."""


def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds, sock_connect=min(CONNECT_TIMEOUT, seconds))


class AgentClient:
    """One agent at ``url`` (``http://host:port``).

    ``session``: share one among many clients (the caller closes it); without one the client
    opens its own on first use and :meth:`close` (or ``async with``) closes it. ``timeout``:
    seconds per call unless a call gives ``time_limit``; ``None`` keeps the given session's own.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token or None
        self._session = session
        self._own_session = session is None
        self._timeout = timeout

    def __repr__(self) -> str:  # never the token
        return f"AgentClient({self.url!r}, token={'set' if self._token else None})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- the routes -----------------------------------------------------------------------------

    async def prewarm(
        self,
        request: PrewarmRequest,
        *,
        authorization: str | None = None,
        time_limit: float | None = None,
    ) -> PrewarmResponse:
        """``POST /prewarm``. ``authorization``: the user's registry credentials (an
        ``Authorization`` header value) for a private image; they are checked as on a pull."""
        headers = {"Authorization": authorization} if authorization else {}
        return await self._json(
            "POST",
            "/prewarm",
            PrewarmResponse,
            body=request.to_json(),
            headers=headers,
            time_limit=time_limit,
        )

    async def unpin(
        self, reference: str, *, holder: str | None = None, time_limit: float | None = None
    ) -> UnpinResponse:
        """``POST /unpin``: release the pin a ``pin=True`` pre-warm of ``reference`` took (by
        ``holder``, or the one taken without a holder)."""
        fields: dict[str, str] = {"reference": reference}
        if holder is not None:
            fields["holder"] = holder
        body = UnpinRequest.model_validate(fields).to_json()
        return await self._json("POST", "/unpin", UnpinResponse, body=body, time_limit=time_limit)

    async def status(self, *, time_limit: float | None = None) -> StatusResponse:
        """``GET /status``: the node's store and the tier of each image."""
        return await self._json("GET", "/status", StatusResponse, time_limit=time_limit)

    async def peers(self, *, time_limit: float | None = None) -> PeersResponse:
        """``GET /peers``."""
        return await self._json("GET", "/peers", PeersResponse, time_limit=time_limit)

    async def put_peers(
        self, peers: Sequence[str], *, time_limit: float | None = None
    ) -> PeersResponse:
        """``PUT /peers``: replace the agent's peer list (the peer token is needed when the
        cluster has one)."""
        body = PeersRequest(peers=list(peers)).to_json()
        return await self._json("PUT", "/peers", PeersResponse, body=body, time_limit=time_limit)

    async def healthz(self, *, time_limit: float | None = None) -> Health:
        """``GET /healthz``: ``ok`` False (with the reason) on 503; :class:`AgentError` only when
        there is no answer or an unexpected status."""
        status, body = await self._call("GET", "/healthz", time_limit=time_limit)
        if status not in (200, 503):
            raise AgentRefused(self.url, error_message(status, body), status, error_code(body))
        return Health.from_answer(status, body.decode("utf-8", "replace"))

    # -- plumbing -------------------------------------------------------------------------------

    def _session_for_call(self) -> aiohttp.ClientSession:
        if self._session is None:
            seconds = self._timeout if self._timeout is not None else DEFAULT_TIMEOUT
            self._session = aiohttp.ClientSession(timeout=_timeout(seconds))
        return self._session

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        time_limit: float | None = None,
    ) -> tuple[int, bytes]:
        sent = dict(headers or {})
        if self._token:
            sent[PEER_TOKEN_HEADER] = self._token
        kwargs: dict[str, Any] = {"headers": sent}
        if body is not None:
            kwargs["data"] = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        seconds = time_limit if time_limit is not None else self._timeout
        if seconds is not None:
            kwargs["timeout"] = _timeout(seconds)
        try:
            async with self._session_for_call().request(method, self.url + path, **kwargs) as r:
                return r.status, await r.read()
        except TimeoutError:
            raise AgentUnreachable(self.url, "timed out") from None
        except aiohttp.ClientError as e:
            reason = " ".join(str(e).split()) or type(e).__name__
            raise AgentUnreachable(self.url, f"cannot reach the agent: {reason}") from None

    async def _json(
        self,
        method: str,
        path: str,
        model: type[A],
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        time_limit: float | None = None,
    ) -> A:
        status, raw = await self._call(
            method, path, body=body, headers=headers, time_limit=time_limit
        )
        if status >= 300:
            raise AgentRefused(self.url, error_message(status, raw), status, error_code(raw))
        try:
            doc = json.loads(raw)
        except ValueError:
            raise AgentBadAnswer(self.url, "the agent answered with no JSON") from None
        try:
            return model.model_validate(doc)
        except ValidationError as e:
            raise AgentBadAnswer(
                self.url, f"the agent's answer to {method} {path} does not fit: {describe(e)}"
            ) from None


__all__ = [
    "AgentBadAnswer",
    "AgentClient",
    "AgentError",
    "AgentRefused",
    "AgentUnreachable",
]
