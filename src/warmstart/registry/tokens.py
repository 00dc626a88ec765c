"""Bearer tokens from a registry's token server, and their cache.

A token is cached per ``(realm, service, scope)``. It lives ``expires_in`` seconds (60 when the
server does not say, as the distribution token spec prescribes) counted from ``issued_at`` if the
server sent one, else from when we received it, minus a small safety margin so that a token is
never sent in its last seconds. The clock is injectable (wall-clock seconds, since ``issued_at`` is
a wall-clock time) so tests need no sleeping.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

DEFAULT_TOKEN_TTL = 60.0
DEFAULT_SAFETY_MARGIN = 5.0
MAX_CACHED_TOKENS = 1024
MAX_TOKEN_RESPONSE_BYTES = 1 << 20


class TokenError(ValueError):
    """A token server's answer is not a usable token response."""


class TokenKey(NamedTuple):
    realm: str
    service: str
    scope: str  # space-separated scopes, sorted; "" for none


def make_key(realm: str, service: str | None, scopes: tuple[str, ...] | list[str]) -> TokenKey:
    return TokenKey(realm, service or "", " ".join(sorted(set(scopes))))


@dataclass(frozen=True)
class TokenResponse:
    token: str
    expires_in: float | None = None
    issued_at: float | None = None  # seconds since the epoch
    refresh_token: str | None = None


def parse_rfc3339(text: object) -> float | None:
    """``2024-01-02T03:04:05.123456789Z`` -> epoch seconds; None if absent or unreadable."""
    if not isinstance(text, str) or not text or len(text) > 64:
        return None
    try:
        dt = datetime.fromisoformat(text.strip().upper())
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return dt.timestamp()


def parse_token_response(body: bytes | str | dict[str, object]) -> TokenResponse:
    """Read a token server's JSON answer (``token`` or OAuth2 ``access_token``)."""
    if isinstance(body, dict):
        doc: object = body
    else:
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise TokenError("token server answer is not JSON") from None
    if not isinstance(doc, dict):
        raise TokenError("token server answer is not a JSON object")
    token = doc.get("token") or doc.get("access_token")
    if not isinstance(token, str) or not token:
        raise TokenError("token server answer has no 'token' or 'access_token'")
    if any(c in token for c in "\r\n"):
        raise TokenError("token server answer has a token with line breaks")
    expires_in = doc.get("expires_in")
    ttl: float | None = None
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
        ttl = float(expires_in)
    refresh = doc.get("refresh_token")
    return TokenResponse(
        token=token,
        expires_in=ttl,
        issued_at=parse_rfc3339(doc.get("issued_at")),
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
    )


def token_expiry(
    response: TokenResponse,
    now: float,
    *,
    default_ttl: float = DEFAULT_TOKEN_TTL,
    margin: float = DEFAULT_SAFETY_MARGIN,
) -> float | None:
    """When a cached token must stop being used (epoch seconds); None: do not cache it.

    ``issued_at`` in the future (the server's clock is ahead) counts as now. The margin is at most
    a tenth of the lifetime, so a short-lived token is still worth caching.
    """
    ttl = response.expires_in if response.expires_in is not None else default_ttl
    start = now if response.issued_at is None else min(response.issued_at, now)
    expires = start + ttl - min(margin, ttl / 10)
    return expires if expires > now else None


@dataclass
class _Entry:
    token: str
    expires: float


@dataclass
class TokenCache:
    """Tokens per :class:`TokenKey`; one per client, so no state is shared between clients."""

    clock: Callable[[], float] = time.time
    default_ttl: float = DEFAULT_TOKEN_TTL
    margin: float = DEFAULT_SAFETY_MARGIN
    max_entries: int = MAX_CACHED_TOKENS
    _entries: dict[TokenKey, _Entry] = field(default_factory=dict, init=False, repr=False)

    def get(self, key: TokenKey) -> str | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self.clock() >= entry.expires:
            del self._entries[key]
            return None
        return entry.token

    def put(self, key: TokenKey, response: TokenResponse) -> bool:
        """Remember a token; False if it is too close to expiry to be worth keeping."""
        now = self.clock()
        expires = token_expiry(response, now, default_ttl=self.default_ttl, margin=self.margin)
        if expires is None:
            self._entries.pop(key, None)
            return False
        if key not in self._entries and len(self._entries) >= self.max_entries:
            self._evict(now)
        self._entries[key] = _Entry(response.token, expires)
        return True

    def invalidate(self, key: TokenKey, token: str | None = None) -> None:
        """Forget the token of ``key`` (only if it is still ``token``, when given)."""
        entry = self._entries.get(key)
        if entry is not None and (token is None or entry.token == token):
            del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _evict(self, now: float) -> None:
        for k in [k for k, e in self._entries.items() if e.expires <= now]:
            del self._entries[k]
        while len(self._entries) >= self.max_entries:
            oldest = min(self._entries, key=lambda k: self._entries[k].expires)
            del self._entries[oldest]


__all__ = [
    "DEFAULT_TOKEN_TTL",
    "TokenCache",
    "TokenError",
    "TokenKey",
    "TokenResponse",
    "make_key",
    "parse_rfc3339",
    "parse_token_response",
    "token_expiry",
]
