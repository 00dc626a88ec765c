from __future__ import annotations

import pytest

from warmstart.units import format_rate, format_size, parse_rate, parse_size


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("512", 512),
        ("1k", 1000),
        ("1KiB", 1024),
        ("1.5GiB", 3 << 29),
        ("20G", 20 * 10**9),
    ],
)
def test_parse(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "ten", "1 parsec", "-1G", "1e3"])
def test_parse_rejects(text):
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


def test_format():
    assert format_size(0) == "0 B"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(3 << 30) == "3.0 GiB"


@pytest.mark.parametrize(
    ("text", "bytes_per_s"),
    [
        ("300MB/s", 300e6),
        ("25Gb/s", 3.125e9),
        ("1GiB/s", 2**30),
        ("800mbit", 100e6),  # tc's spelling
        ("100mbps", 100e6),  # tc's mbps is megabytes/s
        ("2.5 GB/s", 2.5e9),
    ],
)
def test_parse_rate(text, bytes_per_s):
    assert parse_rate(text) == pytest.approx(bytes_per_s)


@pytest.mark.parametrize("text", ["", "fast", "300", "300MB", "0MB/s", "5 parsecs/s"])
def test_parse_rate_rejects(text):
    with pytest.raises(ValueError, match="invalid rate"):
        parse_rate(text)


def test_format_rate():
    assert format_rate(300e6) == "300 MB/s"
    assert format_rate(3.125e9) == "3.12 GB/s"
