from __future__ import annotations

import json

import pytest

from warmstart import oci
from warmstart.registry import errors as e


@pytest.mark.parametrize(
    "cls",
    [
        e.AuthError,
        e.InsecureCredentials,
        e.NotFound,
        e.DigestMismatch,
        e.SizeMismatch,
        e.InvalidManifest,
        e.ManifestTooLarge,
        e.ProtocolError,
        e.UpstreamUnavailable,
    ],
)
def test_every_error_is_a_registry_error(cls: type[e.RegistryError]) -> None:
    assert issubclass(cls, e.RegistryError)


def test_manifest_errors_are_also_oci_errors() -> None:
    err = e.ManifestTooLarge("too big")
    assert isinstance(err, oci.ManifestTooLarge)
    assert isinstance(err, oci.InvalidManifest)
    assert isinstance(err, e.InvalidManifest)


def body(*errors: dict[str, object]) -> bytes:
    return json.dumps({"errors": list(errors)}).encode()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            body({"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}),
            ("MANIFEST_UNKNOWN", "manifest unknown"),
        ),
        (body({"code": "DENIED", "message": "a\nb"}, {"code": "X"}), ("DENIED", "a b")),
        (body({"code": "NAME_UNKNOWN"}), ("NAME_UNKNOWN", None)),
        (b'{"errors": []}', (None, None)),
        (b'{"message": "x"}', (None, None)),
        (b"[]", (None, None)),
        (b"", (None, None)),
        (b"upstream connect error\n", (None, "upstream connect error")),
        (b"<html><body>502</body></html>", (None, None)),
        (b"x" * 1000, (None, "x" * 197 + "...")),
    ],
)
def test_parse_error_body(raw: bytes, expected: tuple[str | None, str | None]) -> None:
    assert e.parse_error_body(raw) == expected


def test_one_line() -> None:
    assert e.one_line("a\n  b\tc") == "a b c"
    assert e.one_line("abcdef", 5) == "ab..."
