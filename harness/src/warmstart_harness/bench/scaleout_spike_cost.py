"""The spike's latency and cost against the provisioned run: a row per spike run, the lines
that compare them, and their table (``bench scaleout`` prints it; the JSON keeps it)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from warmstart_harness.bench.scaleout_rows import (
    finite,
)
from warmstart_harness.bench.scaleout_types import (
    PROVISIONED,
    ScaleoutResults,
)
from warmstart_harness.bench.spike_metrics import (
    demand_replica_seconds,
    versus_provisioned,
)

SPIKE_P50_VS_PROVISIONED_TARGET = 1.5  # P50 at most 1.5x provisioned's ...
SPIKE_COST_VS_PROVISIONED_TARGET = 0.5  # ... at no more than half its replica-seconds
REPLICA_SECONDS_DEFINITION = (
    "Replica-seconds: the integral, over the spike's replay from the start of the lead-in to "
    "the end of the burst (the same window in every mode), of the replicas being paid for. A "
    "replica costs from the moment the controller decides to start it (its node is "
    "provisioned for it: the wait, pull, unpack and model load count) until it is stopped; "
    "the count is sampled once a second. Replicas kept after the burst (the scale-down delay) "
    "are not counted. provisioned: max_replicas replicas ready before the replay, never "
    "scaled (the latency floor and the most expensive option). Cost vs provisioned: "
    "replica-seconds / provisioned's; P50 vs provisioned: P50 / provisioned's P50."
)

# -- the spike's latency and cost, against provisioned --------------------------------------------


@dataclass(frozen=True)
class SpikeCostRow:
    """One spike run: its latency, losses and cost, and both against the provisioned run.

    ``cost_vs_provisioned`` is a fraction (replica-seconds / provisioned's), ``p50_vs_provisioned``
    a ratio (P50 / provisioned's P50); None without a provisioned run or when not computable.
    """

    mode: str
    p50_s: float | None
    p99_s: float | None
    lost: int
    replica_seconds: float | None
    cost_vs_provisioned: float | None
    p50_vs_provisioned: float | None

    def to_json(self) -> dict[str, Any]:
        return {k: finite(v) if isinstance(v, float) else v for k, v in asdict(self).items()}


def spike_cost_rows(results: ScaleoutResults) -> list[SpikeCostRow]:
    """One row per spike run, in the order they ran (see :class:`SpikeCostRow`)."""
    versus = versus_provisioned({r.mode: r.metrics for r in results.spike})
    rows = []
    for r in results.spike:
        m, v = r.metrics, versus.get(r.mode)
        rows.append(
            SpikeCostRow(
                r.mode,
                m.p50_s,
                m.p99_s,
                m.lost,
                m.replica_seconds,
                v.cost_fraction if v else None,
                v.p50_ratio if v else None,
            )
        )
    return rows


def _num(value: float | None, fmt: str, suffix: str = "") -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:{fmt}}{suffix}"


def spike_cost_summary(results: ScaleoutResults) -> list[str]:
    """One line per autoscaled run: how close it comes to provisioned's latency, at what
    fraction of its cost."""
    metrics = {r.mode: r.metrics for r in results.spike}
    versus = versus_provisioned(metrics)
    if not versus:
        return [
            f"no {PROVISIONED} run: the spike's cost is not compared (--modes ...,{PROVISIONED})"
        ]
    floor = metrics[PROVISIONED]
    lines = []
    for r in results.spike:
        if r.mode == PROVISIONED:
            continue
        v, m = versus[r.mode], r.metrics
        lines.append(
            f"{r.mode}: P50 {_num(v.p50_ratio, '.2f', 'x')} provisioned's "
            f"({_num(m.p50_s, '.2f', ' s')} vs {_num(floor.p50_s, '.2f', ' s')}), P99 "
            f"{_num(v.p99_ratio, '.2f', 'x')}, lost {m.lost}, at "
            f"{_num(v.cost_fraction, '.2f')} of its cost ({_num(m.replica_seconds, '.0f')} vs "
            f"{_num(floor.replica_seconds, '.0f')} replica-seconds)"
        )
    need = load_replica_seconds(results)
    if need is not None:
        share = (
            f" ({need / floor.replica_seconds:.2f} of provisioned's)"
            if floor.replica_seconds
            else ""
        )
        lines.append(
            f"the offered load itself needs {need:.0f} replica-seconds{share}: ceil(demand / K) "
            "replicas, at least 1, each second of the window; a run that never let a request "
            "wait for a slot paid at least that"
        )
    return lines


def load_replica_seconds(results: ScaleoutResults) -> float | None:
    """The replica-seconds the offered load itself needs over the cost window (the spike's
    cost floor, :func:`~warmstart_harness.bench.spike_metrics.demand_replica_seconds`); None when no
    run recorded its demand."""
    window = _cost_window(results)
    runs = [r for r in results.spike if r.demand]
    if window is None or not runs:
        return None
    run = runs[0]  # the offered load depends only on the trace: the same in every run
    return demand_replica_seconds(run.demand, run.metrics.slots_per_replica, window)


def _cost_window(results: ScaleoutResults) -> float | None:
    windows = {r.metrics.cost_window_s for r in results.spike} - {None}
    return windows.pop() if len(windows) == 1 else None


def spike_cost_json(results: ScaleoutResults) -> dict[str, Any]:
    return {
        "definition": REPLICA_SECONDS_DEFINITION,
        "window_s": _cost_window(results),
        "load_replica_seconds": load_replica_seconds(results),
        "rows": [row.to_json() for row in spike_cost_rows(results)],
        "summary": spike_cost_summary(results),
    }


SPIKE_COST_COLUMNS = (
    "spike run",
    "P50",
    "P99",
    "lost",
    "replica-seconds",
    "cost vs provisioned",
    "P50 vs provisioned",
)


def _spike_cost_cells(row: SpikeCostRow) -> list[str]:
    """The row's cells as the table shows them."""
    return [
        row.mode,
        _num(row.p50_s, ".2f", " s"),
        _num(row.p99_s, ".2f", " s"),
        str(row.lost),
        _num(row.replica_seconds, ".0f"),
        _num(row.cost_vs_provisioned, ".2f"),
        _num(row.p50_vs_provisioned, ".2f", "x"),
    ]


def spike_cost_table(results: ScaleoutResults) -> str:
    """The spike runs' latency and cost against provisioned: a table, then one line per
    autoscaled run, then what replica-seconds are."""
    lines = [
        "| " + " | ".join(SPIKE_COST_COLUMNS) + " |",
        "|---|" + "---:|" * (len(SPIKE_COST_COLUMNS) - 1),
    ]
    lines += ["| " + " | ".join(_spike_cost_cells(r)) + " |" for r in spike_cost_rows(results)]
    window = _cost_window(results)
    lines.append("")
    lines += [f"- {line}" for line in spike_cost_summary(results)]
    lines.append("")
    over = f" The window here: {window:.0f} s." if window is not None else ""
    lines.append(REPLICA_SECONDS_DEFINITION + over)
    return "\n".join(lines) + "\n"
