"""Parsing of ``WWW-Authenticate`` headers (RFC 7235) as registries send them.

``Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull"``
``Basic realm="Registry Realm"``. One header may carry several challenges separated by commas,
quoted values may contain commas and escaped quotes, and a response may carry several headers.
The parser is lenient: garbage is skipped rather than raised, since a challenge we cannot read
ends in an :class:`~warmstart.registry.errors.AuthError` with the raw header anyway.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")
_TOKEN68_CHARS = frozenset(string.ascii_letters + string.digits + "-._~+/")
_SPACE = " \t"
_KNOWN_SCHEMES = frozenset({"basic", "bearer", "digest", "negotiate", "ntlm", "hoba", "mutual"})


@dataclass(frozen=True)
class Challenge:
    """One authentication challenge: a lower-cased scheme and its parameters."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict, hash=False)
    token68: str | None = None

    def get(self, name: str) -> str | None:
        return self.params.get(name.lower())

    @property
    def realm(self) -> str | None:
        return self.get("realm")

    @property
    def service(self) -> str | None:
        return self.get("service")

    @property
    def scope(self) -> str | None:
        return self.get("scope")

    @property
    def scopes(self) -> tuple[str, ...]:
        """The ``scope`` parameter split on spaces (a token may cover several scopes)."""
        return tuple((self.scope or "").split())

    @property
    def error(self) -> str | None:
        """``invalid_token``, ``insufficient_scope``, ... (RFC 6750), if the server said."""
        return self.get("error")


@dataclass
class _Building:
    scheme: str
    params: dict[str, str] = field(default_factory=dict)
    token68: str | None = None
    last_unquoted: str | None = None  # name of the last param whose value was a bare token


def _skip(s: str, i: int, chars: str) -> int:
    while i < len(s) and s[i] in chars:
        i += 1
    return i


def _read(s: str, i: int, allowed: frozenset[str]) -> int:
    while i < len(s) and s[i] in allowed:
        i += 1
    return i


def _read_quoted(s: str, i: int) -> tuple[str, int]:
    """``s[i]`` is the opening quote; return the unescaped value and the index after it."""
    out: list[str] = []
    i += 1
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    return "".join(out), i  # unterminated: take the rest


def _read_bare_value(s: str, i: int) -> tuple[str, int]:
    """A value without quotes: up to the next comma or white space (laxer than a token)."""
    j = i
    while j < len(s) and s[j] != "," and s[j] not in _SPACE:
        j += 1
    return s[i:j], j


def _token68_at(s: str, i: int) -> tuple[str, int] | None:
    """A token68 (``Basic dXNlcjpwYXNz``) that is all that follows the scheme, if one is there."""
    j = _read(s, i, _TOKEN68_CHARS)
    if j == i:
        return None
    j = _skip(s, j, "=")
    end = _skip(s, j, _SPACE)
    if end < len(s) and s[end] != ",":
        return None
    return s[i:j], end


def parse_www_authenticate(value: str) -> list[Challenge]:
    """All challenges of one ``WWW-Authenticate`` header value, in order."""
    built: list[_Building] = []
    current: _Building | None = None
    s = value or ""
    i = 0
    while i < len(s):
        i = _skip(s, i, _SPACE + ",")
        if i >= len(s):
            break
        j = _read(s, i, _TOKEN_CHARS)
        if j == i:  # not a token: skip one character of garbage
            i += 1
            continue
        name = s[i:j]
        k = _skip(s, j, _SPACE)
        if current is not None and k < len(s) and s[k] == "=":
            # An auth-param of the current challenge.
            k = _skip(s, k + 1, _SPACE)
            if k < len(s) and s[k] == '"':
                val, i = _read_quoted(s, k)
                current.last_unquoted = None
            else:
                val, i = _read_bare_value(s, k)
                current.last_unquoted = name.lower()
            current.params.setdefault(name.lower(), val)
            continue
        if (
            current is not None
            and current.last_unquoted is not None
            and name.lower() not in _KNOWN_SCHEMES
            and (k >= len(s) or s[k] == ",")
        ):
            # A bare word after an unquoted value: most likely the value had an unquoted
            # comma in it (``scope=repository:a:pull,push``); glue it back on.
            key = current.last_unquoted
            current.params[key] = f"{current.params[key]},{name}"
            i = k
            continue
        current = _Building(name.lower())
        built.append(current)
        i = _skip(s, j, _SPACE)
        t68 = _token68_at(s, i)
        if t68 is not None:
            current.token68, i = t68
    return [Challenge(b.scheme, dict(b.params), b.token68) for b in built]


def parse_challenges(values: Iterable[str]) -> list[Challenge]:
    """All challenges of every ``WWW-Authenticate`` header of a response."""
    out: list[Challenge] = []
    for value in values:
        out.extend(parse_www_authenticate(value))
    return out


def select_challenge(challenges: Iterable[Challenge]) -> Challenge | None:
    """The challenge to answer: a Bearer one with an http(s) realm first, else Basic."""
    basic: Challenge | None = None
    for c in challenges:
        realm = c.realm or ""
        if c.scheme == "bearer" and realm.lower().startswith(("https://", "http://")):
            return c
        if c.scheme == "basic" and basic is None:
            basic = c
    return basic


__all__ = ["Challenge", "parse_challenges", "parse_www_authenticate", "select_challenge"]
