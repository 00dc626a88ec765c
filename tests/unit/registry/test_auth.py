"""Table tests of the 401 state machine: a challenge in, an action out."""

from __future__ import annotations

import pytest

from warmstart.registry.auth import (
    Decision,
    GetToken,
    GiveUp,
    SendNothing,
    Sent,
    UseBasic,
    after_retry,
    before_request,
    on_unauthorized,
    token_key,
)
from warmstart.registry.challenge import parse_www_authenticate

REALM = "https://auth.example/token"
BEARER = f'Bearer realm="{REALM}",service="reg",scope="repository:a/b:pull"'
BASIC = 'Basic realm="reg"'
SCOPES = ("repository:a/b:pull",)
PUSH = ("repository:a/b:push",)
BEARER_CH = parse_www_authenticate(BEARER)[0]
BASIC_CH = parse_www_authenticate(BASIC)[0]
KEY = token_key(BEARER_CH, SCOPES)
BOTH_KEY = token_key(BEARER_CH, ("repository:a/b:pull", "repository:a/b:push"))
OTHER_KEY = token_key(BEARER_CH, PUSH)


def test_token_key_is_realm_service_and_scopes() -> None:
    assert KEY == token_key(BEARER_CH, SCOPES)
    assert KEY.realm == REALM
    assert KEY != OTHER_KEY


@pytest.mark.parametrize(
    ("challenge", "has_basic", "action"),
    [
        (None, True, SendNothing()),
        (BEARER_CH, False, GetToken(BEARER_CH, SCOPES, KEY)),
        (BASIC_CH, True, UseBasic()),
        (BASIC_CH, False, SendNothing()),
    ],
)
def test_before_request(challenge: object, has_basic: bool, action: object) -> None:
    assert before_request(challenge, SCOPES, has_basic=has_basic) == action  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("headers", "sent", "scopes", "has_basic", "decision"),
    [
        # no challenge we can use: give up, remember nothing
        ([], Sent(), SCOPES, True, Decision(GiveUp(no_challenge=True))),
        (["Negotiate abc"], Sent(), SCOPES, True, Decision(GiveUp(no_challenge=True))),
        # first Bearer challenge: get a token for scope S at realm R
        ([BEARER], Sent(), SCOPES, False, Decision(GetToken(BEARER_CH, SCOPES, KEY), BEARER_CH)),
        # the challenge's scope joins the request's
        (
            [BEARER],
            Sent(),
            PUSH,
            False,
            Decision(
                GetToken(BEARER_CH, ("repository:a/b:pull", "repository:a/b:push"), BOTH_KEY),
                BEARER_CH,
            ),
        ),
        # a cached token refused (revoked, expired early): forget it, get another
        (
            [BEARER],
            Sent("cached", KEY, "old"),
            SCOPES,
            False,
            Decision(GetToken(BEARER_CH, SCOPES, KEY, stale="old"), BEARER_CH, (KEY, "old")),
        ),
        # a token just fetched for these very scopes refused: denied
        (
            [BEARER],
            Sent("fresh", KEY, "new"),
            SCOPES,
            True,
            Decision(GiveUp(), BEARER_CH, (KEY, "new")),
        ),
        # a fresh token for other scopes: get one for the challenge's
        (
            [BEARER],
            Sent("fresh", OTHER_KEY, "t"),
            SCOPES,
            False,
            Decision(GetToken(BEARER_CH, SCOPES, KEY, stale="t"), BEARER_CH),
        ),
        # Basic: send credentials if we have them, once
        ([BASIC], Sent(), SCOPES, True, Decision(UseBasic(), BASIC_CH)),
        ([BASIC], Sent(), SCOPES, False, Decision(GiveUp(), BASIC_CH)),
        ([BASIC], Sent("basic"), SCOPES, True, Decision(GiveUp(), BASIC_CH)),
        # Bearer preferred over Basic when both are offered
        (
            [BASIC, BEARER],
            Sent(),
            SCOPES,
            True,
            Decision(GetToken(BEARER_CH, SCOPES, KEY), BEARER_CH),
        ),
    ],
)
def test_on_unauthorized(
    headers: list[str], sent: Sent, scopes: tuple[str, ...], has_basic: bool, decision: Decision
) -> None:
    assert on_unauthorized(headers, sent, scopes, has_basic=has_basic) == decision


@pytest.mark.parametrize(
    ("sent", "decision"),
    [
        (Sent("fresh", KEY, "t"), Decision(GiveUp(), invalidate=(KEY, "t"))),
        (Sent("cached", KEY, "t"), Decision(GiveUp(), invalidate=(KEY, "t"))),
        (Sent("basic"), Decision(GiveUp())),
    ],
)
def test_a_second_401_is_final(sent: Sent, decision: Decision) -> None:
    assert after_retry(sent) == decision
