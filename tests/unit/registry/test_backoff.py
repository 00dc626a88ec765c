from __future__ import annotations

import pytest

from warmstart.registry.backoff import BackoffPolicy, is_retryable_status, parse_retry_after

NOW = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (200, False),
        (400, False),
        (401, False),
        (404, False),
        (408, False),
        (429, True),
        (500, True),
        (501, False),
        (502, True),
        (503, True),
        (504, True),
        (599, True),
    ],
)
def test_retryable_status(status: int, retryable: bool) -> None:
    assert is_retryable_status(status) is retryable


@pytest.mark.parametrize(
    ("retry", "ceiling"), [(0, 0.2), (1, 0.4), (2, 0.8), (5, 6.4), (6, 10.0), (100, 10.0)]
)
def test_ceiling_doubles_up_to_the_cap(retry: int, ceiling: float) -> None:
    assert BackoffPolicy(base=0.2, cap=10.0).ceiling(retry) == pytest.approx(ceiling)


@pytest.mark.parametrize(
    ("rand", "retry", "delay"), [(0.0, 3, 0.0), (0.5, 3, 0.8), (0.999, 0, 0.1998)]
)
def test_full_jitter(rand: float, retry: int, delay: float) -> None:
    assert BackoffPolicy().delay(retry, lambda: rand) == pytest.approx(delay)


@pytest.mark.parametrize(
    ("retry_after", "expected"), [(None, 0.2), (3.0, 3.0), (0.0, 0.0), (60.0, 60.0), (61.0, None)]
)
def test_wait_before_prefers_retry_after(retry_after: float | None, expected: float | None) -> None:
    policy = BackoffPolicy(base=0.2, max_retry_after=60.0)
    assert policy.wait_before(1, lambda: 0.5, retry_after) == expected


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        ("7", 7.0),
        (" 12 ", 12.0),
        ("Tue, 14 Nov 2023 22:13:50 GMT", 30.0),
        ("Tue, 14 Nov 2023 22:00:00 GMT", 0.0),  # in the past: now
        ("-1", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


@pytest.mark.parametrize(
    "kwargs", [{"base": -1.0}, {"cap": -1.0}, {"max_attempts": 0}, {"max_retry_after": -1.0}]
)
def test_policy_validates(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(**kwargs)  # type: ignore[arg-type]
