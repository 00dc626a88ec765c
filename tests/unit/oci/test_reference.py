from __future__ import annotations

import pytest

from warmstart.oci import Digest, InvalidReference, parse_reference, validate_repository

HEX = "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("busybox", "docker.io", "library/busybox", "latest", None),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None),
        ("user/app", "docker.io", "user/app", "latest", None),
        ("docker.io/busybox", "docker.io", "library/busybox", "latest", None),
        ("index.docker.io/user/app:v1", "docker.io", "user/app", "v1", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/a/b/c:t", "localhost:5000", "a/b/c", "t", None),
        ("127.0.0.1:5000/x", "127.0.0.1:5000", "x", "latest", None),
        ("[::1]:5000/x:t", "[::1]:5000", "x", "t", None),
        ("ghcr.io/org/img@sha256:" + HEX, "ghcr.io", "org/img", None, "sha256:" + HEX),
        ("ghcr.io/org/img:t@sha256:" + HEX, "ghcr.io", "org/img", "t", "sha256:" + HEX),
        ("example.com/a_b/c__d/e-f---g.h", "example.com", "a_b/c__d/e-f---g.h", "latest", None),
        ("registry.hub.docker.com/user/app", "docker.io", "user/app", "latest", None),
        ("registry-1.docker.io/app", "docker.io", "library/app", "latest", None),
        # host names are case-insensitive: one (lower-case) name, as the agent's config has it
        ("Registry/app", "registry", "app", "latest", None),
    ],
)
def test_parse_normalises_like_docker(text, registry, repository, tag, digest):
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)
    assert (str(ref.digest) if ref.digest else None) == digest


@pytest.mark.parametrize(
    "text",
    [
        "",
        " busybox",
        "UPPER",
        "docker.io/Library/x",
        "a//b",
        "a/../b",
        "../etc/passwd",
        "a/b/",
        "/a",
        "a:",
        "a:-tag",
        "a:" + "t" * 129,
        "a@sha256:abc",
        "a@sha256:" + "A" * 64,
        "a@md5:" + "a" * 32,
        "a@sha256:" + "a" * 63,
        "host:99999/a",
        "a/" + "b" * 300,
        "a_/b",
        "a%2e%2e/b",
    ],
)
def test_rejects_malformed(text):
    with pytest.raises(InvalidReference):
        parse_reference(text)


def test_reference_prefers_digest_and_prints_back():
    ref = parse_reference(f"localhost:5000/a:t@sha256:{HEX}")
    assert ref.reference == f"sha256:{HEX}"
    assert str(ref) == f"localhost:5000/a:t@sha256:{HEX}"
    assert parse_reference("localhost:5000/a").reference == "latest"
    assert ref.with_digest(Digest.parse("sha256:" + "b" * 64)).digest.hex == "b" * 64


@pytest.mark.parametrize("name", ["..", "a/..", "a/./b", "a\\b", "a\x00", "", "-a", "a-"])
def test_validate_repository_rejects_traversal(name):
    with pytest.raises(InvalidReference):
        validate_repository(name)
