"""The 401 dance of the Distribution API as a pure state machine: a challenge in, an action out.

No I/O and no clock: the client asks :func:`before_request` what authorization to send, and
when the registry answers 401 it hands the ``WWW-Authenticate`` values and what it sent to
:func:`on_unauthorized`, which says what to do next: get a token for scope S at realm R, send
Basic credentials, or give up with an :class:`~warmstart.registry.errors.AuthError`. A second
401 after that retry is always final (:func:`after_retry`). Token cache entries to drop come back
as ``invalidate`` rather than being dropped here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from warmstart.registry.challenge import Challenge, parse_challenges, select_challenge
from warmstart.registry.tokens import TokenKey, make_key

SentKind = Literal["none", "cached", "fresh", "basic"]


@dataclass(frozen=True)
class Sent:
    """What authorization went with a request: nothing, a cached or just fetched token, Basic."""

    kind: SentKind = "none"
    key: TokenKey | None = None
    token: str | None = None


@dataclass(frozen=True)
class SendNothing:
    """Send the request without ``Authorization``."""


@dataclass(frozen=True)
class GetToken:
    """Send a Bearer token for ``scopes`` from ``challenge.realm``: cached, or fetched now.

    ``stale`` is a token just refused: one the cache still holds must not be used again.
    """

    challenge: Challenge
    scopes: tuple[str, ...]
    key: TokenKey
    stale: str | None = None


@dataclass(frozen=True)
class UseBasic:
    """Send the registry's Basic credentials."""


@dataclass(frozen=True)
class GiveUp:
    """Fail with an AuthError: the 401 had no usable challenge, or access was denied."""

    no_challenge: bool = False


Action = SendNothing | GetToken | UseBasic | GiveUp


@dataclass(frozen=True)
class Decision:
    """The next action, the challenge to remember for the registry, the token to forget."""

    action: Action
    challenge: Challenge | None = None
    invalidate: tuple[TokenKey, str] | None = None


def token_key(challenge: Challenge, scopes: tuple[str, ...]) -> TokenKey:
    return make_key(challenge.realm or "", challenge.service, scopes)


def before_request(
    challenge: Challenge | None, scopes: tuple[str, ...], *, has_basic: bool
) -> Action:
    """What to send before any 401, from the challenge last seen from this registry."""
    if challenge is None:
        return SendNothing()
    if challenge.scheme == "bearer":
        return GetToken(challenge, scopes, token_key(challenge, scopes))
    return UseBasic() if has_basic else SendNothing()


def on_unauthorized(
    www_authenticate: Iterable[str], sent: Sent, scopes: tuple[str, ...], *, has_basic: bool
) -> Decision:
    """The registry answered 401 to a request sent with ``sent``: what now?"""
    challenge = select_challenge(parse_challenges(www_authenticate))
    if challenge is None:
        return Decision(GiveUp(no_challenge=True))
    if challenge.scheme != "bearer":
        if sent.kind == "basic" or not has_basic:
            return Decision(GiveUp(), challenge)
        return Decision(UseBasic(), challenge)
    all_scopes = tuple(sorted(set(scopes) | set(challenge.scopes)))
    key = token_key(challenge, all_scopes)
    refused = (sent.key, sent.token) if sent.key is not None and sent.token is not None else None
    if sent.kind == "fresh" and sent.key == key:
        return Decision(GiveUp(), challenge, refused)  # a token just issued is refused: denied
    invalidate = refused if sent.kind == "cached" else None
    return Decision(GetToken(challenge, all_scopes, key, stale=sent.token), challenge, invalidate)


def after_retry(retried: Sent) -> Decision:
    """A 401 again after answering the first: denied, and the token sent is not offered again."""
    if retried.key is not None and retried.token is not None:
        return Decision(GiveUp(), invalidate=(retried.key, retried.token))
    return Decision(GiveUp())


__all__ = [
    "Action",
    "Decision",
    "GetToken",
    "GiveUp",
    "SendNothing",
    "Sent",
    "UseBasic",
    "after_retry",
    "before_request",
    "on_unauthorized",
    "token_key",
]
