from __future__ import annotations

import pytest

from warmstart.agent.ranges import RangeKind, evaluate_range

SIZE = 1000
ETAG = '"sha256:' + "a" * 64 + '"'


@pytest.mark.parametrize(
    ("header", "kind", "start", "end"),
    [
        (None, RangeKind.FULL, 0, 999),
        ("bytes=0-0", RangeKind.PARTIAL, 0, 0),
        ("bytes=10-19", RangeKind.PARTIAL, 10, 19),
        ("bytes=0-999", RangeKind.PARTIAL, 0, 999),
        ("bytes=0-5000", RangeKind.PARTIAL, 0, 999),  # end clamped
        ("bytes=999-999", RangeKind.PARTIAL, 999, 999),
        ("bytes=500-", RangeKind.PARTIAL, 500, 999),
        ("bytes=0-", RangeKind.PARTIAL, 0, 999),
        ("bytes=-10", RangeKind.PARTIAL, 990, 999),
        ("bytes=-1000", RangeKind.PARTIAL, 0, 999),
        ("bytes=-99999", RangeKind.PARTIAL, 0, 999),  # longer suffix: the whole blob, still 206
        ("Bytes=1-2", RangeKind.PARTIAL, 1, 2),  # the unit is case-insensitive
        (" bytes = 1 - 2 ", RangeKind.PARTIAL, 1, 2),
        ("bytes=1-2,", RangeKind.PARTIAL, 1, 2),  # empty list elements are ignored
        # unsatisfiable -> 416
        ("bytes=1000-", RangeKind.UNSATISFIABLE, 0, -1),
        ("bytes=1000-2000", RangeKind.UNSATISFIABLE, 0, -1),
        ("bytes=-0", RangeKind.UNSATISFIABLE, 0, -1),
        # malformed bytes ranges -> 416 (our choice; RFC 9110 §14.2 allows ignore or reject)
        ("bytes=abc", RangeKind.UNSATISFIABLE, 0, -1),
        ("bytes=5-3", RangeKind.UNSATISFIABLE, 0, -1),
        ("bytes=", RangeKind.UNSATISFIABLE, 0, -1),
        ("bytes=-", RangeKind.UNSATISFIABLE, 0, -1),
        ("bytes=1", RangeKind.UNSATISFIABLE, 0, -1),
        ("bytes=0x10-20", RangeKind.UNSATISFIABLE, 0, -1),
        ("bytes=+1-2", RangeKind.UNSATISFIABLE, 0, -1),
        ("bytes=1-2-3", RangeKind.UNSATISFIABLE, 0, -1),
        ("bytes=1-2,abc", RangeKind.UNSATISFIABLE, 0, -1),
        ("bytes", RangeKind.UNSATISFIABLE, 0, -1),
        ("bytes=" + "9" * 30 + "-", RangeKind.UNSATISFIABLE, 0, -1),
        ("bytes=" + "1-2," * 400, RangeKind.UNSATISFIABLE, 0, -1),  # too long
        # ignored -> 200 with the whole blob
        ("items=0-5", RangeKind.FULL, 0, 999),  # unknown unit: MUST be ignored
        ("0-5", RangeKind.FULL, 0, 999),
        ("", RangeKind.FULL, 0, 999),
        ("bytes=0-1,5-6", RangeKind.FULL, 0, 999),  # several ranges: no multipart, ignored
    ],
)
def test_range_table(header: str | None, kind: RangeKind, start: int, end: int) -> None:
    r = evaluate_range(header, SIZE)
    assert (r.kind, r.start, r.end) == (kind, start, end)
    assert r.size == SIZE


def test_statuses_and_content_range() -> None:
    full = evaluate_range(None, SIZE)
    assert (full.status, full.content_range, full.length) == (200, None, 1000)
    part = evaluate_range("bytes=10-19", SIZE)
    assert (part.status, part.content_range, part.length) == (206, "bytes 10-19/1000", 10)
    bad = evaluate_range("bytes=2000-", SIZE)
    assert (bad.status, bad.content_range, bad.length) == (416, "bytes */1000", 0)


def test_empty_blob() -> None:
    assert evaluate_range(None, 0).length == 0
    assert evaluate_range(None, 0).status == 200
    for header in ("bytes=0-", "bytes=0-0", "bytes=-1"):
        r = evaluate_range(header, 0)
        assert r.kind is RangeKind.UNSATISFIABLE
        assert r.content_range == "bytes */0"


def test_if_range() -> None:
    assert evaluate_range("bytes=1-2", SIZE, if_range=ETAG, etag=ETAG).kind is RangeKind.PARTIAL
    other = '"sha256:' + "b" * 64 + '"'
    assert evaluate_range("bytes=1-2", SIZE, if_range=other, etag=ETAG).kind is RangeKind.FULL
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert evaluate_range("bytes=1-2", SIZE, if_range=date, etag=ETAG).kind is RangeKind.FULL
    weak = "W/" + ETAG
    assert evaluate_range("bytes=1-2", SIZE, if_range=weak, etag=ETAG).kind is RangeKind.FULL


def test_negative_size_is_a_bug() -> None:
    with pytest.raises(ValueError):
        evaluate_range(None, -1)
