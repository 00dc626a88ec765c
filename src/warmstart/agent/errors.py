"""OCI Distribution error responses: codes, statuses and bodies (no aiohttp here).

Every error the agent answers on ``/v2/`` (and its control routes) has the body
``{"errors": [{"code": ..., "message": ..., "detail": ...}]}`` and the status the distribution
spec gives its code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from warmstart.errors import WarmstartError

# code -> HTTP status (distribution spec, "Error Codes"; UNAVAILABLE/UNKNOWN are ours)
STATUS_OF_CODE: dict[str, int] = {
    "BLOB_UNKNOWN": 404,
    "DIGEST_INVALID": 400,
    "MANIFEST_UNKNOWN": 404,
    "MANIFEST_INVALID": 400,
    "NAME_INVALID": 400,
    "NAME_UNKNOWN": 404,
    "TAG_INVALID": 400,
    "RANGE_INVALID": 416,
    "UNAUTHORIZED": 401,
    "DENIED": 403,
    "UNSUPPORTED": 405,
    "NOT_FOUND": 404,
    "TOOMANYREQUESTS": 429,
    "UNAVAILABLE": 503,
    "BAD_GATEWAY": 502,
    "UNKNOWN": 500,
}

# Statuses of errors answered as they are; others become 502.
PASSED_STATUSES = frozenset({400, 401, 403, 404, 405, 409, 416, 429, 501, 502, 503, 504})

# What a 401 carries, so that docker/podman/skopeo send credentials (Basic) on the retry.
WWW_AUTHENTICATE = 'Basic realm="warmstart"'


@dataclass(frozen=True)
class ErrorResponse:
    """An error answer: status, OCI body and extra headers."""

    status: int
    code: str
    message: str
    detail: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> bytes:
        entry: dict[str, Any] = {"code": self.code, "message": self.message}
        entry["detail"] = self.detail if self.detail is not None else {}
        return json.dumps({"errors": [entry]}, separators=(",", ":")).encode()


def oci_error(
    code: str,
    message: str,
    *,
    status: int | None = None,
    detail: Any = None,
    headers: dict[str, str] | None = None,
) -> ErrorResponse:
    """The error for ``code`` with its standard status (or ``status`` when given)."""
    status = status if status is not None else STATUS_OF_CODE.get(code, 500)
    extra = dict(headers or {})
    if status == 401:
        extra.setdefault("WWW-Authenticate", WWW_AUTHENTICATE)
    return ErrorResponse(status, code, message, detail, extra)


def name_invalid(message: str, name: str | None = None) -> ErrorResponse:
    return oci_error("NAME_INVALID", message, detail={"name": name[:256]} if name else None)


def digest_invalid(message: str, digest: str | None = None) -> ErrorResponse:
    return oci_error("DIGEST_INVALID", message, detail={"digest": digest[:256]} if digest else None)


def unsupported(method: str) -> ErrorResponse:
    return oci_error(
        "UNSUPPORTED",
        f"{method} is not supported: this is a read-only pull-through mirror",
        headers={"Allow": "GET, HEAD"},
    )


def denied(message: str) -> ErrorResponse:
    return oci_error("DENIED", message)


def error_answer(error: WarmstartError, *, not_found: str = "BLOB_UNKNOWN") -> ErrorResponse:
    """The answer for ``error``: its status and code, with ``not_found`` (MANIFEST_UNKNOWN or
    BLOB_UNKNOWN, by route) for a 404, ``Retry-After`` from its ``retry_after`` on a 429 or
    503, and a status clients do not expect from a mirror answered as 502 UNKNOWN."""
    status, code = error.status, error.code
    if status == 404:
        code = not_found
    elif status == 429:
        code = "TOOMANYREQUESTS"
    elif status not in PASSED_STATUSES:
        status, code = 502, "UNKNOWN"
    headers: dict[str, str] = {}
    retry_after = error.retry_after
    if status in (429, 503) and retry_after is not None and retry_after >= 0:
        headers["Retry-After"] = str(int(retry_after + 0.999))
    return oci_error(code, error.message, status=status, headers=headers)
