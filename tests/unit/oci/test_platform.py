from __future__ import annotations

import pytest

from warmstart.oci import OCIError, Platform, choose_platform
from warmstart.oci.platform import platform_rank

P = Platform.parse


@pytest.mark.parametrize(
    ("wanted", "offered", "rank"),
    [
        ("linux/amd64", "linux/amd64", 0),
        ("linux/amd64", "linux/x86_64", 0),
        ("linux/arm64", "linux/arm64/v8", 0),
        ("linux/arm64/v8", "linux/aarch64", 0),
        ("linux/arm/v7", "linux/arm/v6", 1),
        ("linux/arm/v6", "linux/arm/v7", None),
        ("linux/amd64", "linux/arm64", None),
        ("linux/amd64", "windows/amd64", None),
    ],
)
def test_rank(wanted, offered, rank):
    assert platform_rank(P(wanted), P(offered)) == rank


def test_choose_prefers_exact_variant_then_order():
    cands = [(P("linux/arm/v6"), "v6"), (P("linux/arm/v7"), "v7"), (None, "x")]
    assert choose_platform(cands, P("linux/arm/v7")) == "v7"
    assert (
        choose_platform([(P("linux/amd64"), "a"), (P("linux/amd64"), "b")], P("linux/amd64")) == "a"
    )


@pytest.mark.parametrize("text", ["linux", "linux/", "a/b/c/d", "linux/amd 64", ""])
def test_parse_rejects(text):
    with pytest.raises(OCIError):
        P(text)


def test_host_is_normalised():
    host = Platform.host()
    known = {"amd64", "arm64", "arm", "386", "s390x", "ppc64le", "riscv64"}
    assert host.os == "linux"
    assert host.architecture in known
