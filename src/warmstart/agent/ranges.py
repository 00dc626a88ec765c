"""``Range`` requests on blobs (RFC 9110 §14), decided without any I/O.

One range per request, as containerd, skopeo and podman send them:

* ``bytes=a-b`` (``b`` clamped to the last byte), ``bytes=a-``, ``bytes=-n`` (the last ``n``
  bytes, all of them if the blob is shorter) -> 206 with ``Content-Range``.
* A range starting at or past the end, ``bytes=-0``, or any range of an empty blob -> 416 with
  ``Content-Range: bytes */size``.
* A malformed ``bytes`` range (``bytes=abc``, ``bytes=5-3``, ``bytes=``) -> 416 too: a client that
  sent garbage learns so at once instead of silently getting the whole blob (Go's
  ``http.ServeContent``, and so docker-registry, answer the same; RFC 9110 §14.2 allows it).
* Ignored (-> 200 with the whole blob), as RFC 9110 §14.2 allows or requires: a range unit other
  than ``bytes``, several ranges (we never send multipart bodies), an ``If-Range`` that does not
  match the blob's strong ETag, and ``Range`` on anything but GET (the server's concern).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

MAX_RANGE_HEADER = 1024
_NUMBER = re.compile(r"^[0-9]{1,19}$")


class RangeKind(Enum):
    FULL = "full"  # 200, the whole blob
    PARTIAL = "partial"  # 206, bytes start..end (inclusive)
    UNSATISFIABLE = "unsatisfiable"  # 416


@dataclass(frozen=True)
class ByteRange:
    """What to send for one blob of ``size`` bytes."""

    kind: RangeKind
    size: int
    start: int = 0
    end: int = -1  # inclusive; -1 when nothing is sent

    @property
    def length(self) -> int:
        """Bytes in the body (0 for 416)."""
        if self.kind is RangeKind.UNSATISFIABLE:
            return 0
        return self.end - self.start + 1

    @property
    def status(self) -> int:
        return {RangeKind.FULL: 200, RangeKind.PARTIAL: 206, RangeKind.UNSATISFIABLE: 416}[
            self.kind
        ]

    @property
    def content_range(self) -> str | None:
        """The ``Content-Range`` header for 206 and 416 answers, else None."""
        if self.kind is RangeKind.PARTIAL:
            return f"bytes {self.start}-{self.end}/{self.size}"
        if self.kind is RangeKind.UNSATISFIABLE:
            return f"bytes */{self.size}"
        return None


def full(size: int) -> ByteRange:
    return ByteRange(RangeKind.FULL, size, 0, size - 1)


def unsatisfiable(size: int) -> ByteRange:
    return ByteRange(RangeKind.UNSATISFIABLE, size, 0, -1)


def _single(spec: str, size: int) -> ByteRange | None:
    """One ``byte-range-spec``; None if malformed."""
    first, dash, last = spec.partition("-")
    first, last = first.strip(), last.strip()
    if not dash:
        return None
    if not first:  # suffix range: the last ``n`` bytes
        if not _NUMBER.match(last):
            return None
        n = int(last)
        if n == 0 or size == 0:
            return unsatisfiable(size)
        return ByteRange(RangeKind.PARTIAL, size, max(0, size - n), size - 1)
    if not _NUMBER.match(first) or (last and not _NUMBER.match(last)):
        return None
    start = int(first)
    end = int(last) if last else None
    if end is not None and end < start:
        return None  # RFC 9110 §14.1.1: invalid
    if start >= size:
        return unsatisfiable(size)
    end = size - 1 if end is None else min(end, size - 1)
    return ByteRange(RangeKind.PARTIAL, size, start, end)


def evaluate_range(
    range_header: str | None,
    size: int,
    *,
    if_range: str | None = None,
    etag: str | None = None,
) -> ByteRange:
    """Decide what a GET with ``Range: range_header`` on a blob of ``size`` bytes answers.

    ``etag`` is the blob's strong ETag (``"sha256:..."``); an ``If-Range`` that is not exactly
    that value (a date, a weak or another tag) makes the server ignore the range.
    """
    if size < 0:
        raise ValueError(f"blob size must be >= 0, not {size}")
    if range_header is None:
        return full(size)
    if if_range is not None and (etag is None or if_range.strip() != etag):
        return full(size)
    text = range_header.strip()
    unit, eq, specs = text.partition("=")
    if not eq or unit.strip().lower() != "bytes":
        # RFC 9110 §14.2: a range unit we do not understand MUST be ignored. ``bytes`` without
        # ``=`` is a malformed bytes range, not another unit.
        if unit.strip().lower() == "bytes" or text.lower() == "bytes":
            return unsatisfiable(size)
        return full(size)
    if len(text) > MAX_RANGE_HEADER:
        return unsatisfiable(size)
    parts = [p.strip() for p in specs.split(",")]
    parts = [p for p in parts if p]  # RFC 9110 §5.6.1: empty list elements are ignored
    if not parts:
        return unsatisfiable(size)
    decided = [_single(p, size) for p in parts]
    if any(d is None for d in decided):
        return unsatisfiable(size)
    if len(decided) > 1:
        return full(size)  # multipart/byteranges is not supported: ignore (RFC 9110 §14.2)
    result = decided[0]
    assert result is not None
    return result
