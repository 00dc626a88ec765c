from __future__ import annotations

import pytest

from warmstart_harness.bench.stats import median, rate_mb_s, rotated


def test_median_and_rate():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([1.0, 2.0]) == 1.5
    assert rate_mb_s(2_000_000, 2.0) == 1.0
    with pytest.raises(ValueError):
        median([])


def test_rotation_puts_each_first_once():
    tools = ["a", "b", "c"]
    firsts = {rotated(tools, r)[0] for r in range(3)}
    assert firsts == set(tools)
    assert sorted(rotated(tools, 7)) == tools
