"""HTTP byte ranges for resuming blob downloads (RFC 9110 §14).

We only ever ask for an open-ended single range, ``Range: bytes=N-``, and check that a 206 answer
starts exactly at ``N``, agrees with the blob size we expect and with its own Content-Length.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

_CONTENT_RANGE_RE = re.compile(r"^bytes\s+(\d{1,19})-(\d{1,19})/(\d{1,19}|\*)$", re.IGNORECASE)
_UNSATISFIED_RE = re.compile(r"^bytes\s+\*/(\d{1,19})$", re.IGNORECASE)


class RangeError(ValueError):
    """A Content-Range header that is malformed or does not answer what we asked."""


class SizeConflict(RangeError):
    """The answer says the blob has another length than the one we expect."""


def range_header(start: int, end: int | None = None) -> str:
    """``Range`` value for bytes ``start`` to ``end`` (inclusive), or to the end if None."""
    if start < 0:
        raise ValueError(f"range start {start} is negative")
    if end is None:
        return f"bytes={start}-"
    if end < start:
        raise ValueError(f"range end {end} is before its start {start}")
    return f"bytes={start}-{end}"


@dataclass(frozen=True)
class ContentRange:
    start: int
    end: int  # inclusive
    total: int | None  # None for ``/*``

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def parse_content_range(value: str | None) -> ContentRange:
    """``bytes 100-199/1000`` or ``bytes 100-199/*``."""
    if value is None:
        raise RangeError("206 answer without Content-Range")
    m = _CONTENT_RANGE_RE.match(value.strip())
    if not m:
        raise RangeError(f"malformed Content-Range {value[:100]!r}")
    start, end = int(m.group(1)), int(m.group(2))
    total = None if m.group(3) == "*" else int(m.group(3))
    if end < start:
        raise RangeError(f"Content-Range {value!r} ends before it starts")
    if total is not None and end >= total:
        raise RangeError(f"Content-Range {value!r} ends past the total length")
    return ContentRange(start, end, total)


def parse_unsatisfied_range(value: str | None) -> int | None:
    """The total length from a 416 answer's ``Content-Range: bytes */1000``, if present."""
    if value is None:
        return None
    m = _UNSATISFIED_RE.match(value.strip())
    return int(m.group(1)) if m else None


def check_partial(
    content_range: str | None,
    start: int,
    *,
    size: int | None = None,
    content_length: int | None = None,
) -> ContentRange:
    """Validate a 206 answer to ``Range: bytes=<start>-``; return its parsed Content-Range.

    ``size`` is the full length we expect (descriptor size), ``content_length`` the answer's
    Content-Length header. A server may send less than the rest (we then ask again), never
    a range starting elsewhere or a total other than ``size``.
    """
    cr = parse_content_range(content_range)
    if cr.start != start:
        raise RangeError(f"asked for bytes from {start} but got Content-Range {content_range!r}")
    if size is not None and cr.total is not None and cr.total != size:
        raise RangeError(f"Content-Range {content_range!r} says the blob is not {size} bytes")
    if size is not None and cr.end >= size:
        raise RangeError(f"Content-Range {content_range!r} goes past the blob size {size}")
    if content_length is not None and content_length != cr.length:
        raise RangeError(
            f"Content-Range {content_range!r} disagrees with Content-Length {content_length}"
        )
    return cr


def resume_answer(
    status: int,
    start: int,
    *,
    content_range: str | None,
    content_length: int | None,
    size: int | None = None,
) -> tuple[int, int | None]:
    """(bytes to skip, full length or None) of a 200 or 206 answer to ``Range: bytes=<start>-``.

    A 200 starts at byte 0, so its first ``start`` bytes are skipped; a 206 must start at
    ``start`` (:func:`check_partial`). :class:`SizeConflict` if the answer's full length is not
    ``size``, :class:`RangeError` for any other bad Content-Range.
    """
    if status == 200:
        if size is not None and content_length is not None and content_length != size:
            raise SizeConflict(f"the answer says the blob is {content_length} bytes, not {size}")
        return start, content_length if content_length is not None else size
    if status != 206:
        raise ValueError(f"status {status} is not an answer with a body to resume")
    try:
        cr = check_partial(content_range, start, size=size, content_length=content_length)
    except RangeError as e:
        total = _total_or_none(content_range)
        if size is not None and total is not None and total != size:
            raise SizeConflict(str(e)) from None
        raise
    return 0, cr.total if cr.total is not None else size


class BlobAnswer(Protocol):
    """What :func:`resume_response` reads of an HTTP answer (aiohttp's or the transport's)."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content_length(self) -> int | None: ...


def resume_response(answer: BlobAnswer, start: int, size: int | None) -> tuple[int, int | None]:
    """:func:`resume_answer` of a 200 or 206 answer's status and headers."""
    return resume_answer(
        answer.status,
        start,
        content_range=answer.headers.get("Content-Range"),
        content_length=answer.content_length,
        size=size,
    )


def _total_or_none(content_range: str | None) -> int | None:
    try:
        return parse_content_range(content_range).total
    except RangeError:
        return None


__all__ = [
    "ContentRange",
    "RangeError",
    "SizeConflict",
    "check_partial",
    "parse_content_range",
    "parse_unsatisfied_range",
    "range_header",
    "resume_answer",
    "resume_response",
]
