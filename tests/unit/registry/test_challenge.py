from __future__ import annotations

import pytest

from warmstart.registry.challenge import (
    Challenge,
    parse_challenges,
    parse_www_authenticate,
    select_challenge,
)

HUB = (
    'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
    'scope="repository:library/busybox:pull"'
)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            HUB,
            [
                (
                    "bearer",
                    {
                        "realm": "https://auth.docker.io/token",
                        "service": "registry.docker.io",
                        "scope": "repository:library/busybox:pull",
                    },
                )
            ],
        ),
        ('Basic realm="Registry Realm"', [("basic", {"realm": "Registry Realm"})]),
        ("Basic", [("basic", {})]),
        ("bearer REALM=x", [("bearer", {"realm": "x"})]),
        # quoted values with commas, escaped quotes and spaces around '='
        (
            'Bearer realm = "https://a/t?x=1,2", scope="repository:a:pull,push repository:b:pull"',
            [
                (
                    "bearer",
                    {
                        "realm": "https://a/t?x=1,2",
                        "scope": "repository:a:pull,push repository:b:pull",
                    },
                )
            ],
        ),
        ('Bearer realm="a\\"b\\\\c"', [("bearer", {"realm": 'a"b\\c'})]),
        # several challenges in one header
        (
            'Basic realm="r1", Bearer realm="https://t/token",service="s"',
            [("basic", {"realm": "r1"}), ("bearer", {"realm": "https://t/token", "service": "s"})],
        ),
        (
            'Bearer realm="https://t",error="insufficient_scope",Basic realm="x"',
            [
                ("bearer", {"realm": "https://t", "error": "insufficient_scope"}),
                ("basic", {"realm": "x"}),
            ],
        ),
        # unquoted value with an unquoted comma (lenient)
        (
            'Bearer realm="https://t",scope=repository:a:pull,push',
            [("bearer", {"realm": "https://t", "scope": "repository:a:pull,push"})],
        ),
        (
            "Bearer realm=https://t,scope=repository:a:pull, Basic",
            [("bearer", {"realm": "https://t", "scope": "repository:a:pull"}), ("basic", {})],
        ),
        # first occurrence of a parameter wins; empty and garbage input
        ('Bearer realm="a",realm="b"', [("bearer", {"realm": "a"})]),
        ("", []),
        (" , ,", []),
        ('Bearer realm="unterminated', [("bearer", {"realm": "unterminated"})]),
    ],
)
def test_parse(header: str, expected: list[tuple[str, dict[str, str]]]) -> None:
    got = parse_www_authenticate(header)
    assert [(c.scheme, dict(c.params)) for c in got] == expected


@pytest.mark.parametrize(
    ("header", "token68"),
    [
        ("Negotiate YIIB==", "YIIB=="),
        ("Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("Basic abc=, Bearer realm=x", "abc="),
    ],
)
def test_token68(header: str, token68: str) -> None:
    assert parse_www_authenticate(header)[0].token68 == token68


def test_properties_and_several_headers() -> None:
    got = parse_challenges(['Basic realm="x"', HUB])
    assert [c.scheme for c in got] == ["basic", "bearer"]
    bearer = got[1]
    assert bearer.realm == "https://auth.docker.io/token"
    assert bearer.service == "registry.docker.io"
    assert bearer.scopes == ("repository:library/busybox:pull",)
    assert bearer.error is None
    assert bearer.get("REALM") == bearer.realm


@pytest.mark.parametrize(
    ("headers", "scheme"),
    [
        ([HUB], "bearer"),
        (['Basic realm="x"', HUB], "bearer"),
        (['Basic realm="x"'], "basic"),
        (['Bearer realm="not-a-url"', 'Basic realm="x"'], "basic"),
        (['Bearer realm="not-a-url"'], None),
        (["Negotiate abc"], None),
        ([], None),
    ],
)
def test_select(headers: list[str], scheme: str | None) -> None:
    chosen = select_challenge(parse_challenges(headers))
    assert (chosen.scheme if chosen else None) == scheme


def test_challenge_is_hashable_despite_params() -> None:
    assert hash(Challenge("basic", {"realm": "x"})) == hash(Challenge("basic", {}))
