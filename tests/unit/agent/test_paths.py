from __future__ import annotations

import pytest

from warmstart.agent.paths import (
    BadRequest,
    Kind,
    choose_registry,
    merge_accept,
    parse_v2_path,
)
from warmstart.oci import Digest

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("tail", "kind", "name", "reference"),
    [
        ("app/manifests/v1", Kind.MANIFEST, "app", "v1"),
        ("library/busybox/manifests/latest", Kind.MANIFEST, "library/busybox", "latest"),
        (f"a/b/c/manifests/{D}", Kind.MANIFEST, "a/b/c", D),
        (f"a/b/blobs/{D}", Kind.BLOB, "a/b", D),
        # names may contain the words: the last /manifests/ or /blobs/ decides
        ("x/manifests/y/manifests/v1", Kind.MANIFEST, "x/manifests/y", "v1"),
        (f"x/manifests/blobs/{D}", Kind.BLOB, "x/manifests", D),
        (f"blobs/blobs/{D}", Kind.BLOB, "blobs", D),
        ("a-b_c.d/e__f/manifests/V1.0_x-y", Kind.MANIFEST, "a-b_c.d/e__f", "V1.0_x-y"),
    ],
)
def test_parse_ok(tail: str, kind: Kind, name: str, reference: str) -> None:
    t = parse_v2_path(tail)
    assert (t.kind, t.name, t.reference) == (kind, name, reference)
    assert (t.digest is not None) == (":" in reference)
    if t.digest is not None:
        assert t.digest == Digest.parse(reference)


@pytest.mark.parametrize(
    ("tail", "code", "status"),
    [
        ("../etc/manifests/v1", "NAME_INVALID", 400),
        ("a/../../etc/manifests/v1", "NAME_INVALID", 400),
        ("a/./b/manifests/v1", "NAME_INVALID", 400),
        ("a//b/manifests/v1", "NAME_INVALID", 400),
        ("/a/manifests/v1", "NAME_INVALID", 400),
        ("a/manifests/v1".replace("a", "A", 1), "NAME_INVALID", 400),
        ("a\x00b/manifests/v1", "NAME_INVALID", 400),
        ("a b/manifests/v1", "NAME_INVALID", 400),
        ("a%2fb/manifests/v1", "NAME_INVALID", 400),
        ("-a/manifests/v1", "NAME_INVALID", 400),
        ("a-/manifests/v1", "NAME_INVALID", 400),
        ("a..b/manifests/v1", "NAME_INVALID", 400),
        ("é/manifests/v1", "NAME_INVALID", 400),
        ("a" * 256 + "/manifests/v1", "NAME_INVALID", 400),
        ("a/manifests/-v1", "TAG_INVALID", 400),
        ("a/manifests/.v1", "TAG_INVALID", 400),
        ("a/manifests/" + "v" * 129, "TAG_INVALID", 400),
        ("a/manifests/v$1", "TAG_INVALID", 400),
        ("a/manifests/sha256:abc", "DIGEST_INVALID", 400),
        ("a/manifests/md5:" + "a" * 32, "DIGEST_INVALID", 400),
        ("a/blobs/latest", "DIGEST_INVALID", 400),
        ("a/blobs/sha256:" + "A" * 64, "DIGEST_INVALID", 400),
        ("a/blobs/sha256:" + "a" * 63, "DIGEST_INVALID", 400),
        ("a/blobs/sha256:" + "a" * 65, "DIGEST_INVALID", 400),
        ("a/blobs/sha256:" + "g" * 64, "DIGEST_INVALID", 400),
        ("a/blobs/sha256:..%2f..%2fx", "DIGEST_INVALID", 400),
        ("a/blobs/sha256:../../x", "NOT_FOUND", 404),  # a '/' in the reference: no such route
        ("a/blobs/uploads/abc", "NOT_FOUND", 404),
        ("a/manifests/", "NOT_FOUND", 404),
        ("a/tags/list", "NOT_FOUND", 404),
        ("_catalog", "NOT_FOUND", 404),
        ("manifests/v1", "NOT_FOUND", 404),  # no name at all
    ],
)
def test_parse_rejects(tail: str, code: str, status: int) -> None:
    with pytest.raises(BadRequest) as info:
        parse_v2_path(tail)
    assert info.value.response.code == code
    assert info.value.response.status == status


def test_merge_accept() -> None:
    assert merge_accept([]) == []
    assert merge_accept(["a/b, c/d;q=0.5", "e/f", "A/B"]) == ["a/b", "c/d", "e/f"]
    assert merge_accept([" , ,a/b,,"]) == ["a/b"]
    assert len(merge_accept([",".join(f"t/{i}" for i in range(1000))])) == 64


UPSTREAMS = {"reg.example:5000": object(), "docker.io": object()}


def test_choose_registry() -> None:
    assert choose_registry(["reg.example:5000"], UPSTREAMS, None) == "reg.example:5000"
    assert choose_registry(["REG.example:5000"], UPSTREAMS, None) == "reg.example:5000"
    assert choose_registry(["index.docker.io"], UPSTREAMS, None) == "docker.io"
    assert choose_registry([], UPSTREAMS, "docker.io") == "docker.io"
    same = ["reg.example:5000", "reg.example:5000"]
    assert choose_registry(same, UPSTREAMS, None) == "reg.example:5000"


@pytest.mark.parametrize(
    ("ns", "default"),
    [
        (["evil.example"], "docker.io"),  # never an open proxy
        ([], None),
        (["reg.example:5000", "docker.io"], None),
        ([""], "docker.io"),
    ],
)
def test_choose_registry_denied(ns: list[str], default: str | None) -> None:
    with pytest.raises(BadRequest) as info:
        choose_registry(ns, UPSTREAMS, default)
    assert (info.value.response.status, info.value.response.code) == (403, "DENIED")
