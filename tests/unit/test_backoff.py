import itertools
import math

import pytest

from warmstart.backoff import Backoff


def test_ceiling_doubles_from_base_up_to_the_cap() -> None:
    backoff = Backoff(0.5, cap=3.0)
    assert [backoff.ceiling(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_negative_retry_is_the_first_and_a_huge_one_the_cap() -> None:
    backoff = Backoff(10.0, cap=300.0)
    assert backoff.ceiling(-3) == 10.0
    assert backoff.ceiling(10**9) == 300.0


def test_no_cap_and_another_factor() -> None:
    assert [Backoff(0.5).ceiling(n) for n in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert [Backoff(0.5, cap=2.0, factor=4.0).ceiling(n) for n in range(3)] == [0.5, 2.0, 2.0]
    assert Backoff(1.0).ceiling(10**6) < math.inf


def test_jittered_scales_the_ceiling_by_the_random_source() -> None:
    backoff = Backoff(0.2, cap=10.0)
    assert backoff.jittered(2, lambda: 0.5) == pytest.approx(0.4)
    assert backoff.jittered(10, lambda: 0.0) == 0.0
    assert backoff.jittered(10, lambda: 0.999) < 10.0


def test_delays_yield_the_ceilings_in_order() -> None:
    delays = Backoff(0.001, cap=0.02).delays()
    assert list(itertools.islice(delays, 7)) == pytest.approx(
        [0.001, 0.002, 0.004, 0.008, 0.016, 0.02, 0.02]
    )


@pytest.mark.parametrize(
    "kwargs", [{"base": -1.0}, {"base": 1.0, "cap": -1.0}, {"base": 1.0, "factor": 0.5}]
)
def test_rejects_delays_that_shrink_or_are_negative(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)
