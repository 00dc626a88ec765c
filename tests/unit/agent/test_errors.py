from __future__ import annotations

import json

import pytest

from warmstart.agent.errors import STATUS_OF_CODE, error_answer, oci_error, unsupported
from warmstart.errors import WarmstartError
from warmstart.fetch.interfaces import (
    DeniedError,
    FetchError,
    NotFoundError,
    UnauthorizedError,
    UnavailableError,
)
from warmstart.oci.errors import InvalidDigest
from warmstart.registry.errors import AuthError, RegistryError, UpstreamUnavailable
from warmstart.registry.errors import NotFound as RegistryNotFound
from warmstart.store.errors import BudgetExceeded


def test_body_shape() -> None:
    err = oci_error("NAME_INVALID", "bad name", detail={"name": "x"})
    assert err.status == 400
    assert json.loads(err.body()) == {
        "errors": [{"code": "NAME_INVALID", "message": "bad name", "detail": {"name": "x"}}]
    }
    assert json.loads(oci_error("UNKNOWN", "x").body())["errors"][0]["detail"] == {}


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("NAME_INVALID", 400),
        ("DIGEST_INVALID", 400),
        ("MANIFEST_UNKNOWN", 404),
        ("BLOB_UNKNOWN", 404),
        ("UNAUTHORIZED", 401),
        ("DENIED", 403),
        ("UNSUPPORTED", 405),
        ("TOOMANYREQUESTS", 429),
        ("UNAVAILABLE", 503),
    ],
)
def test_standard_statuses(code: str, status: int) -> None:
    assert STATUS_OF_CODE[code] == status
    assert oci_error(code, "m").status == status


def test_unauthorized_carries_basic_challenge() -> None:
    assert oci_error("UNAUTHORIZED", "m").headers["WWW-Authenticate"] == 'Basic realm="warmstart"'


def test_unsupported_lists_allowed_methods() -> None:
    err = unsupported("PUT")
    assert (err.status, err.code, err.headers["Allow"]) == (405, "UNSUPPORTED", "GET, HEAD")


class TooMany(FetchError):
    status = 429
    code = "TOOMANYREQUESTS"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)


class Teapot(FetchError):
    status = 418
    code = "TEAPOT"


@pytest.mark.parametrize(
    ("error", "manifest", "status", "code"),
    [
        (NotFoundError("x"), True, 404, "MANIFEST_UNKNOWN"),
        (NotFoundError("x"), False, 404, "BLOB_UNKNOWN"),
        (UnauthorizedError("x"), False, 401, "UNAUTHORIZED"),
        (DeniedError("x"), False, 403, "DENIED"),
        (UnavailableError("x"), False, 503, "UNAVAILABLE"),
        (FetchError("x"), False, 502, "UNKNOWN"),
        (TooMany("slow down", 2.5), False, 429, "TOOMANYREQUESTS"),
        (Teapot("x"), False, 502, "UNKNOWN"),
    ],
)
def test_error_answer(error: FetchError, manifest: bool, status: int, code: str) -> None:
    err = error_answer(error, not_found="MANIFEST_UNKNOWN" if manifest else "BLOB_UNKNOWN")
    assert (err.status, err.code) == (status, code)
    assert err.message


def test_retry_after_passed_on() -> None:
    assert error_answer(TooMany("x", 2.5)).headers["Retry-After"] == "3"
    assert "WWW-Authenticate" in error_answer(UnauthorizedError("x")).headers


@pytest.mark.parametrize(
    ("error", "not_found", "status", "code", "retry_after"),
    [
        (
            UpstreamUnavailable("rate limited", retry_after=120.0),
            "BLOB_UNKNOWN",
            503,
            "UNAVAILABLE",
            "120",
        ),
        (
            UnavailableError("every source failed", retry_after=0.2),
            "BLOB_UNKNOWN",
            503,
            "UNAVAILABLE",
            "1",
        ),
        (UpstreamUnavailable("down"), "BLOB_UNKNOWN", 503, "UNAVAILABLE", None),
        (RegistryNotFound("gone"), "MANIFEST_UNKNOWN", 404, "MANIFEST_UNKNOWN", None),
        (AuthError("who"), "BLOB_UNKNOWN", 401, "UNAUTHORIZED", None),
        (RegistryError("odd answer"), "BLOB_UNKNOWN", 502, "UNKNOWN", None),
        (BudgetExceeded("full"), "BLOB_UNKNOWN", 503, "UNAVAILABLE", None),
        (InvalidDigest("sha256:nope"), "BLOB_UNKNOWN", 400, "INVALID_REQUEST", None),
        (DeniedError("not mirrored"), "BLOB_UNKNOWN", 403, "DENIED", None),
    ],
)
def test_every_layer_answers_through_the_one_model(
    error: WarmstartError, not_found: str, status: int, code: str, retry_after: str | None
) -> None:
    """Errors of the registry, store, oci and fetch layers are answered from what they carry
    (no per-layer table): status, code, one-line message, Retry-After on 429/503."""
    err = error_answer(error, not_found=not_found)
    assert (err.status, err.code, err.message) == (status, code, error.message)
    assert err.headers.get("Retry-After") == retry_after
