"""Errors raised by the content store. Each message is one line a user can act on."""

from __future__ import annotations

from warmstart.errors import WarmstartError


class StoreError(WarmstartError):
    """Base of every error raised by :mod:`warmstart.store`: the node's content store cannot
    serve (answered as 503: another node, or this one later, may)."""

    status = 503
    code = "UNAVAILABLE"
    retryable = True


class BlobNotFound(StoreError):
    """The blob is not in the store (and no write of it is in progress)."""


class StoreDigestMismatch(StoreError):
    """The bytes received do not hash to the digest they were requested under."""


class StoreSizeMismatch(StoreError):
    """The source delivered more or fewer bytes than the declared size."""


class BlobTooLarge(StoreError):
    """A blob is larger than the caller's limit (e.g. a manifest over 4 MiB)."""


class BudgetExceeded(StoreError):
    """Room for a new blob cannot be made without evicting pinned or in-flight content."""


def format_bytes(n: int) -> str:
    """``1536`` -> ``'1.5 KiB'``; exact bytes below 1 KiB."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


__all__ = [
    "BlobNotFound",
    "BlobTooLarge",
    "BudgetExceeded",
    "StoreDigestMismatch",
    "StoreError",
    "StoreSizeMismatch",
    "format_bytes",
]
