"""The autoscaling policy: a pure function from a metrics snapshot and the previous state to
a decision and the next state (Knative KPA semantics, Ray Serve style). No clock, no I/O:
``now`` and the samples are data the caller passes in.

Rules, in the order :func:`decide` applies them:

1. stable: desired = ceil(mean concurrency over ``stable_window`` / ``target_concurrency``);
2. panic: when the mean over ``panic_window`` reaches ``panic_threshold`` x the ready capacity
   (ready replicas, at least one, x target), use the panic-window desired count, and never
   scale down while panicking; panic lasts until ``stable_window`` seconds pass without a
   new trigger;
3. scale from zero: with no replicas at all and any demand (in flight or queued) in the panic
   window, start at least one replica at once;
4. scale-down delay: fewer replicas only once demand has stayed lower for
   ``scale_down_delay`` seconds;
5. bounds: clamp to [``spec.floor``, ``max_replicas``] (``floor`` is 0 only with
   ``scale_to_zero``);
6. steps: move at most ``max_scale_up_step`` / ``max_scale_down_step`` replicas from the
   current count per decision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from warmstart.serving.spec import EndpointSpec


@dataclass(frozen=True)
class LoadSnapshot:
    """What the controller saw at ``now``.

    ``samples`` are ``(t, concurrency)`` pairs, about one a second, where concurrency is the
    endpoint's requests in flight plus those queued by the router. Samples after ``now`` are
    ignored.
    """

    now: float
    ready: int
    starting: int = 0
    samples: Sequence[tuple[float, float]] = ()

    @property
    def current(self) -> int:
        """Replicas that exist or are coming up."""
        return self.ready + self.starting


@dataclass(frozen=True)
class ScaleDecision:
    desired: int
    reason: str
    panicking: bool = False
    stable_concurrency: float | None = None  # mean over the stable window (None: no samples)
    panic_concurrency: float | None = None  # mean over the panic window (None: no samples)


@dataclass(frozen=True)
class ScalerState:
    """What :func:`decide` remembers between calls; start with ``ScalerState()``.

    ``panic_since``: when panic mode began (None: not panicking); ``last_panic_trigger``: the
    last time the panic threshold was reached; ``panic_max``: the most replicas asked for in
    this panic (panic never lowers it); ``lower_since``: when the recommendation first fell
    below the current count (None: it is not below), for the scale-down delay.
    """

    panic_since: float | None = None
    last_panic_trigger: float | None = None
    panic_max: int = 0
    lower_since: float | None = None
    last_decision: ScaleDecision | None = None

    @property
    def panicking(self) -> bool:
        return self.panic_since is not None


# -- small named helpers -------------------------------------------------------------------


def window_mean(samples: Sequence[tuple[float, float]], now: float, window: float) -> float | None:
    """Mean concurrency of the samples with ``now - window < t <= now``; None if none."""
    values = [c for t, c in samples if now - window < t <= now]
    if not values:
        return None
    return sum(values) / len(values)


def latest_demand(samples: Sequence[tuple[float, float]], now: float, window: float) -> float:
    """The newest sample's concurrency within the window (0 if none)."""
    recent = [(t, c) for t, c in samples if now - window < t <= now]
    return max(recent)[1] if recent else 0.0


def replicas_for(concurrency: float, target: float) -> int:
    """Replicas needed to carry ``concurrency`` at ``target`` per replica."""
    return max(0, math.ceil(concurrency / target - 1e-9))


def over_panic_threshold(spec: EndpointSpec, panic_concurrency: float, ready: int) -> bool:
    """Demand reached ``panic_threshold`` x the ready capacity (counting at least one)."""
    capacity = max(1, ready) * spec.target_concurrency
    return panic_concurrency >= spec.panic_threshold * capacity


def next_panic_state(
    spec: EndpointSpec, state: ScalerState, now: float, triggered: bool, current: int
) -> ScalerState:
    """Enter, extend or leave panic mode."""
    if triggered:
        if state.panic_since is None:
            return replace(state, panic_since=now, last_panic_trigger=now, panic_max=current)
        return replace(state, last_panic_trigger=now)
    if state.panic_since is not None:
        last = (
            state.last_panic_trigger if state.last_panic_trigger is not None else state.panic_since
        )
        if now - last >= spec.stable_window:
            return replace(state, panic_since=None, last_panic_trigger=None, panic_max=0)
    return state


def hold_scale_down(
    spec: EndpointSpec, state: ScalerState, now: float, wanted: int, current: int
) -> tuple[int, ScalerState, str | None]:
    """Keep ``current`` until the recommendation has been lower for ``scale_down_delay``."""
    if wanted >= current:
        return wanted, replace(state, lower_since=None), None
    since = state.lower_since if state.lower_since is not None else now
    state = replace(state, lower_since=since)
    waited = now - since
    if waited < spec.scale_down_delay:
        note = f"scale-down to {wanted} delayed ({waited:g}s of {spec.scale_down_delay:g}s)"
        return current, state, note
    return wanted, state, None


def clamp_bounds(spec: EndpointSpec, wanted: int) -> tuple[int, str | None]:
    """Clamp to [floor, max_replicas]."""
    if wanted > spec.max_replicas:
        return spec.max_replicas, f"capped at max_replicas {spec.max_replicas}"
    if wanted < spec.floor:
        if spec.min_replicas >= spec.floor:
            return spec.floor, f"raised to min_replicas {spec.floor}"
        return spec.floor, "kept at 1 (scale_to_zero is off)"
    return wanted, None


def clamp_step(spec: EndpointSpec, wanted: int, current: int) -> tuple[int, str | None]:
    """Move at most one step (per direction) away from ``current``."""
    up, down = spec.max_scale_up_step, spec.max_scale_down_step
    if up is not None and wanted > current + up:
        return current + up, f"limited to +{up} per decision"
    if down is not None and wanted < current - down:
        return current - down, f"limited to -{down} per decision"
    return wanted, None


# -- the policy ------------------------------------------------------------------------------


def decide(
    spec: EndpointSpec, snapshot: LoadSnapshot, state: ScalerState
) -> tuple[ScaleDecision, ScalerState]:
    """The number of replicas the endpoint should have now, why, and the next state."""
    now, current = snapshot.now, snapshot.current
    stable = window_mean(snapshot.samples, now, spec.stable_window)
    panic = window_mean(snapshot.samples, now, spec.panic_window)

    if stable is None:
        desired, bound_note = clamp_bounds(spec, current)
        desired, step_note = clamp_step(spec, desired, current)
        reason = f"no metrics in the last {spec.stable_window:g}s: hold {current}"
        decision = ScaleDecision(
            desired, _join(reason, bound_note, step_note), state.panicking, None, None
        )
        return decision, replace(state, last_decision=decision)

    panic_value = panic if panic is not None else 0.0
    stable_desired = replicas_for(stable, spec.target_concurrency)
    panic_desired = replicas_for(panic_value, spec.target_concurrency)
    triggered = over_panic_threshold(spec, panic_value, snapshot.ready)
    state = next_panic_state(spec, state, now, triggered, current)

    if state.panicking:
        wanted = max(state.panic_max, panic_desired, current)
        state = replace(state, panic_max=min(wanted, spec.max_replicas))
        reason = (
            f"panic: {panic_value:g} in flight over {spec.panic_window:g}s "
            f"/ {spec.target_concurrency:g} per replica -> {panic_desired}, holding >= {wanted}"
        )
    else:
        wanted = stable_desired
        reason = (
            f"stable: {stable:g} in flight over {spec.stable_window:g}s "
            f"/ {spec.target_concurrency:g} per replica -> {stable_desired}"
        )

    demand_now = latest_demand(snapshot.samples, now, spec.panic_window)
    if current == 0 and demand_now > 0:
        wanted = max(wanted, 1, replicas_for(demand_now, spec.target_concurrency))
        reason = f"scale from zero: {demand_now:g} waiting -> {wanted}"

    notes: list[str | None] = []
    wanted, state, note = hold_scale_down(spec, state, now, wanted, current)
    notes.append(note)
    wanted, note = clamp_bounds(spec, wanted)
    notes.append(note)
    wanted, note = clamp_step(spec, wanted, current)
    notes.append(note)
    if wanted == 0 and current > 0:
        notes.append("scale to zero")

    decision = ScaleDecision(wanted, _join(reason, *notes), state.panicking, stable, panic)
    return decision, replace(state, last_decision=decision)


def _join(reason: str, *notes: str | None) -> str:
    return "; ".join([reason, *(n for n in notes if n)])


__all__ = [
    "LoadSnapshot",
    "ScaleDecision",
    "ScalerState",
    "clamp_bounds",
    "clamp_step",
    "decide",
    "hold_scale_down",
    "latest_demand",
    "next_panic_state",
    "over_panic_threshold",
    "replicas_for",
    "window_mean",
]
