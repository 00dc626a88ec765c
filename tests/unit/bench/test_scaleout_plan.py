"""The spike's load plan (pure): lead-in at one replica's lead_load, the busiest stretch of the
trace as the burst at burst_load of the whole cluster."""

from __future__ import annotations

import pytest

from warmstart_harness.bench.scaleout_config import ScaleoutConfig
from warmstart_harness.bench.spike_plan import _load, plan_spike
from warmstart_harness.bench.trace import TraceRequest
from warmstart_harness.model_server.config import BenchCosts


def synthetic_trace() -> list[TraceRequest]:
    # One request every 2 s for 400 s, then one every 0.5 s for 100 s (the busy part), then quiet.
    out = [TraceRequest(i * 2.0, 1000, 200) for i in range(200)]
    out += [TraceRequest(400 + i * 0.5, 1000, 200) for i in range(200)]
    out += [TraceRequest(500 + i * 4.0, 1000, 200) for i in range(50)]
    return out


@pytest.mark.parametrize("nodes", [2, 4])
def test_the_burst_is_the_busiest_stretch_at_the_asked_load(nodes: int) -> None:
    config = ScaleoutConfig(nodes=nodes, factor=4.0, burst_s=20.0, lead_s=10.0, slots=4)
    plan = plan_spike(synthetic_trace(), config)
    assert plan.trace_burst_start_s == 400.0
    costs = BenchCosts(time_scale=plan.time_scale)
    burst = [r for r in plan.requests if r.offset_s >= plan.burst_start_s]
    lead = [r for r in plan.requests if r.offset_s < plan.burst_start_s]
    assert len(burst) == 160  # 80 s of trace (20 s x 4) at 2 a second
    assert _load(burst, config.burst_s, costs) == pytest.approx(0.85 * nodes * 4, rel=1e-6)
    assert _load(lead, config.lead_s, costs) == pytest.approx(0.7 * 4, rel=0.05)
    assert all(0 <= r.offset_s < config.lead_s + config.burst_s for r in plan.requests)
    assert [r.offset_s for r in plan.requests] == sorted(r.offset_s for r in plan.requests)
    assert plan.burst_end_s == 30.0


def test_a_burst_at_the_start_of_the_trace_gets_a_lead_in_that_ends_at_the_burst() -> None:
    trace = [TraceRequest(i * 0.5, 500, 100) for i in range(100)]
    trace += [TraceRequest(50 + i * 2.0, 500, 100) for i in range(100)]
    plan = plan_spike(trace, ScaleoutConfig(nodes=2, burst_s=10.0, lead_s=5.0))
    assert plan.trace_burst_start_s == 0.0
    assert all(r.offset_s >= 5.0 for r in plan.requests)  # nothing before it: an empty lead-in


def test_provisioned_runs_only_the_spike() -> None:
    from warmstart_harness.bench.scaleout import mode_scenarios
    from warmstart_harness.bench.scaleout_config import SCENARIOS

    assert ScaleoutConfig().modes == ("baseline", "registry-proxy", "warmstart", "provisioned")
    assert mode_scenarios("provisioned", SCENARIOS) == ("spike",)
    assert mode_scenarios("provisioned", ("startup", "fanout")) == ()
    assert mode_scenarios("warmstart", SCENARIOS) == SCENARIOS
    assert ScaleoutConfig.quick_config().modes == ScaleoutConfig().modes  # quick runs it too
