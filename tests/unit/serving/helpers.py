"""Builders for the serving policy tests: specs, sample series and snapshots (time is data)."""

from __future__ import annotations

from typing import Any

from warmstart.serving.autoscaler import LoadSnapshot
from warmstart.serving.spec import EndpointSpec, build_spec

NOW = 1000.0


def spec(**fields: Any) -> EndpointSpec:
    """A valid spec with ``target_concurrency = 1`` and ``max_replicas = 10`` unless given."""
    data: dict[str, Any] = {
        "name": "llm",
        "image": "registry.example/llm/qwen3:8b",
        "target_concurrency": 1.0,
        "max_replicas": 10,
    }
    data.update(fields)
    return build_spec(data)


def series(*segments: tuple[int, float], now: float = NOW) -> tuple[tuple[float, float], ...]:
    """One sample a second ending at ``now``; ``segments`` are (seconds, concurrency), oldest
    first. ``series((54, 0), (6, 10))``: 54 s idle, then the last 6 s at 10 in flight."""
    total = sum(n for n, _ in segments)
    out: list[tuple[float, float]] = []
    t = now - total + 1
    for n, value in segments:
        for _ in range(n):
            out.append((t, float(value)))
            t += 1
    return tuple(out)


def snap(
    ready: int,
    *segments: tuple[int, float],
    starting: int = 0,
    now: float = NOW,
) -> LoadSnapshot:
    return LoadSnapshot(now=now, ready=ready, starting=starting, samples=series(*segments, now=now))
