"""LLM request traces (Azure LLM inference trace schema): parse, window, compress, find the burst.

A trace is a CSV with a header naming at least ``TIMESTAMP``, ``ContextTokens`` and
``GeneratedTokens`` (any order, extra columns ignored, names matched case-insensitively).
``TIMESTAMP`` is an ISO 8601 date-time (``2023-11-16 18:15:46.6805900``: up to 7 fractional
digits, as Azure writes them) or a number of seconds; every row must use the same kind. Offsets
are seconds after the earliest request. Everything but :func:`read_trace` is pure.
"""

from __future__ import annotations

import bisect
import csv
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import pairwise
from pathlib import Path

COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_FRACTION = re.compile(r"^(.*[T ]\d{2}:\d{2}:\d{2})\.(\d+)(.*)$")


class TraceError(ValueError):
    """A trace that cannot be used; the message is one line naming the file and line."""


@dataclass(frozen=True)
class TraceRequest:
    offset_s: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Window:
    """``[start_s, end_s)`` of a trace and how many requests (or how much weight) fall in it."""

    start_s: float
    end_s: float
    requests: int
    weight: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class TraceSummary:
    requests: int
    duration_s: float  # first to last request
    mean_rate_rps: float  # requests / duration (0 for a single request)
    peak_rate_rps: float  # most requests in any window of peak_window_s, per second
    peak_window_s: float
    input_tokens: int
    output_tokens: int


def _timestamp(raw: str) -> datetime:
    """ISO date-time with any number of fractional digits (Python keeps microseconds)."""
    m = _FRACTION.match(raw)
    if m:
        raw = f"{m.group(1)}.{(m.group(2) + '000000')[:6]}{m.group(3)}"
    return datetime.fromisoformat(raw)


def _tokens(raw: str, column: str, where: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise TraceError(f"{where}: {column} {raw!r} is not an integer") from None
    if value < 0:
        raise TraceError(f"{where}: {column} {value} is negative")
    return value


def _stamp(raw: str, where: str) -> tuple[float | datetime, str]:
    """A TIMESTAMP cell and its kind: "seconds", "a naive date-time" or "a zoned date-time"."""
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise TraceError(f"{where}: TIMESTAMP {raw!r} is not a finite number")
        return seconds, "seconds"
    try:
        stamp = _timestamp(raw)
    except ValueError:
        raise TraceError(f"{where}: TIMESTAMP {raw!r} is not a date-time") from None
    return stamp, "a zoned date-time" if stamp.tzinfo else "a naive date-time"


def _offsets(stamps: Sequence[float | datetime]) -> list[float]:
    """Seconds after the earliest stamp (all of one kind)."""
    if isinstance(stamps[0], datetime):
        dates = [s for s in stamps if isinstance(s, datetime)]
        first_date = min(dates)
        return [(d - first_date).total_seconds() for d in dates]
    numbers = [float(s) for s in stamps if not isinstance(s, datetime)]
    first = min(numbers)
    return [n - first for n in numbers]


def _columns(header: Sequence[str], where: str) -> tuple[int, int, int]:
    names = [h.strip().lstrip("\ufeff").lower() for h in header]
    found = []
    for column in COLUMNS:
        if column.lower() not in names:
            raise TraceError(
                f"{where}: no {column} column (header: {','.join(header)!r}; "
                f"need {','.join(COLUMNS)})"
            )
        found.append(names.index(column.lower()))
    return found[0], found[1], found[2]


def _rows(lines: Iterable[str], source: str) -> Iterator[tuple[int, list[str]]]:
    """Non-blank CSV rows with their (physical) line numbers; csv errors become TraceError."""
    reader = csv.reader(lines, strict=True)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise TraceError(f"{source} line {reader.line_num}: {e}") from None
        if any(cell.strip() for cell in row):
            yield reader.line_num, row


def parse_trace(lines: Iterable[str], source: str = "trace") -> list[TraceRequest]:
    """Parse CSV text into requests sorted by offset (stable for equal times).

    Blank lines are skipped. Raises :class:`TraceError` naming ``source`` and the line number for
    a missing column, a short row, a bad timestamp or token count, mixed timestamp kinds, or a
    trace without requests.
    """
    rows = _rows(lines, source)
    first = next(rows, None)
    if first is None:
        raise TraceError(f"{source}: empty trace (no header, no requests)")
    i_ts, i_in, i_out = _columns(first[1], f"{source} line {first[0]}")
    width = max(i_ts, i_in, i_out) + 1
    stamps: list[float | datetime] = []
    counts: list[tuple[int, int]] = []
    kind = ""
    for line, row in rows:
        where = f"{source} line {line}"
        if len(row) < width:
            raise TraceError(f"{where}: {len(row)} fields, expected at least {width}")
        stamp, this_kind = _stamp(row[i_ts].strip(), where)
        if kind and kind != this_kind:
            raise TraceError(
                f"{where}: TIMESTAMP {row[i_ts].strip()!r} is {this_kind}, earlier rows {kind}"
            )
        kind = this_kind
        stamps.append(stamp)
        counts.append(
            (
                _tokens(row[i_in], "ContextTokens", where),
                _tokens(row[i_out], "GeneratedTokens", where),
            )
        )
    if not stamps:
        raise TraceError(f"{source}: empty trace (a header but no requests)")
    offsets = _offsets(stamps)
    requests = [TraceRequest(o, i, g) for o, (i, g) in zip(offsets, counts, strict=True)]
    return sorted(requests, key=lambda r: r.offset_s)


def read_trace(path: Path) -> list[TraceRequest]:
    """Read and parse a trace file (see :func:`parse_trace`)."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return parse_trace(f, source=str(path))
    except OSError as e:
        raise TraceError(f"{path}: cannot read trace: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise TraceError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def select_window(
    requests: Sequence[TraceRequest],
    start_s: float = 0.0,
    duration_s: float | None = None,
    max_requests: int | None = None,
    *,
    rebase: bool = True,
) -> list[TraceRequest]:
    """Requests with ``start_s <= offset < start_s + duration_s``, at most ``max_requests``.

    ``duration_s=None`` runs to the end; ``max_requests`` keeps the earliest. With ``rebase``,
    offsets become relative to ``start_s`` (a quiet gap at the window's start is kept).
    """
    if duration_s is not None and duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, not {duration_s}")
    if max_requests is not None and max_requests < 0:
        raise ValueError(f"max_requests must be >= 0, not {max_requests}")
    end = math.inf if duration_s is None else start_s + duration_s
    chosen = [r for r in requests if start_s <= r.offset_s < end]
    if max_requests is not None:
        chosen = chosen[:max_requests]
    if rebase:
        chosen = [replace(r, offset_s=r.offset_s - start_s) for r in chosen]
    return chosen


def compress(requests: Sequence[TraceRequest], factor: float) -> list[TraceRequest]:
    """Replay ``factor`` times faster: every offset divided by ``factor`` (1 = real time)."""
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"compression factor must be a positive number, not {factor}")
    return [replace(r, offset_s=r.offset_s / factor) for r in requests]


def busiest_window(
    requests: Sequence[TraceRequest],
    length_s: float,
    weight: Callable[[TraceRequest], float] | None = None,
) -> Window:
    """The window ``[t, t + length_s)`` holding the most requests (or the most ``weight``).

    ``requests`` must be sorted by offset. Windows start at a request's offset (a best window
    can always be moved to start at one); the earliest of equally busy windows wins. ``weight``
    scores a request (e.g. its service time, to find the heaviest surge rather than the densest).
    """
    if length_s <= 0:
        raise ValueError(f"window length must be > 0, not {length_s}")
    if not requests:
        raise ValueError("no requests to find a burst in")
    offsets = [r.offset_s for r in requests]
    if any(b < a for a, b in pairwise(offsets)):
        raise ValueError("requests must be sorted by offset")
    weights = [1.0 if weight is None else float(weight(r)) for r in requests]
    prefix = [0.0]
    for w in weights:
        prefix.append(prefix[-1] + w)
    best = (-math.inf, 0, 0)
    for i, start in enumerate(offsets):
        j = bisect.bisect_left(offsets, start + length_s, lo=i)
        score = prefix[j] - prefix[i]
        if score > best[0]:
            best = (score, i, j)
    score, i, j = best
    return Window(offsets[i], offsets[i] + length_s, j - i, score)


def spike_slice(
    requests: Sequence[TraceRequest], burst_s: float, lead_s: float = 0.0
) -> tuple[list[TraceRequest], Window]:
    """The busiest ``burst_s`` of the trace with ``lead_s`` of ordinary traffic before it.

    Returns the requests rebased so the slice starts at 0 (the burst starts at
    ``min(lead_s, burst.start_s)``), and the burst's window in the rebased time.
    """
    if lead_s < 0:
        raise ValueError(f"lead_s must be >= 0, not {lead_s}")
    burst = busiest_window(requests, burst_s)
    start = max(0.0, burst.start_s - lead_s)
    chosen = select_window(requests, start, burst.end_s - start)
    shifted = Window(burst.start_s - start, burst.end_s - start, burst.requests, burst.weight)
    return chosen, shifted


def summarize(requests: Sequence[TraceRequest], peak_window_s: float = 1.0) -> TraceSummary:
    """Count, span, mean and peak rate, token totals of sorted ``requests``."""
    if not requests:
        raise ValueError("no requests to summarize")
    duration = requests[-1].offset_s - requests[0].offset_s
    peak = busiest_window(requests, peak_window_s)
    return TraceSummary(
        requests=len(requests),
        duration_s=duration,
        mean_rate_rps=len(requests) / duration if duration > 0 else 0.0,
        peak_rate_rps=peak.requests / peak_window_s,
        peak_window_s=peak_window_s,
        input_tokens=sum(r.input_tokens for r in requests),
        output_tokens=sum(r.output_tokens for r in requests),
    )
