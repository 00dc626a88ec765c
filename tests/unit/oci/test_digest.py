from __future__ import annotations

import pytest

from warmstart.oci import Digest, InvalidDigest, is_digest


def test_parse_and_of_roundtrip():
    d = Digest.of(b"hello")
    assert str(d) == "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert Digest.parse(str(d)) == d
    assert d.short == d.hex[:12]
    h = d.hasher()
    h.update(b"hello")
    assert h.hexdigest() == d.hex


def test_sha512_length():
    assert Digest.parse("sha512:" + "0" * 128).algorithm == "sha512"
    assert not is_digest("sha512:" + "0" * 64)


@pytest.mark.parametrize(
    "text",
    [
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "sha256:" + "A" * 64,
        "sha256:" + "g" * 64,
        "sha256:../../../../etc/passwd",
        "sha256/" + "a" * 64,
        "md5:" + "a" * 32,
        "a" * 64,
        "",
        "sha256:",
        ":" + "a" * 64,
    ],
)
def test_rejects(text):
    with pytest.raises(InvalidDigest):
        Digest.parse(text)
