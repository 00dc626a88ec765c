"""PNG plots of the scale-out benchmark (matplotlib, Agg backend: no display needed).

- spike: a column per mode, side by side with shared axes: replicas over time (ready, starting,
  stopping, the replicas the offered load needs, and what the provisioned run keeps ready) above
  per-request latency by send time with a rolling P50; each column's title has its P50 and its
  replica-seconds (and their ratios to provisioned's);
- startup: one stacked bar per mode and tier, split into pull, unpack, the model's fetch (the
  part the pull and unpack did not hide; with a separate model only), start, model load;
- fanout: wall time and upstream bytes per mode (:func:`warmstart_harness.bench.plots.bar_chart`), and
  per node when it held every byte (nodes done over time) and what it sent its peers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from statistics import median
from typing import Any

from warmstart_harness.bench.plots import bar_chart
from warmstart_harness.bench.scaleout_types import (
    FANOUT_FETCH,
    MODES,
    PROVISIONED,
    TIERS,
    FanoutResult,
    SpikeResult,
    StartupResult,
)
from warmstart_harness.bench.spike_metrics import (
    paid_replicas,
    rolling_percentile,
    versus_provisioned,
)

COLORS = ["#2a9d8f", "#e9c46a", "#e76f51", "#8ab17d", "#264653"]  # as in bench.plots
PHASES = (
    ("pull_s", "pull"),
    ("unpack_s", "unpack"),
    ("model_phase_s", "model fetch"),
    ("start_s", "start"),
    ("load_s", "model load"),
)
MIN_LATENCY_S = 1e-3  # floor for the log scale


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ordered(names: Sequence[str], modes: Sequence[str]) -> list[str]:
    return [m for m in modes if m in names] + [n for n in dict.fromkeys(names) if n not in modes]


def _save(fig: Any, plt: Any, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")  # legends outside the axes stay in
    plt.close(fig)
    return path


def _replicas(ax: Any, result: SpikeResult, provisioned: int | None = None) -> None:
    """``provisioned``: the replicas the provisioned run kept, drawn as a flat line."""
    t = [p.t_s for p in result.timeline]
    ready = [p.ready for p in result.timeline]
    up = [p.ready + p.starting for p in result.timeline]  # ready or starting
    paid = [paid_replicas(p) for p in result.timeline]
    if t:
        ax.fill_between(t, 0, ready, step="post", color=COLORS[0], alpha=0.7, label="ready")
        ax.fill_between(t, ready, up, step="post", color=COLORS[1], alpha=0.7, label="starting")
        if any(p.stopping for p in result.timeline):
            ax.fill_between(t, up, paid, step="post", color="#bbbbbb", alpha=0.7, label="stopping")
    if provisioned is not None and result.mode != PROVISIONED:
        ax.axhline(
            provisioned,
            color=COLORS[4],
            linestyle="-.",
            linewidth=1,
            label=f"{PROVISIONED} ({provisioned})",
        )
    k = result.metrics.slots_per_replica
    if result.demand and k:
        ax.step(
            [d.t_s for d in result.demand],
            [d.slots / k for d in result.demand],
            where="post",
            color="k",
            linestyle=":",
            linewidth=1,
            label="needed (offered load / K)",
        )
    ax.axvline(result.metrics.burst_start_s, color=COLORS[2], linestyle="--", linewidth=1)
    ax.set_ylabel("replicas")
    ax.grid(alpha=0.3)


def _latency(ax: Any, result: SpikeResult) -> None:
    ok = [
        (r.sent_s, max(r.latency_s, MIN_LATENCY_S))
        for r in result.records
        if r.latency_s and r.sent_s is not None
    ]
    failed = [
        (r.sent_s, max(r.done_s - r.sent_s, MIN_LATENCY_S))
        for r in result.records
        if not r.ok and r.sent_s is not None and r.done_s is not None
    ]
    if ok:
        ax.scatter(*zip(*ok, strict=True), s=3, color=COLORS[0], alpha=0.35, label="latency")
        span = max(t for t, _ in ok) - min(t for t, _ in ok)
        rolling = rolling_percentile(ok, window_s=max(span / 30, 1.0), q=50)
        if rolling:
            ax.plot(*zip(*rolling, strict=True), color="k", linewidth=1.2, label="rolling P50")
    if failed:
        ax.scatter(*zip(*failed, strict=True), s=12, marker="x", color=COLORS[2], label="failed")
    ax.axvline(result.metrics.burst_start_s, color=COLORS[2], linestyle="--", linewidth=1)
    ax.set_xlabel("seconds since the replay started")
    ax.set_ylabel("latency (s)")
    ax.grid(alpha=0.3)


def plot_spike(results: Sequence[SpikeResult], path: Path, modes: Sequence[str] = MODES) -> Path:
    """Replicas and latency over time, one column per mode, same scales in every column."""
    plt = _pyplot()
    by_mode = {r.mode: r for r in results}
    order = _ordered(list(by_mode), modes)
    fig, axes = plt.subplots(
        2,
        max(1, len(order)),
        sharex=True,
        sharey="row",
        figsize=(4.4 * max(1, len(order)), 6.8),
        dpi=120,
        squeeze=False,
    )
    latencies = [r.latency_s for res in results for r in res.records if r.latency_s]
    floor = by_mode.get(PROVISIONED)
    provisioned = max(map(paid_replicas, floor.timeline), default=None) if floor else None
    versus = versus_provisioned({r.mode: r.metrics for r in results})
    for col, mode in enumerate(order):
        result = by_mode[mode]
        m = result.metrics
        p50 = f"{m.p50_s:.2f} s" if m.p50_s is not None else "-"
        ttc = f"{m.time_to_capacity_s:.1f} s" if m.time_to_capacity_s is not None else "never"
        cost = f"{m.replica_seconds:.0f} replica-s" if m.replica_seconds is not None else ""
        v = versus.get(mode)
        if v is not None and mode != PROVISIONED and v.cost_fraction is not None:
            p50_ratio = f"P50 {v.p50_ratio:.2f}x, " if v.p50_ratio is not None else ""
            cost += f" ({p50_ratio}cost {v.cost_fraction:.2f} of {PROVISIONED})"
        axes[0][col].set_title(
            f"{mode}\nP50 {p50}, to capacity {ttc}, lost {m.lost}\n{cost}", fontsize=9
        )
        _replicas(axes[0][col], result, provisioned)
        _latency(axes[1][col], result)
    # headroom, so that a line at the top (provisioned's replicas) stays visible
    axes[0][0].set_ylim(0, axes[0][0].get_ylim()[1] * 1.1)
    if latencies and max(latencies) / max(min(latencies), MIN_LATENCY_S) > 20:
        axes[1][0].set_yscale("log")  # shared: every column follows
    for row in axes:
        if row[0].get_legend_handles_labels()[0]:
            row[0].legend(fontsize=7, loc="upper left")
    return _save(fig, plt, path)


def plot_startup(
    results: Sequence[StartupResult], path: Path, modes: Sequence[str] = MODES
) -> Path:
    """Stacked horizontal bars per (mode, tier): the median of each phase; total annotated."""
    plt = _pyplot()
    groups: dict[tuple[str, str], list[StartupResult]] = {}
    for r in results:
        groups.setdefault((r.mode, r.tier), []).append(r)
    tiers = _ordered(list(dict.fromkeys(t for _, t in groups)), TIERS)
    keys = [
        (m, t) for m in _ordered([m for m, _ in groups], modes) for t in tiers if (m, t) in groups
    ]
    fig, ax = plt.subplots(figsize=(7.2, 0.5 * len(keys) + 1.6), dpi=120)
    labels = [f"{m} / {t}" for m, t in keys]
    left = [0.0] * len(keys)
    with_model = any(r.model_phase_s is not None for r in results)
    segments = [p for p in PHASES if with_model or p[0] != "model_phase_s"] + [("other", "other")]
    for i, (field, label) in enumerate(segments):
        widths = []
        for (m, t), base in zip(keys, left, strict=True):
            runs = groups[(m, t)]
            if field == "other":
                widths.append(max(0.0, median(r.total_s for r in runs) - base))
            else:
                widths.append(float(median(getattr(r, field) or 0.0 for r in runs)))
        color = COLORS[i] if field != "other" else "#bbbbbb"
        ax.barh(labels, widths, left=left, color=color, label=label)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    for y, (m, t) in enumerate(keys):
        total = median(r.total_s for r in groups[(m, t)])
        ax.annotate(f" {total:.1f} s", (left[y], y), va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds until the replica is ready (median)")
    ax.set_title("Replica startup by phase")
    ax.set_xlim(0, max(left, default=1.0) * 1.15 or 1.0)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=len(segments))
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, plt, path)


def plot_fanout(
    results: Sequence[FanoutResult],
    out_dir: Path,
    modes: Sequence[str] = MODES,
    prefix: str = "scaleout",
) -> list[Path]:
    """Two bar charts: wall time and upstream bytes (x the image) per mode, samples as dots."""
    several = len({r.nodes for r in results}) > 1

    def name(r: FanoutResult) -> str:
        what = r.mode + (", fetch only" if r.scenario == FANOUT_FETCH else "")
        return f"{what}, {r.nodes} nodes" if several else what

    rank = {m: i for i, m in enumerate(_ordered([r.mode for r in results], modes))}
    ordered = sorted(results, key=lambda r: (rank[r.mode], r.nodes))
    walls: dict[str, list[float]] = {}
    upstream: dict[str, list[float]] = {}
    for r in ordered:
        walls.setdefault(name(r), []).append(r.wall_s)
        if r.image_bytes:
            upstream.setdefault(name(r), []).append(r.upstream_bytes / r.image_bytes)
    nodes = "" if several else f" ({results[0].nodes} nodes)" if results else ""
    paths = [
        bar_chart(
            out_dir / f"{prefix}-fanout-wall.png",
            f"Fan-out: every node starts the image{nodes}",
            "wall time, s (lower is better)",
            {k: float(median(v)) for k, v in walls.items()},
            walls,
        )
    ]
    if upstream:
        paths.append(
            bar_chart(
                out_dir / f"{prefix}-fanout-upstream.png",
                f"Fan-out: bytes fetched from the upstream{nodes}",
                "x the image (1 is ideal)",
                {k: float(median(v)) for k, v in upstream.items()},
                upstream,
            )
        )
    with_nodes = [r for r in ordered if r.per_node]
    if with_nodes:
        paths.append(plot_fanout_nodes(with_nodes, out_dir / f"{prefix}-fanout-nodes.png", name))
    return paths


def plot_fanout_nodes(results: Sequence[FanoutResult], path: Path, name: Any) -> Path:
    """Left: nodes holding every byte over time, a line per run; right: what each node sent
    its peers (x the image), a marker per node."""
    plt = _pyplot()
    fig, (done, sent) = plt.subplots(1, 2, figsize=(11, 4))
    for i, r in enumerate(results):
        color = COLORS[i % len(COLORS)]
        times = sorted(n.done_s for n in r.per_node)
        done.step([0.0, *times], range(len(times) + 1), where="post", color=color, label=name(r))
        total = r.image_bytes + r.model_bytes or 1
        uploads = [n.lan_tx / total for n in r.per_node]
        sent.plot(range(len(uploads)), uploads, "o", color=color, label=name(r))
    done.set_xlabel("seconds since every node asked")
    done.set_ylabel("nodes holding every byte")
    done.set_title("Fan-out: nodes done over time")
    done.grid(alpha=0.3)
    sent.set_xlabel("node")
    sent.set_ylabel("sent to peers, x the image")
    sent.set_title("What each node uploaded")
    sent.grid(alpha=0.3)
    done.legend(fontsize=7, loc="lower right")
    return _save(fig, plt, path)
