from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from warmstart.serving.autoscaler import (
    LoadSnapshot,
    ScaleDecision,
    ScalerState,
    decide,
    latest_demand,
    replicas_for,
    window_mean,
)

from .helpers import NOW, series, snap, spec


@dataclass(frozen=True)
class Case:
    id: str
    snapshot: LoadSnapshot
    desired: int
    reason: str  # a fragment of ScaleDecision.reason
    spec: dict[str, Any] = field(default_factory=dict)
    state: ScalerState = field(default_factory=ScalerState)
    panicking: bool = False


PANICKING = ScalerState(panic_since=NOW - 10, last_panic_trigger=NOW - 5, panic_max=8)
LOWER_LONG_AGO = ScalerState(lower_since=NOW - 30)

CASES = [
    # -- stable window ----------------------------------------------------------------------
    Case("stable-steady", snap(3, (60, 3)), 3, "stable: 3 in flight"),
    Case("stable-up", snap(3, (60, 5)), 5, "-> 5"),
    Case("stable-rounds-up", snap(3, (30, 2), (30, 3)), 3, "stable: 2.5"),
    Case("stable-per-target", snap(2, (60, 10)), 3, "/ 4 per replica", {"target_concurrency": 4}),
    Case("stable-ignores-old-samples", snap(2, (100, 50), (60, 2)), 2, "stable: 2 "),
    # -- panic ------------------------------------------------------------------------------
    Case("panic-entry", snap(2, (54, 0), (6, 10)), 10, "panic: 10", panicking=True),
    Case("below-panic-threshold", snap(4, (54, 4), (6, 7)), 5, "stable", panicking=False),
    Case("panic-at-threshold", snap(2, (54, 2), (6, 4)), 4, "panic", panicking=True),
    Case(
        "panic-threshold-from-spec",
        snap(2, (57, 2), (3, 4)),
        4,
        "panic",
        {"panic_threshold": 1.5, "panic_window": 3},
        panicking=True,
    ),
    Case(
        "no-scale-down-in-panic",
        snap(8, (60, 1)),
        8,
        "holding >= 8",
        state=PANICKING,
        panicking=True,
    ),
    Case(
        "panic-keeps-its-max",
        snap(6, (60, 1)),
        8,
        "holding >= 8",
        state=PANICKING,
        panicking=True,
    ),
    Case(
        "panic-scales-up-further",
        snap(8, (54, 0), (6, 20)),
        10,
        "panic: 20",
        state=PANICKING,
        panicking=True,
    ),
    Case(
        "panic-exit-after-stable-window",
        snap(8, (60, 1)),
        8,
        "scale-down to 1 delayed",
        state=ScalerState(panic_since=NOW - 100, last_panic_trigger=NOW - 60, panic_max=8),
        panicking=False,
    ),
    Case(
        "panic-not-over-before-stable-window",
        snap(8, (60, 1)),
        8,
        "panic",
        state=ScalerState(panic_since=NOW - 100, last_panic_trigger=NOW - 59, panic_max=8),
        panicking=True,
    ),
    # -- scale-down delay -------------------------------------------------------------------
    Case("scale-down-delayed", snap(5, (60, 2)), 5, "scale-down to 2 delayed (0s of 30s)"),
    Case(
        "scale-down-still-delayed",
        snap(5, (60, 2)),
        5,
        "delayed (29s of 30s)",
        state=ScalerState(lower_since=NOW - 29),
    ),
    Case("scale-down-after-delay", snap(5, (60, 2)), 2, "stable", state=LOWER_LONG_AGO),
    Case("no-delay-configured", snap(5, (60, 2)), 2, "stable", {"scale_down_delay": 0}),
    # -- scale from zero --------------------------------------------------------------------
    Case("from-zero-one-request", snap(0, (59, 0), (1, 1)), 1, "scale from zero: 1 waiting"),
    Case("from-zero-burst", snap(0, (59, 0), (1, 5)), 5, "scale from zero: 5 waiting"),
    Case(
        "from-zero-with-step",
        snap(0, (59, 0), (1, 5)),
        2,
        "limited to +2",
        {"max_scale_up_step": 2},
    ),
    Case(
        "from-zero-fraction-of-target",
        snap(0, (59, 0), (1, 1)),
        1,
        "scale from zero",
        {"target_concurrency": 8, "scale_to_zero": True},
    ),
    Case("zero-stays-zero", snap(0, (60, 0)), 0, "stable", {"scale_to_zero": True}),
    Case("starting-is-not-zero", snap(0, (59, 0), (1, 1), starting=1), 1, "stable"),
    # -- scale to zero ----------------------------------------------------------------------
    Case(
        "scale-to-zero",
        snap(1, (60, 0)),
        0,
        "scale to zero",
        {"scale_to_zero": True},
        LOWER_LONG_AGO,
    ),
    Case(
        "scale-to-zero-delayed",
        snap(1, (60, 0)),
        1,
        "delayed",
        {"scale_to_zero": True},
    ),
    Case(
        "no-scale-to-zero-when-off",
        snap(1, (60, 0)),
        1,
        "kept at 1 (scale_to_zero is off)",
        state=LOWER_LONG_AGO,
    ),
    # -- bounds and steps -------------------------------------------------------------------
    Case("capped-at-max", snap(10, (60, 15)), 10, "capped at max_replicas 10"),
    Case(
        "raised-to-min",
        snap(3, (60, 0)),
        3,
        "raised to min_replicas 3",
        {"min_replicas": 3},
        LOWER_LONG_AGO,
    ),
    Case("below-min-scales-up", snap(1, (60, 0)), 3, "min_replicas 3", {"min_replicas": 3}),
    Case("above-max-comes-down", snap(12, (60, 12)), 10, "capped at max_replicas 10"),
    Case("step-allows-exact", snap(3, (60, 5)), 5, "stable", {"max_scale_up_step": 2}),
    Case(
        "down-step",
        snap(5, (60, 0)),
        4,
        "limited to -1",
        {"max_scale_down_step": 1, "scale_to_zero": True},
        LOWER_LONG_AGO,
    ),
    Case("up-step-stable", snap(3, (60, 5.5)), 5, "limited to +2", {"max_scale_up_step": 2}),
    Case(
        "up-step-in-panic",
        snap(2, (60, 7)),
        4,
        "limited to +2",
        {"max_scale_up_step": 2},
        panicking=True,
    ),
    Case(
        "panic-capped-at-max",
        snap(2, (60, 50)),
        10,
        "holding >= 50; capped at max_replicas 10",
        panicking=True,
    ),
    # -- no data ----------------------------------------------------------------------------
    Case("no-metrics-hold", LoadSnapshot(now=NOW, ready=3), 3, "no metrics"),
    Case(
        "only-stale-metrics-hold",
        LoadSnapshot(now=NOW, ready=3, samples=series((10, 9), now=NOW - 100)),
        3,
        "no metrics",
    ),
    Case("no-metrics-at-zero-floor", LoadSnapshot(now=NOW, ready=0), 1, "no metrics"),
    Case(
        "no-metrics-above-max-steps-down",
        LoadSnapshot(now=NOW, ready=13),
        12,
        "limited to -1",
        {"max_scale_down_step": 1},
    ),
    Case(
        "future-samples-ignored",
        LoadSnapshot(now=NOW, ready=2, samples=((NOW - 1, 2.0), (NOW + 5, 99.0))),
        2,
        "stable: 2 ",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decide(case: Case) -> None:
    decision, new_state = decide(spec(**case.spec), case.snapshot, case.state)
    assert decision.desired == case.desired, decision.reason
    assert case.reason in decision.reason
    assert decision.panicking is case.panicking
    assert new_state.panicking is case.panicking
    assert new_state.last_decision == decision


def test_panic_entry_records_state() -> None:
    _, state = decide(spec(), snap(2, (54, 0), (6, 10)), ScalerState())
    assert state.panic_since == NOW
    assert state.last_panic_trigger == NOW
    assert state.panic_max == 10


def test_panic_max_is_capped_at_max_replicas() -> None:
    _, state = decide(spec(max_replicas=6), snap(2, (54, 0), (6, 10)), ScalerState())
    assert state.panic_max == 6


def test_panic_trigger_extends_panic() -> None:
    _, state = decide(spec(), snap(8, (54, 0), (6, 20)), PANICKING)
    assert state.panic_since == PANICKING.panic_since
    assert state.last_panic_trigger == NOW


def test_panic_exit_clears_state() -> None:
    old = ScalerState(panic_since=NOW - 100, last_panic_trigger=NOW - 60, panic_max=8)
    _, state = decide(spec(), snap(8, (60, 1)), old)
    assert (state.panic_since, state.last_panic_trigger, state.panic_max) == (None, None, 0)
    assert state.lower_since == NOW  # the scale-down delay starts now


def test_scale_down_delay_resets_when_demand_returns() -> None:
    _, state = decide(spec(), snap(5, (60, 5)), ScalerState(lower_since=NOW - 20))
    assert state.lower_since is None


def test_scale_down_delay_keeps_its_start() -> None:
    _, state = decide(spec(), snap(5, (60, 2)), ScalerState(lower_since=NOW - 20))
    assert state.lower_since == NOW - 20


def test_decide_is_pure() -> None:
    s, snapshot, state = spec(), snap(2, (54, 0), (6, 10)), ScalerState()
    assert decide(s, snapshot, state) == decide(s, snapshot, state)
    assert state == ScalerState()


def test_decision_reports_concurrency() -> None:
    decision, _ = decide(spec(), snap(2, (54, 0), (6, 10)), ScalerState())
    assert decision.stable_concurrency == pytest.approx(1.0)
    assert decision.panic_concurrency == pytest.approx(10.0)
    assert isinstance(decision, ScaleDecision)


def run(trace: list[float], ready_follows: bool = True, **fields: Any) -> list[ScaleDecision]:
    """Feed ``decide`` one sample a second; replicas become ready at once when asked for."""
    s = spec(**fields)
    state, ready, samples = ScalerState(), 1, []
    decisions = []
    for i, value in enumerate(trace):
        now = float(i)
        samples.append((now, value))
        decision, state = decide(s, LoadSnapshot(now=now, ready=ready, samples=samples), state)
        decisions.append(decision)
        if ready_follows:
            ready = decision.desired
    return decisions


def test_burst_then_quiet_trace() -> None:
    # 60 s at 1, a 20 s burst at 8, then quiet at 1 for 150 s.
    decisions = run([1.0] * 60 + [8.0] * 20 + [1.0] * 150)
    desired = [d.desired for d in decisions]
    assert desired[59] == 1
    first_panic = next(i for i, d in enumerate(decisions) if d.panicking)
    assert 60 <= first_panic <= 62  # the burst is seen within a couple of samples
    assert max(desired[60:80]) == 8
    # never below the panic peak while panicking
    peak_reached = desired.index(8)
    assert all(d.desired == 8 for d in decisions[peak_reached:] if d.panicking)
    last_panic = max(i for i, d in enumerate(decisions) if d.panicking)
    # panic lasts a stable window after the last trigger (the trigger stops once 8 are ready)
    assert last_panic == first_panic + 1 + 58
    assert last_panic > 79  # so the end of the burst never caused a scale-down
    # then the scale-down waits for scale_down_delay before coming back to 1
    after = desired[last_panic + 1 :]
    assert after[:29] == [8] * 29
    assert after[-1] == 1


def test_scale_to_zero_and_back_trace() -> None:
    decisions = run([1.0] * 10 + [0.0] * 120 + [2.0] * 3, scale_to_zero=True)
    desired = [d.desired for d in decisions]
    assert desired[9] == 1
    assert 0 in desired[10:130]
    zero_at = desired.index(0)
    assert zero_at >= 10 + 60  # the stable mean must fall to 0, then the delay runs
    assert desired[130] >= 1 and "scale from zero" in decisions[130].reason


@pytest.mark.parametrize(
    ("value", "target", "expected"),
    [(0, 1, 0), (0.01, 1, 1), (1, 1, 1), (1.0000000001, 1, 1), (4.5, 2, 3), (8, 4, 2)],
)
def test_replicas_for(value: float, target: float, expected: int) -> None:
    assert replicas_for(value, target) == expected


def test_window_helpers() -> None:
    samples = [(1.0, 4.0), (2.0, 2.0), (3.0, 6.0)]
    assert window_mean(samples, 3.0, 2.0) == 4.0
    assert window_mean(samples, 3.0, 10.0) == 4.0
    assert window_mean(samples, 10.0, 2.0) is None
    assert latest_demand(samples, 3.0, 6.0) == 6.0
    assert latest_demand(samples, 2.5, 6.0) == 2.0
    assert latest_demand([], 3.0, 6.0) == 0.0
