"""Errors of the registry client. Every message is one line a user can act on.

All of them derive from :class:`RegistryError`, so a command line can catch that one class and
print ``str(error)``. Errors about manifest content also derive from the matching
:mod:`warmstart.oci` error, so ``except warmstart.oci.InvalidManifest`` keeps working.
"""

from __future__ import annotations

import json

from warmstart.errors import MAX_MESSAGE as MAX_ERROR_MESSAGE
from warmstart.errors import WarmstartError, one_line
from warmstart.oci import errors as oci_errors


class RegistryError(WarmstartError):
    """Base of every error raised by :mod:`warmstart.registry`: the registry answered
    something we cannot use (answered on as 502).

    ``upstream_status`` is the HTTP status the registry answered (if any), ``upstream_code``
    its error code (``MANIFEST_UNKNOWN``, ``DENIED``, ...) if the answer had an error body.
    """

    status = 502
    code = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = None,
        upstream_code: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, retry_after=retry_after)
        self.upstream_status = upstream_status
        self.upstream_code = upstream_code


class AuthError(RegistryError):
    """The registry or its token server refused us (401/403), or credentials are missing."""

    status = 401
    code = "UNAUTHORIZED"


class InsecureCredentials(AuthError):
    """Credentials would travel over plain HTTP to a host that is neither loopback nor insecure."""


class NotFound(RegistryError):
    """The repository, manifest or blob does not exist (404 / *_UNKNOWN)."""

    status = 404
    code = "NOT_FOUND"


class DigestMismatch(RegistryError):
    """Content does not hash to the digest it was asked for (or is longer than announced)."""

    def __init__(self, message: str, *, expected: str | None = None, actual: str | None = None):
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class SizeMismatch(DigestMismatch):
    """A blob delivered more bytes than its descriptor's size, or a different total length."""


class InvalidManifest(RegistryError, oci_errors.InvalidManifest):
    """The registry answered with a manifest that does not parse or validate."""


class ManifestTooLarge(InvalidManifest, oci_errors.ManifestTooLarge):
    """A manifest is over :data:`warmstart.oci.MAX_MANIFEST_BYTES`; we stopped reading it."""


class ProtocolError(RegistryError):
    """The registry broke the protocol (bad Content-Range, too many redirects, bad token answer)."""


class UpstreamUnavailable(RegistryError):
    """Retries were exhausted (5xx, 429, dropped connections, timeouts); ``retry_after`` is
    how long the registry asked us to wait, if it said."""

    status = 503
    code = "UNAVAILABLE"
    retryable = True


def parse_error_body(body: bytes) -> tuple[str | None, str | None]:
    """``{"errors": [{"code": "MANIFEST_UNKNOWN", "message": "..."}]}`` -> (code, message).

    The first error wins; a body that is not such JSON gives (None, first line of the text).
    """
    if not body:
        return None, None
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body[: MAX_ERROR_MESSAGE * 2].decode("utf-8", "replace").strip()
        return None, one_line(text) if text and not text.startswith("<") else None
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None, None
    first = errors[0]
    code = first.get("code")
    message = first.get("message")
    return (
        one_line(code, 64) if isinstance(code, str) and code else None,
        one_line(message) if isinstance(message, str) and message else None,
    )


__all__ = [
    "AuthError",
    "DigestMismatch",
    "InsecureCredentials",
    "InvalidManifest",
    "ManifestTooLarge",
    "NotFound",
    "ProtocolError",
    "RegistryError",
    "SizeMismatch",
    "UpstreamUnavailable",
    "one_line",
    "parse_error_body",
]
