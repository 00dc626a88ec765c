from __future__ import annotations

import pytest

from warmstart.oci import mediatypes as mt


@pytest.mark.parametrize("accepted", [(), ("*/*",), ("application/*",), ("*",)])
def test_no_accept_or_a_wildcard_asks_for_every_manifest_type(accepted: tuple[str, ...]) -> None:
    assert mt.manifest_accept(accepted) == mt.MANIFEST_ACCEPT


def test_named_types_come_first_and_the_wildcard_adds_the_rest() -> None:
    got = mt.manifest_accept((mt.DOCKER_MANIFEST_V2, "*/*"))
    assert got[0] == mt.DOCKER_MANIFEST_V2
    assert set(got) == set(mt.MANIFEST_ACCEPT) and len(got) == len(mt.MANIFEST_ACCEPT)
    assert "*/*" not in got


def test_named_types_alone_pass_as_they_are() -> None:
    assert mt.manifest_accept((mt.OCI_MANIFEST,)) == (mt.OCI_MANIFEST,)
    assert mt.manifest_accept(("application/json",)) == ("application/json",)
