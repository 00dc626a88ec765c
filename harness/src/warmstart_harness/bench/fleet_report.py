"""``warmstart bench fleet``: both policies over each fleet size, then a table, JSON and a plot.

JSON schema ``warmstart.bench.fleet/1``::

    {"schema": "warmstart.bench.fleet/1",
     "simulated": true,
     "params": {FleetParams fields but nodes, "pieces": {PieceParams fields}},
     "rows": {"columns": [FleetRow fields], "rows": [[...], ...]},      # one per nodes x policy
     "completions": [{"nodes": int, "policy": str, "seconds": [float, ...]}, ...]}  # by node

Times are simulated seconds except ``sim_cpu_s`` and ``sim_wall_s`` (what the simulation itself
took on this machine); bytes are bytes; rates bytes/s.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from warmstart.units import format_rate
from warmstart_harness.bench.fleet_hardware import FleetParams
from warmstart_harness.bench.fleet_policies import POLICIES, PieceParams, RunResult, simulate
from warmstart_harness.bench.scaleout_report import dumps
from warmstart_harness.bench.spike_metrics import percentile

SCHEMA = "warmstart.bench.fleet/1"
COLORS = {"one-home": "#e76f51", "pieces": "#2a9d8f"}  # the project's palette (bench.plots)


@dataclass(frozen=True)
class FleetRow:
    """One policy over one fleet size: the table's row."""

    nodes: int
    policy: str
    size_bytes: int
    nic_rate: float | None
    p50_s: float
    p99_s: float
    max_s: float
    floor_s: float  # size over the first hop's rate: no node can be done sooner
    upstream_bytes: int
    largest_upload_bytes: int
    piece_size: int | None  # of the largest blob; None: whole
    pieces: int
    requests: int
    events: int
    sim_cpu_s: float
    sim_wall_s: float

    @property
    def p99_over_floor(self) -> float:
        return self.p99_s / self.floor_s


@dataclass
class FleetResults:
    params: FleetParams  # nodes: the first size run
    pieces: PieceParams
    rows: list[FleetRow] = field(default_factory=list)
    completions: list[tuple[int, str, tuple[float, ...]]] = field(default_factory=list)


def row_of(result: RunResult, cpu_s: float, wall_s: float) -> FleetRow:
    p = result.params
    done = result.completions_s
    largest = max(range(len(p.blob_sizes)), key=p.blob_sizes.__getitem__)
    return FleetRow(
        nodes=p.nodes,
        policy=result.policy,
        size_bytes=p.size,
        nic_rate=p.nic_rate,
        p50_s=percentile(done, 50) or 0.0,
        p99_s=percentile(done, 99) or 0.0,
        max_s=max(done),
        floor_s=p.floor_s,
        upstream_bytes=result.upstream_bytes,
        largest_upload_bytes=result.largest_upload,
        piece_size=result.piece_sizes[largest],
        pieces=result.pieces,
        requests=result.requests,
        events=result.events,
        sim_cpu_s=cpu_s,
        sim_wall_s=wall_s,
    )


def run_fleet(
    base: FleetParams,
    sizes: Sequence[int],
    pieces: PieceParams,
    policies: Sequence[str] = POLICIES,
    log: Callable[[str], None] = lambda line: None,
) -> FleetResults:
    """Simulate every policy over every fleet size (``base`` with ``nodes`` replaced), timing
    each simulation (CPU and wall clock of this process)."""
    results = FleetResults(params=base, pieces=pieces)
    for nodes in sizes:
        params = replace(base, nodes=nodes)
        for policy in policies:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            result = simulate(params, policy, pieces)
            row = row_of(result, time.process_time() - cpu0, time.perf_counter() - wall0)
            results.rows.append(row)
            results.completions.append((nodes, policy, result.completions_s))
            log(
                f"{nodes} nodes, {policy}: P50 {row.p50_s:.2f} s, P99 {row.p99_s:.2f} s "
                f"({row.events} events, {row.sim_cpu_s:.1f} s CPU)"
            )
    return results


# -- table ------------------------------------------------------------------------------------


def _gb(n: float) -> str:
    gb = n / 1e9
    return f"{gb:,.0f} GB" if gb >= 100 else f"{gb:.3g} GB"


def markdown_table(results: FleetResults) -> str:
    """One row per fleet size and policy, side by side (simulated)."""
    head = (
        "| nodes | policy | P50 | P99 | slowest node | floor (size / link) | P99 / floor "
        "| upstream bytes | largest upload of a node | piece size | simulation CPU |\n"
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in results.rows:
        piece = "whole" if r.piece_size is None else f"{r.piece_size >> 20} MiB x {r.pieces}"
        lines.append(
            f"| {r.nodes:,} | {r.policy} | {r.p50_s:.2f} s | {r.p99_s:.2f} s | {r.max_s:.2f} s "
            f"| {r.floor_s:.2f} s | {r.p99_over_floor:.2f}x "
            f"| {r.upstream_bytes / r.size_bytes:.2f}x the image "
            f"| {_gb(r.largest_upload_bytes)} ({r.largest_upload_bytes / r.size_bytes:.2f}x) "
            f"| {piece} | {r.sim_cpu_s:.1f} s |"
        )
    return "\n".join(lines)


def describe(results: FleetResults) -> str:
    """One line naming what was simulated."""
    p = results.params
    blobs = ", ".join(_gb(s) for s in p.blob_sizes)
    nic = format_rate(p.nic_rate) if p.nic_rate else "unlimited"
    upstream = format_rate(p.upstream_rate) if p.upstream_rate else "unlimited"
    pp = results.pieces
    size = "auto" if pp.piece_size is None else f"{pp.piece_size >> 20} MiB"
    tracker = f"{pp.tracker_rps:g}/s" if pp.tracker_rps else "no queue"
    return (
        f"simulated: blob(s) {blobs}, every node's NIC {nic} up and down, upstream {upstream}, "
        f"sha256 {format_rate(p.hash_rate)} per core x {p.hash_cores}, disk "
        f"{format_rate(p.disk_rate) if p.disk_rate else 'unlimited'}; latency: request "
        f"{p.request_latency * 1e3:g} ms, tracker {p.tracker_latency * 1e3:g} ms ({tracker}), "
        f"upstream {p.upstream_latency * 1e3:g} ms; pieces: {size}, {pp.requests} requests, "
        f"{pp.upload_slots} upload slots ({pp.upload_slots_downloading} while downloading), "
        f"blob digest {'checked' if pp.verify_blob_digest else 'not checked'}, home seeds "
        f"{'once' if pp.home_seeds_once else 'freely'}; seed {p.seed}"
    )


# -- JSON -------------------------------------------------------------------------------------


def to_json(results: FleetResults) -> dict[str, Any]:
    params = {k: v for k, v in asdict(results.params).items() if k != "nodes"}
    params["blob_sizes"] = list(results.params.blob_sizes)
    params["pieces"] = asdict(results.pieces)
    columns = [f.name for f in fields(FleetRow)]
    return {
        "schema": SCHEMA,
        "simulated": True,
        "params": params,
        "rows": {
            "columns": columns,
            "rows": [[getattr(r, c) for c in columns] for r in results.rows],
        },
        "completions": [
            {"nodes": n, "policy": policy, "seconds": [round(t, 6) for t in done]}
            for n, policy, done in results.completions
        ],
    }


def from_json(doc: Mapping[str, Any]) -> FleetResults:
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} document (schema: {doc.get('schema')!r})")
    raw = dict(doc["params"])
    pieces = PieceParams(**raw.pop("pieces"))
    first = doc["completions"][0]["nodes"] if doc["completions"] else 1
    params = FleetParams(nodes=first, **{**raw, "blob_sizes": tuple(raw["blob_sizes"])})
    columns = doc["rows"]["columns"]
    rows = [FleetRow(**dict(zip(columns, r, strict=True))) for r in doc["rows"]["rows"]]
    completions = [(c["nodes"], c["policy"], tuple(c["seconds"])) for c in doc["completions"]]
    return FleetResults(params=params, pieces=pieces, rows=rows, completions=completions)


def write_json(results: FleetResults, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(to_json(results)), encoding="utf-8")
    return path


def read_json(path: Path) -> FleetResults:
    return from_json(json.loads(path.read_text(encoding="utf-8")))


# -- plot -------------------------------------------------------------------------------------


def plot(results: FleetResults, path: Path) -> Path:
    """A completion CDF per policy (its own time axis; fleet size by line style), then P50
    and P99 against the fleet size, with the floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({n for n, _, _ in results.completions})
    policies = list(dict.fromkeys(policy for _, policy, _ in results.completions))
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(
        1, len(policies) + 1, figsize=(5 * (len(policies) + 1), 4.2), dpi=120, squeeze=False
    )
    floor = results.rows[0].floor_s if results.rows else None
    for cdf, policy in zip(axes[0], policies, strict=False):
        color = COLORS.get(policy, "#264653")
        for n, p, done in results.completions:
            if p == policy:
                ordered = sorted(done)
                ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
                style = styles[sizes.index(n) % len(styles)]
                cdf.step(
                    ordered, ys, where="post", color=color, linestyle=style, label=f"{n:,} nodes"
                )
        if floor:
            cdf.axvline(floor, color="grey", linewidth=0.8, linestyle=":", label="floor")
        cdf.set_xlabel("seconds until the node holds every byte (verified)")
        cdf.set_ylabel("fraction of nodes")
        cdf.set_title(f"{policy}: completion CDF (simulated)")
        cdf.grid(alpha=0.3)
        cdf.legend(fontsize=7)
    scale = axes[0][-1]
    for policy in policies:
        rows = sorted((r for r in results.rows if r.policy == policy), key=lambda r: r.nodes)
        xs = [r.nodes for r in rows]
        color = COLORS.get(policy, "#264653")
        scale.plot(xs, [r.p50_s for r in rows], "o-", color=color, label=f"{policy} P50")
        scale.plot(xs, [r.p99_s for r in rows], "s--", color=color, label=f"{policy} P99")
    if floor:
        scale.axhline(floor, color="grey", linewidth=0.8, linestyle=":", label="floor")
    scale.set_xscale("log")
    scale.set_yscale("log")
    scale.set_xticks(sizes, [f"{n:,}" for n in sizes])
    scale.minorticks_off()
    scale.set_xlabel("nodes")
    scale.set_ylabel("seconds")
    scale.set_title("P50 / P99 against fleet size (simulated)")
    scale.grid(alpha=0.3, which="both")
    scale.legend(fontsize=7)
    fig.suptitle(textwrap.fill(describe(results), 200), fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
