"""Builders for spike-scenario records and timelines used by several tests."""

from __future__ import annotations

from dataclasses import replace

from warmstart_harness.bench.scaleout_types import RequestRecord, SpikeMetrics, TimelinePoint


def record(
    scheduled: float,
    sent: float | None = None,
    done: float | None = None,
    status: int | None = 200,
    *,
    error: str | None = None,
    retries: int = 0,
    index: int = 0,
    tokens: tuple[int, int] = (0, 0),
) -> RequestRecord:
    """A record; ``sent`` defaults to ``scheduled``, a non-200 status gets an error text."""
    if status != 200 and error is None:
        error = f"HTTP {status}" if status else "timeout"
    return RequestRecord(
        index=index,
        scheduled_s=scheduled,
        sent_s=scheduled if sent is None else sent,
        done_s=done,
        status=status,
        error=error,
        retries=retries,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
    )


def timeline(*points: tuple[float, int]) -> list[TimelinePoint]:
    """``(t, ready)`` pairs."""
    return [TimelinePoint(t, ready) for t, ready in points]


BASE_METRICS = SpikeMetrics(
    requests=100,
    ok=100,
    errors=0,
    lost=0,
    retries=0,
    p50_s=10.0,
    p90_s=20.0,
    p99_s=40.0,
    mean_s=12.0,
    throughput_rps=5.0,
    duration_s=20.0,
    max_send_lag_s=0.01,
    slots_per_replica=4,
    burst_start_s=5.0,
    hold_s=2.0,
    time_to_capacity_s=60.0,
    observed_s=100.0,
)


def metrics(**changes: object) -> SpikeMetrics:
    return replace(BASE_METRICS, **changes)  # type: ignore[arg-type]
