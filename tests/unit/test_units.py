from __future__ import annotations

import pytest

from warmstart.units import format_size, parse_size


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
