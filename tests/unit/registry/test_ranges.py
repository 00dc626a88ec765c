from __future__ import annotations

import pytest

from warmstart.registry.ranges import (
    ContentRange,
    RangeError,
    SizeConflict,
    check_partial,
    parse_content_range,
    parse_unsatisfied_range,
    range_header,
    resume_answer,
)


@pytest.mark.parametrize(
    ("start", "end", "header"),
    [(0, None, "bytes=0-"), (1234, None, "bytes=1234-"), (0, 0, "bytes=0-0")],
)
def test_range_header(start: int, end: int | None, header: str) -> None:
    assert range_header(start, end) == header


@pytest.mark.parametrize(("start", "end"), [(-1, None), (5, 4)])
def test_range_header_rejects(start: int, end: int | None) -> None:
    with pytest.raises(ValueError):
        range_header(start, end)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes 0-99/1000", ContentRange(0, 99, 1000)),
        ("bytes 100-999/1000", ContentRange(100, 999, 1000)),
        ("bytes 5-5/*", ContentRange(5, 5, None)),
        ("BYTES  7-8/9", ContentRange(7, 8, 9)),
    ],
)
def test_parse_content_range(value: str, expected: ContentRange) -> None:
    assert parse_content_range(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "bytes */1000",
        "bytes 5-4/10",
        "bytes 0-10/10",
        "items 0-1/2",
        "bytes 0-1/2,3-4/5",
        "bytes -1-2/3",
    ],
)
def test_parse_content_range_rejects(value: str | None) -> None:
    with pytest.raises(RangeError):
        parse_content_range(value)


def test_length() -> None:
    assert ContentRange(10, 19, None).length == 10


@pytest.mark.parametrize(
    ("value", "total"),
    [("bytes */1000", 1000), ("bytes 0-1/2", None), (None, None), ("junk", None)],
)
def test_unsatisfied(value: str | None, total: int | None) -> None:
    assert parse_unsatisfied_range(value) == total


@pytest.mark.parametrize(
    ("header", "start", "size", "length"),
    [
        ("bytes 100-999/1000", 100, 1000, 900),
        ("bytes 100-999/1000", 100, None, None),
        ("bytes 100-499/1000", 100, 1000, 400),  # less than the rest: allowed, we ask again
        ("bytes 100-999/*", 100, 1000, None),
    ],
)
def test_check_partial_accepts(
    header: str, start: int, size: int | None, length: int | None
) -> None:
    assert check_partial(header, start, size=size, content_length=length).start == start


@pytest.mark.parametrize(
    ("header", "start", "size", "length"),
    [
        (None, 100, 1000, None),  # no Content-Range
        ("bytes 0-999/1000", 100, 1000, None),  # whole body as 206
        ("bytes 101-999/1000", 100, 1000, None),  # wrong start
        ("bytes 100-1999/2000", 100, 1000, None),  # other total
        ("bytes 100-1000/*", 100, 1000, None),  # past the size
        ("bytes 100-999/1000", 100, 1000, 899),  # disagrees with Content-Length
    ],
)
def test_check_partial_rejects(
    header: str | None, start: int, size: int | None, length: int | None
) -> None:
    with pytest.raises(RangeError):
        check_partial(header, start, size=size, content_length=length)


def test_resume_answer_200_skips_what_we_have() -> None:
    assert resume_answer(200, 10, content_range=None, content_length=100) == (10, 100)
    assert resume_answer(200, 10, content_range=None, content_length=None, size=100) == (10, 100)
    with pytest.raises(SizeConflict):
        resume_answer(200, 0, content_range=None, content_length=99, size=100)


def test_resume_answer_206_starts_where_asked() -> None:
    assert resume_answer(206, 10, content_range="bytes 10-99/100", content_length=90) == (0, 100)
    assert resume_answer(206, 10, content_range="bytes 10-99/*", content_length=90, size=100) == (
        0,
        100,
    )
    with pytest.raises(SizeConflict):
        resume_answer(206, 10, content_range="bytes 10-99/200", content_length=90, size=100)
    with pytest.raises(RangeError) as info:
        resume_answer(206, 10, content_range="bytes 0-99/100", content_length=100, size=100)
    assert not isinstance(info.value, SizeConflict)
