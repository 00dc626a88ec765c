from __future__ import annotations

import json

import pytest

from warmstart.registry.tokens import (
    TokenCache,
    TokenError,
    TokenKey,
    TokenResponse,
    make_key,
    parse_rfc3339,
    parse_token_response,
    token_expiry,
)

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("body", "token", "expires_in", "issued_at"),
    [
        ({"token": "t"}, "t", None, None),
        ({"access_token": "a"}, "a", None, None),
        ({"token": "t", "access_token": "a"}, "t", None, None),
        ({"token": "t", "expires_in": 300}, "t", 300.0, None),
        ({"token": "t", "expires_in": 0}, "t", None, None),
        ({"token": "t", "expires_in": -5}, "t", None, None),
        ({"token": "t", "expires_in": "300"}, "t", None, None),
        ({"token": "t", "expires_in": True}, "t", None, None),
        ({"token": "t", "issued_at": "2023-11-14T22:13:20Z"}, "t", None, NOW),
        ({"token": "t", "issued_at": "2023-11-14T22:13:20.123456789Z"}, "t", None, NOW + 0.123456),
        ({"token": "t", "issued_at": "yesterday"}, "t", None, None),
    ],
)
def test_parse_token_response(
    body: dict[str, object], token: str, expires_in: float | None, issued_at: float | None
) -> None:
    got = parse_token_response(json.dumps(body).encode())
    assert got.token == token
    assert got.expires_in == expires_in
    assert got.issued_at == (pytest.approx(issued_at) if issued_at is not None else None)


@pytest.mark.parametrize(
    "body", [b"not json", b"[]", b"{}", b'{"token": ""}', b'{"token": 5}', b'{"token": "a\\nb"}']
)
def test_parse_token_response_rejects(body: bytes) -> None:
    with pytest.raises(TokenError):
        parse_token_response(body)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-11-14T22:13:20Z", NOW),
        ("2023-11-14T23:13:20+01:00", NOW),
        ("2023-11-14t22:13:20z", NOW),
        ("2023-11-14T22:13:20", None),  # no zone: unusable
        ("", None),
        (None, None),
        (17, None),
    ],
)
def test_parse_rfc3339(text: object, expected: float | None) -> None:
    assert parse_rfc3339(text) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (TokenResponse("t"), NOW + 60 - 5),  # default 60 s, margin 5 s
        (TokenResponse("t", expires_in=300), NOW + 300 - 5),
        (TokenResponse("t", expires_in=20), NOW + 20 - 2),  # margin at most a tenth
        (TokenResponse("t", expires_in=300, issued_at=NOW - 100), NOW + 200 - 5),
        (TokenResponse("t", expires_in=300, issued_at=NOW + 50), NOW + 300 - 5),  # future: now
        (TokenResponse("t", expires_in=60, issued_at=NOW - 58), None),  # nearly expired
        (TokenResponse("t", expires_in=60, issued_at=NOW - 600), None),
    ],
)
def test_token_expiry(response: TokenResponse, expected: float | None) -> None:
    assert token_expiry(response, NOW) == expected


def test_cache_hit_expiry_and_invalidate() -> None:
    clock = Clock()
    cache = TokenCache(clock=clock)
    key = make_key("https://auth/token", "svc", ["repository:a:pull"])
    assert cache.get(key) is None
    assert cache.put(key, TokenResponse("t1", expires_in=120))
    assert cache.get(key) == "t1"
    other = make_key("https://auth/token", "svc", ["repository:b:pull"])
    assert cache.get(other) is None
    clock.now += 114
    assert cache.get(key) == "t1"
    clock.now += 1  # 120 - 5 s margin reached
    assert cache.get(key) is None
    assert len(cache) == 0

    cache.put(key, TokenResponse("t2"))
    cache.invalidate(key, "someone-else")  # only drops the token it is asked to
    assert cache.get(key) == "t2"
    cache.invalidate(key, "t2")
    assert cache.get(key) is None


def test_cache_refuses_tokens_about_to_expire() -> None:
    clock = Clock()
    cache = TokenCache(clock=clock)
    key = make_key("r", None, [])
    cache.put(key, TokenResponse("old", expires_in=60))
    assert not cache.put(key, TokenResponse("t", expires_in=60, issued_at=NOW - 59))
    assert cache.get(key) is None


def test_cache_is_bounded() -> None:
    clock = Clock()
    cache = TokenCache(clock=clock, max_entries=3)
    for i in range(5):
        cache.put(make_key("r", "s", [f"repository:{i}:pull"]), TokenResponse(f"t{i}", 100 + i))
    assert len(cache) == 3
    assert cache.get(make_key("r", "s", ["repository:4:pull"])) == "t4"
    assert cache.get(make_key("r", "s", ["repository:0:pull"])) is None


def test_make_key_sorts_and_dedups_scopes() -> None:
    assert make_key("r", None, ["b", "a", "b"]) == TokenKey("r", "", "a b")
