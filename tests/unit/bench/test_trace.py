from __future__ import annotations

from pathlib import Path

import pytest

from warmstart_harness.bench.scaleout_config import BUNDLED_TRACE
from warmstart_harness.bench.trace import (
    TraceError,
    TraceRequest,
    Window,
    busiest_window,
    compress,
    parse_trace,
    read_trace,
    select_window,
    spike_slice,
    summarize,
)

HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
REAL_TRACE = BUNDLED_TRACE


def reqs(*offsets: float) -> list[TraceRequest]:
    return [TraceRequest(o, 10, 1) for o in offsets]


def test_parses_azure_timestamps_and_sorts():
    text = (
        HEADER
        + "2023-11-16 18:15:50.9951690,396,109\n"
        + "2023-11-16 18:15:46.6805900,374,44\n"
        + "\n"
        + "2023-11-16 18:15:51.2224670,879,55\n"
    )
    got = parse_trace(text.splitlines(keepends=True))
    assert [(r.input_tokens, r.output_tokens) for r in got] == [(374, 44), (396, 109), (879, 55)]
    assert [r.offset_s for r in got] == pytest.approx([0.0, 4.314579, 4.541877])


def test_columns_in_any_order_extra_columns_and_numeric_seconds():
    text = "generatedtokens,extra,timestamp,contexttokens\n5,x,12.5,100\n7,y,10,200\n"
    assert parse_trace(text.splitlines()) == [TraceRequest(0.0, 200, 7), TraceRequest(2.5, 100, 5)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "t.csv: empty trace (no header"),
        (HEADER, "t.csv: empty trace (a header but no requests)"),
        ("TIMESTAMP,ContextTokens\n1,2\n", "t.csv line 1: no GeneratedTokens column"),
        (HEADER + "1,2,3\n2,abc,3\n", "t.csv line 3: ContextTokens 'abc' is not an integer"),
        (HEADER + "1,2,-3\n", "t.csv line 2: GeneratedTokens -3 is negative"),
        (HEADER + "1,2\n", "t.csv line 2: 2 fields, expected at least 3"),
        (HEADER + "\n\nyesterday,2,3\n", "t.csv line 4: TIMESTAMP 'yesterday' is not a date-time"),
        (HEADER + "nan,2,3\n", "t.csv line 2: TIMESTAMP 'nan' is not a finite number"),
        (HEADER + '1,2,3\n"2,3,4\n', "t.csv line 3: unexpected end of data"),
        (HEADER + "1.5,2,3\n2023-11-16 18:15:46,2,3\n", "t.csv line 3: TIMESTAMP"),
        (
            HEADER + "2023-11-16 18:15:46Z,2,3\n2023-11-16 18:15:47,2,3\n",
            "is a naive date-time, earlier rows a zoned date-time",
        ),
    ],
)
def test_bad_traces_name_the_line(text: str, message: str):
    with pytest.raises(TraceError) as err:
        parse_trace(text.splitlines(keepends=True), source="t.csv")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_read_trace_errors_are_one_line(tmp_path: Path):
    with pytest.raises(TraceError, match="cannot read trace"):
        read_trace(tmp_path / "missing.csv")
    binary = tmp_path / "bin.csv"
    binary.write_bytes(HEADER.encode() + b"\xff\xfe,1,2\n")
    with pytest.raises(TraceError, match="not UTF-8"):
        read_trace(binary)


@pytest.mark.parametrize(
    ("start", "duration", "max_requests", "rebase", "expected"),
    [
        (0.0, None, None, True, [0.0, 1.0, 2.5, 4.0, 9.0]),
        (1.0, 3.0, None, True, [0.0, 1.5]),  # [1, 4): 4.0 is out
        (0.5, 3.0, None, False, [1.0, 2.5]),
        (0.5, 3.0, None, True, [0.5, 2.0]),  # the quiet gap at the start is kept
        (0.0, None, 2, True, [0.0, 1.0]),
        (10.0, 5.0, None, True, []),
    ],
)
def test_select_window(start, duration, max_requests, rebase, expected):
    got = select_window(reqs(0, 1, 2.5, 4, 9), start, duration, max_requests, rebase=rebase)
    assert [r.offset_s for r in got] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("factor", "expected"), [(1, [0, 3, 6]), (3, [0, 1, 2]), (0.5, [0, 6, 12])]
)
def test_compress(factor, expected):
    got = compress(reqs(0, 3, 6), factor)
    assert [r.offset_s for r in got] == pytest.approx(expected)
    assert all(r.input_tokens == 10 for r in got)


@pytest.mark.parametrize("factor", [0, -2, float("inf"), float("nan")])
def test_compress_rejects_bad_factors(factor):
    with pytest.raises(ValueError):
        compress(reqs(0, 1), factor)


@pytest.mark.parametrize(
    ("offsets", "length", "expected"),
    [
        ([0, 10, 10.2, 10.4, 10.9, 20], 1.0, Window(10, 11, 4, 4.0)),
        ([0, 10, 10.2, 10.4, 11.0, 20], 1.0, Window(10, 11, 3, 3.0)),  # end is exclusive
        ([0, 1, 2, 3], 1.5, Window(0, 1.5, 2, 2.0)),  # ties: the earliest
        ([5], 2.0, Window(5, 7, 1, 1.0)),
    ],
)
def test_busiest_window(offsets, length, expected):
    assert busiest_window(reqs(*offsets), length) == expected


def test_busiest_window_by_weight_prefers_heavy_requests():
    trace = [TraceRequest(0, 1, 100), TraceRequest(5, 1, 1), TraceRequest(5.1, 1, 1)]
    assert busiest_window(trace, 1.0).start_s == 5
    heavy = busiest_window(trace, 1.0, weight=lambda r: r.output_tokens)
    assert (heavy.start_s, heavy.weight) == (0, 100)


def test_busiest_window_rejects_bad_input():
    with pytest.raises(ValueError):
        busiest_window([], 1.0)
    with pytest.raises(ValueError):
        busiest_window(reqs(0, 1), 0)
    with pytest.raises(ValueError, match="sorted"):
        busiest_window(reqs(2, 1), 1.0)


def test_spike_slice_keeps_a_lead_in_before_the_burst():
    trace = reqs(0, 5, 8, 9, 20, 20.1, 20.2, 20.3, 30)
    chosen, burst = spike_slice(trace, burst_s=1.0, lead_s=12.0)
    assert burst == Window(12.0, 13.0, 4, 4.0)
    assert [r.offset_s for r in chosen] == pytest.approx([0, 1, 12, 12.1, 12.2, 12.3])
    chosen, burst = spike_slice(trace, burst_s=1.0, lead_s=100.0)  # lead clipped at the start
    assert burst.start_s == 20 and chosen[0].offset_s == 0


def test_summarize():
    s = summarize(reqs(0, 0.1, 0.2, 5, 10))
    assert (s.requests, s.duration_s, s.mean_rate_rps, s.peak_rate_rps) == (5, 10, 0.5, 3)
    assert (s.input_tokens, s.output_tokens) == (50, 5)
    assert summarize(reqs(3)).mean_rate_rps == 0.0


def test_the_shared_azure_trace():
    trace = read_trace(REAL_TRACE)
    s = summarize(trace)
    assert s.requests == 19366
    assert 3400 < s.duration_s < 3600
    assert busiest_window(trace, 60).requests > 60 * s.mean_rate_rps
