"""The spike scenario's load, planned from the trace (pure): the burst window, its time
compression and the lead-in, scaled to the cluster's slots; the offered demand, smoothed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from warmstart_harness.bench.scaleout_config import ScaleoutConfig
from warmstart_harness.bench.scaleout_types import DemandPoint
from warmstart_harness.bench.trace import TraceRequest, busiest_window, compress, select_window
from warmstart_harness.model_server.config import BenchCosts

# -- the spike's load (pure) ------------------------------------------------------------------

# Time to capacity compares ready capacity with the offered load averaged over this long: the
# per-second load of a real trace jitters above its mean, and a replica is not added for that.
DEMAND_SMOOTHING_S = 10.0


def smooth(demand: Sequence[DemandPoint], window_s: float) -> list[DemandPoint]:
    """Trailing mean of a demand series over ``window_s`` (points keep their times)."""
    out: list[DemandPoint] = []
    total = 0.0
    start = 0
    for i, point in enumerate(demand):
        total += point.slots
        while demand[start].t_s <= point.t_s - window_s:
            total -= demand[start].slots
            start += 1
        out.append(DemandPoint(point.t_s, total / (i - start + 1)))
    return out


@dataclass(frozen=True)
class SpikePlan:
    requests: list[TraceRequest]
    burst_start_s: float
    burst_end_s: float
    time_scale: float  # service-time scale given to the replicas
    lead_factor: float
    burst_factor: float
    burst_slots: float  # offered load of the burst, in slots
    lead_slots: float
    trace_burst_start_s: float  # where the burst is in the trace

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("requests")
        out["requests"] = len(self.requests)
        return out


def _load(requests: Sequence[TraceRequest], seconds: float, costs: BenchCosts) -> float:
    """Offered load in slots (Erlangs) of ``requests`` spread over ``seconds`` at ``costs``."""
    work = sum(costs.service_seconds(r.input_tokens, r.output_tokens) for r in requests)
    return work / seconds if seconds > 0 else 0.0


def plan_spike(trace: Sequence[TraceRequest], config: ScaleoutConfig) -> SpikePlan:
    """The busiest stretch of the trace as the burst (compressed ``factor`` times) after a
    lead-in of the trace just before it, compressed so it loads one replica to ``lead_load``.
    The replicas' service-time scale is chosen so the burst offers ``burst_load`` of the whole
    cluster's capacity (``nodes`` replicas of ``slots``)."""
    burst_trace_s = config.burst_s * config.factor
    window = busiest_window(trace, burst_trace_s)
    burst = select_window(trace, window.start_s, burst_trace_s)
    unit = BenchCosts(time_scale=1.0)
    burst_slots = config.burst_load * config.nodes * config.slots
    time_scale = burst_slots / _load(burst, config.burst_s, unit)
    costs = BenchCosts(time_scale=time_scale)
    lead_slots = config.lead_load * config.slots
    # The lead-in: the trace before the burst, replayed slower so it loads one replica.
    lead_factor = config.factor

    def lead_at(factor: float) -> list[TraceRequest]:
        start = max(0.0, window.start_s - config.lead_s * factor)
        if window.start_s - start <= 0:
            return []  # the burst opens the trace: no lead-in traffic
        chosen = compress(select_window(trace, start, window.start_s - start), factor)
        gap = config.lead_s - (window.start_s - start) / factor  # > 0 if the trace is short
        return [TraceRequest(r.offset_s + gap, r.input_tokens, r.output_tokens) for r in chosen]

    lead = lead_at(lead_factor)
    for _ in range(40):  # solve load(lead_factor) = lead_slots; the load grows with the factor
        load = _load(lead, config.lead_s, costs)
        if load <= 0 or abs(lead_slots / load - 1) < 0.02:
            break
        lead_factor *= lead_slots / load
        lead = lead_at(lead_factor)
    shifted_burst = [
        TraceRequest(config.lead_s + r.offset_s, r.input_tokens, r.output_tokens)
        for r in compress(burst, config.factor)
    ]
    return SpikePlan(
        requests=lead + shifted_burst,
        burst_start_s=config.lead_s,
        burst_end_s=config.lead_s + config.burst_s,
        time_scale=time_scale,
        lead_factor=lead_factor,
        burst_factor=config.factor,
        burst_slots=burst_slots,
        lead_slots=_load(lead, config.lead_s, costs),
        trace_burst_start_s=window.start_s,
    )
