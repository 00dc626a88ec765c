"""The scale-out benchmark's claims: one row per scenario metric, each mode's value, the ratio
against the baseline, the target and whether it held (what the markdown table and the JSON
summary show)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import attrgetter
from statistics import median

from warmstart_harness.bench.scaleout_fanout_report import fanout_rows
from warmstart_harness.bench.scaleout_rows import (
    STARTUP_REFERENCE_TIER,
    Row,
    medians,
    pct,
    times,
)
from warmstart_harness.bench.scaleout_spike_cost import (
    SPIKE_COST_VS_PROVISIONED_TARGET,
    SPIKE_P50_VS_PROVISIONED_TARGET,
)
from warmstart_harness.bench.scaleout_types import (
    BASELINE,
    IMAGE_CACHED,
    TIERS,
    WARMSTART,
    WARMSTART_SPARE0,
    ScaleoutResults,
    SpikeMetrics,
)
from warmstart_harness.bench.spike_metrics import (
    CostComparison,
    ratios_vs_baseline,
    versus_provisioned,
)

P50_REDUCTION_TARGET = 0.60  # P50 latency 60% lower than the baseline's, or more
TIME_TO_CAPACITY_TARGET = 3.0  # 3x faster than the baseline, or more
# Start from this tier N x faster than the baseline's cold start, or more (cold: at most 5 %
# slower).
STARTUP_TARGETS = {"warm": 3.0, "peer": 2.5, "cold": 0.95, "hot": 20.0}
SPARE0_P50_REDUCTION_TARGET = 0.30  # spike with prewarm_spare = 0: P50 30 % lower, or more
P99_REDUCTION_TARGET = 0.50
PREWARM_OVER_UNPACK_TARGET_S = 2.0  # a hot pre-warm from warm: containerd's unpack + 2 s
# With a separate model (issue 16): hot = the image hot and the model materialised.
STARTUP_TARGETS_WITH_MODEL = {**STARTUP_TARGETS, "hot": 10.0}
HOT_VS_IMAGE_CACHED_TARGET = 3.0  # warmstart hot >= 3x SageMaker-with-caching's start
# The published case's shape: a start with the image cached ~2x faster than without (525 s ->
# 258 s, 2.03x); "about 2x" taken as 1.5x to 2.5x.
IMAGE_CACHED_RANGE = (1.5, 2.5)
MODEL_PEER_TARGET = 3.0  # a model from a peer >= 3x faster than from the upstream
MATERIALISE_TARGET_S = 1.0  # a model warm -> hot (hard links) in under a second, any size
# Where the tiers go in the startup tables: the slowest first.
TIER_ORDER = ("cold", IMAGE_CACHED, "peer", "warm", "hot")


# -- the table ----------------------------------------------------------------------------------


def _spike_rows(results: ScaleoutResults) -> list[Row]:
    metrics = {r.mode: r.metrics for r in results.spike}
    comp = ratios_vs_baseline(metrics).get(WARMSTART)

    def values(get: Callable[[SpikeMetrics], float | None]) -> dict[str, float | None]:
        return {m: get(metrics[m]) for m in results.modes if m in metrics}

    rows = [Row("spike", "requests", "count", values(lambda m: m.requests))]
    for q in ("p50", "p90", "p99"):
        reduction = getattr(comp, f"{q}_reduction") if comp else None
        target, met = "", None
        goal = {"p50": P50_REDUCTION_TARGET, "p99": P99_REDUCTION_TARGET}.get(q)
        if goal is not None:
            target = f"-{goal * 100:.0f}% or more"
            met = None if reduction is None else reduction >= goal - 1e-9
        rows.append(
            Row(
                "spike",
                f"{q.upper()} latency",
                "s",
                values(attrgetter(f"{q}_s")),
                pct(reduction),
                None if reduction is None else -reduction,
                target,
                met,
            )
        )
    speedup = comp.time_to_capacity_speedup if comp else None
    ttc_met: bool | None = None
    if comp is not None:
        ttc_met = speedup is not None and speedup >= TIME_TO_CAPACITY_TARGET - 1e-9
    rows.append(
        Row(
            "spike",
            "time to capacity",
            "s",
            values(lambda m: m.time_to_capacity_s),
            times(speedup, bool(comp and comp.ttc_lower_bound)) or ("never" if comp else ""),
            speedup,
            f"{TIME_TO_CAPACITY_TARGET:g}x faster or more",
            ttc_met,
        )
    )
    lost = values(lambda m: m.lost)
    rows.append(
        Row(
            "spike",
            "lost requests",
            "count",
            lost,
            "",
            None,
            "0 in every mode",
            all(v == 0 for v in lost.values()) if lost else None,
        )
    )
    rows.append(Row("spike", "requests with errors", "count", values(lambda m: m.errors)))
    rows.append(Row("spike", "retries after 503", "count", values(lambda m: m.retries)))
    rows.append(Row("spike", "throughput", "req/s", values(lambda m: m.throughput_rps)))
    rows.append(Row("spike", "replica-seconds", "replica-s", values(lambda m: m.replica_seconds)))
    rows += _versus_provisioned_rows(results)
    rows += _spike_model_rows(results)
    return rows + _spare0_rows(results)


def _versus_provisioned_rows(results: ScaleoutResults) -> list[Row]:
    """P50 and replica-seconds of each run against the provisioned run's (targets judged on
    warmstart's)."""
    versus = versus_provisioned({r.mode: r.metrics for r in results.spike})
    if not versus:
        return []
    rows = []
    comparisons: tuple[tuple[str, str, Callable[[CostComparison], float | None], float, str], ...]
    comparisons = (
        ("P50 vs provisioned", "x", lambda c: c.p50_ratio, SPIKE_P50_VS_PROVISIONED_TARGET,
         f"{SPIKE_P50_VS_PROVISIONED_TARGET:g}x or less"),
        ("replica-seconds vs provisioned", "fraction", lambda c: c.cost_fraction,
         SPIKE_COST_VS_PROVISIONED_TARGET, f"{SPIKE_COST_VS_PROVISIONED_TARGET:g} or less"),
    )  # fmt: skip
    for metric, unit, get, goal, shown in comparisons:
        values = {m: get(versus[m]) for m in results.modes if m in versus}
        ours = values.get(WARMSTART)
        rows.append(
            Row("spike", metric, unit, values, "", None, shown,
                None if ours is None else ours <= goal + 1e-9)
        )  # fmt: skip
    return rows


def _spike_model_rows(results: ScaleoutResults) -> list[Row]:
    """The model's bytes from the upstream during each spike run, in models."""
    size = _model_bytes(results)
    runs = {r.mode: r for r in results.spike if r.upstream_model_bytes is not None}
    if not size or not runs:
        return []
    values: dict[str, float | None] = {
        m: (runs[m].upstream_model_bytes or 0) / size for m in results.modes if m in runs
    }
    ours = values.get(WARMSTART)
    rows = [
        Row("spike", "upstream model bytes (first replica and scale-out)", "x model", values,
            "", None, "1x the model", None if ours is None else abs(ours - 1.0) < 0.005)
    ]  # fmt: skip
    crossed = {
        m: sum(c.get("upstream_rx", 0) for c in (runs[m].links or {}).values()) / 2**20
        for m in results.modes
        if m in runs and runs[m].links
    }
    if crossed:
        rows.append(
            Row("spike", "bytes on the nodes' shaped upstream links (all nodes)", "MiB",
                dict(crossed))
        )  # fmt: skip
    return rows


def _model_bytes(results: ScaleoutResults) -> int:
    return int(results.params.get("model_bytes") or 0)


def _spare0_rows(results: ScaleoutResults) -> list[Row]:
    """The spike with demand-driven pre-warm only, in the warmstart column."""
    by_mode = {r.mode: r.metrics for r in results.spike}
    spare0, base = by_mode.get(WARMSTART_SPARE0), by_mode.get(BASELINE)
    if spare0 is None:
        return []
    rows = []
    for q, goal in (("p50", SPARE0_P50_REDUCTION_TARGET), ("p99", None)):
        ours = getattr(spare0, f"{q}_s")
        theirs = getattr(base, f"{q}_s") if base is not None else None
        reduction = 1 - ours / theirs if ours is not None and theirs else None
        rows.append(
            Row(
                "spike",
                f"{q.upper()} latency, prewarm_spare = 0 (demand-driven pre-warm only)",
                "s",
                {BASELINE: theirs, WARMSTART: ours},
                pct(reduction),
                None if reduction is None else -reduction,
                f"-{goal * 100:.0f}% or more" if goal else "",
                None if goal is None or reduction is None else reduction >= goal - 1e-9,
            )
        )
    rows.append(
        Row(
            "spike",
            "lost requests, prewarm_spare = 0",
            "count",
            {WARMSTART: spare0.lost},
            "",
            None,
            "0",
            spare0.lost == 0,
        )
    )
    return rows


def _startup_target(target: float | None) -> str:
    if target is None:
        return ""
    if target < 1:
        return f"{target:g}x or more (at most {round((1 - target) * 100)}% slower)"
    return f"{target:g}x faster or more"


def _startup_rows(results: ScaleoutResults) -> list[Row]:
    totals = medians(results.startup, lambda r: (r.mode, r.tier), lambda r: r.total_s)
    with_model = any(r.model_s is not None for r in results.startup)
    targets = STARTUP_TARGETS_WITH_MODEL if with_model else STARTUP_TARGETS
    present = {tier for _, tier in totals} - {IMAGE_CACHED}
    tiers = [t for t in TIERS if t in present] + sorted(present - set(TIERS))
    rows = []
    for tier in tiers:
        ref_tier = tier if (BASELINE, tier) in totals else STARTUP_REFERENCE_TIER
        values = {
            m: totals.get((BASELINE, ref_tier) if m == BASELINE else (m, tier))
            for m in results.modes
        }
        base, ours = values.get(BASELINE), values.get(WARMSTART)
        speedup = base / ours if base is not None and ours else None
        target = targets.get(tier)
        label = f"startup from {tier}" + (f" (baseline: {ref_tier})" if ref_tier != tier else "")
        if with_model and tier == "hot":
            label += ", image and model"
        rows.append(
            Row(
                "startup",
                label,
                "s",
                values,
                times(speedup),
                speedup,
                _startup_target(target),
                None if target is None or speedup is None else speedup >= target - 1e-9,
            )
        )
    return rows + _image_cached_rows(results, totals) + _model_startup_rows(results)


def _image_cached_rows(
    results: ScaleoutResults, totals: Mapping[tuple[str, str], float]
) -> list[Row]:
    """SageMaker's two published starts (without and with container caching) and warmstart's
    hot start against the cached one."""
    cached = totals.get((BASELINE, IMAGE_CACHED))
    cold = totals.get((BASELINE, STARTUP_REFERENCE_TIER))
    if cached is None:
        return []
    speedup = cold / cached if cold and cached else None
    lo, hi = IMAGE_CACHED_RANGE
    rows = [
        Row(
            "startup",
            "startup with the image cached, model downloaded (baseline: cold)",
            "s",
            {BASELINE: cached},
            times(speedup),
            speedup,
            f"about 2x ({lo:g}x to {hi:g}x), the published shape",
            None if speedup is None else lo - 1e-9 <= speedup <= hi + 1e-9,
        )
    ]
    hot = totals.get((WARMSTART, "hot"))
    if hot is not None:
        ratio = cached / hot if hot else None
        rows.append(
            Row(
                "startup",
                "startup from hot vs the image cached (baseline: image-cached)",
                "s",
                {BASELINE: cached, WARMSTART: hot},
                times(ratio),
                ratio,
                f"{HOT_VS_IMAGE_CACHED_TARGET:g}x faster or more",
                None if ratio is None else ratio >= HOT_VS_IMAGE_CACHED_TARGET - 1e-9,
            )
        )
    return rows


def _model_startup_rows(results: ScaleoutResults) -> list[Row]:
    """The model's fetch by tier: from a peer vs from the upstream, warm -> hot, and the
    upstream bytes of every start of a mode (warmstart: once for its whole sequence)."""
    fetched = medians(
        [r for r in results.startup if r.model_s is not None],
        lambda r: (r.mode, r.tier),
        lambda r: r.model_s,
    )
    if not fetched:
        return []
    rows = []
    upstream, peer = fetched.get((WARMSTART, "cold")), fetched.get((WARMSTART, "peer"))
    if peer is not None:
        speedup = upstream / peer if upstream and peer else None
        shown = f"{upstream:.1f} s" if upstream is not None else "not measured"
        rows.append(
            Row(
                "startup",
                f"model fetch during a start, from a peer (from the upstream: {shown}; baseline: "
                "its own download)",
                "s",
                {BASELINE: fetched.get((BASELINE, STARTUP_REFERENCE_TIER)), WARMSTART: peer},
                times(speedup),
                speedup,
                f"{MODEL_PEER_TARGET:g}x faster than from the upstream or more",
                None if speedup is None else speedup >= MODEL_PEER_TARGET - 1e-9,
            )
        )
    alone = {
        p.tier: p.fetch_s
        for p in results.prewarm
        if p.kind == "model" and p.mode == WARMSTART and p.tier in ("cold", "peer")
    }
    if "peer" in alone:
        cold = alone.get("cold")
        speedup = cold / alone["peer"] if cold and alone["peer"] else None
        shown = f"{cold:.1f} s" if cold is not None else "not measured"
        rows.append(
            Row(
                "startup",
                f"model pre-warm alone, fetch from a peer (from the upstream: {shown})",
                "s",
                {WARMSTART: alone["peer"]},
                times(speedup),
                speedup,
                f"{MODEL_PEER_TARGET:g}x faster than from the upstream or more",
                None if speedup is None else speedup >= MODEL_PEER_TARGET - 1e-9,
            )
        )
    materialise = [
        r.link_s for r in results.prewarm
        if r.kind == "model" and r.mode == WARMSTART and r.tier == "warm"
    ]  # fmt: skip
    if materialise:
        ours = float(median(materialise))
        rows.append(
            Row("startup", "model warm -> hot (materialise: hard links)", "s", {WARMSTART: ours},
                "", None, f"under {MATERIALISE_TARGET_S:g} s",
                ours < MATERIALISE_TARGET_S)
        )  # fmt: skip
    size = _model_bytes(results)
    if size:
        values: dict[str, float | None] = {}
        for mode in results.modes:
            runs = [r for r in results.startup if r.mode == mode and r.model_s is not None]
            if runs:
                values[mode] = sum(r.upstream_model_bytes for r in runs) / size
        ours_ratio = values.get(WARMSTART)
        starts = ", ".join(
            f"{m}: {'+'.join(r.tier for r in results.startup if r.mode == m)}"
            for m in results.modes if m in values
        )  # fmt: skip
        rows.append(
            Row("startup", f"upstream model bytes over all starts ({starts})", "x model", values,
                "", None, "1x the model (warmstart)",
                None if ours_ratio is None else abs(ours_ratio - 1.0) < 0.005)
        )  # fmt: skip
    return rows


def table_rows(results: ScaleoutResults) -> list[Row]:
    """Every row of the table, scenario by scenario."""
    rows: list[Row] = []
    if results.spike:
        rows += _spike_rows(results)
    if results.startup:
        rows += _startup_rows(results)
    if results.fanout:
        rows += fanout_rows(results)
    if results.prewarm:
        rows += _prewarm_rows(results)
    return rows


def _prewarm_rows(results: ScaleoutResults) -> list[Row]:
    """A hot pre-warm from warm against what containerd's own unpack of the image costs."""
    warm = [
        r.total_s
        for r in results.prewarm
        if r.kind == "image" and r.mode == WARMSTART and r.tier == "warm"
    ]
    unpack = [
        r.unpack_s
        for r in results.startup
        if r.mode == BASELINE and r.tier == STARTUP_REFERENCE_TIER
    ]
    if not warm:
        return []
    ours = float(median(warm))
    base = float(median(unpack)) if unpack else None
    limit = base + PREWARM_OVER_UNPACK_TARGET_S if base is not None else None
    return [
        Row(
            "prewarm",
            "hot pre-warm from warm (baseline: containerd's unpack)",
            "s",
            {BASELINE: base, WARMSTART: ours},
            "",
            None,
            f"unpack + {PREWARM_OVER_UNPACK_TARGET_S:g} s or less",
            None if limit is None else ours <= limit + 1e-9,
        )
    ]
