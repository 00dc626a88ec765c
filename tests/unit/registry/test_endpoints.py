from __future__ import annotations

import pytest

from warmstart.registry.endpoints import (
    base_url,
    is_loopback,
    may_send_credentials,
    normalize_insecure,
    origin_of,
    resolve_endpoint,
    split_host_port,
)


@pytest.mark.parametrize(
    ("registry", "insecure", "url"),
    [
        ("docker.io", frozenset(), "https://registry-1.docker.io"),
        ("index.docker.io", frozenset(), "https://registry-1.docker.io"),
        ("docker.io", frozenset({"docker.io"}), "https://registry-1.docker.io"),  # never http
        ("ghcr.io", frozenset(), "https://ghcr.io"),
        ("127.0.0.1:5000", frozenset(), "https://127.0.0.1:5000"),  # loopback: still https
        ("127.0.0.1:5000", frozenset({"127.0.0.1:5000"}), "http://127.0.0.1:5000"),
        ("127.0.0.1:5000", frozenset({"127.0.0.1:5001"}), "https://127.0.0.1:5000"),
        ("127.0.0.1:5000", frozenset({"http://127.0.0.1:5000/"}), "http://127.0.0.1:5000"),
        ("Reg.Local:80", frozenset({"reg.local:80"}), "http://reg.local:80"),
        ("reg.local:5000", frozenset({"reg.local"}), "https://reg.local:5000"),  # exact only
        ("[::1]:5000", frozenset({"[::1]:5000"}), "http://[::1]:5000"),
    ],
)
def test_base_url(registry: str, insecure: frozenset[str], url: str) -> None:
    assert base_url(registry, insecure) == url


@pytest.mark.parametrize("registry", ["", "a/b", "host?x", "user@host"])
def test_resolve_rejects(registry: str) -> None:
    with pytest.raises(ValueError):
        resolve_endpoint(registry)


@pytest.mark.parametrize(
    ("netloc", "expected"),
    [
        ("host", ("host", None)),
        ("Host:5000", ("host", 5000)),
        ("[::1]:5000", ("::1", 5000)),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
    ],
)
def test_split_host_port(netloc: str, expected: tuple[str, int | None]) -> None:
    assert split_host_port(netloc) == expected


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("foo.localhost", True),
        ("127.0.0.1", True),
        ("127.1.2.3:80", True),
        ("[::1]:5000", True),
        ("::1", True),
        ("10.0.0.1", False),
        ("example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("url", "insecure", "allowed"),
    [
        ("https://auth.example.com/token", frozenset(), True),
        ("http://auth.example.com/token", frozenset(), False),
        ("http://127.0.0.1:5001/token", frozenset(), True),
        ("http://localhost/token", frozenset(), True),
        ("http://reg.corp:5000/v2/", frozenset({"reg.corp:5000"}), True),
        ("http://reg.corp:5001/token", frozenset({"reg.corp:5000"}), True),  # same host
        ("http://other.corp/token", frozenset({"reg.corp:5000"}), False),
        ("ftp://reg.corp/token", frozenset({"reg.corp"}), False),
    ],
)
def test_may_send_credentials(url: str, insecure: frozenset[str], allowed: bool) -> None:
    assert may_send_credentials(url, insecure) is allowed


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://Reg.io/v2/", ("https", "reg.io", 443)),
        ("http://reg.io/v2/", ("http", "reg.io", 80)),
        ("http://reg.io:5000/x", ("http", "reg.io", 5000)),
        ("https://[::1]:5000/x", ("https", "::1", 5000)),
    ],
)
def test_origin_of(url: str, origin: tuple[str, str, int]) -> None:
    assert origin_of(url) == origin


def test_normalize_insecure() -> None:
    assert normalize_insecure(["http://A:5000/", " b:1 ", "index.docker.io", ""]) == {
        "a:5000",
        "b:1",
        "docker.io",
    }
