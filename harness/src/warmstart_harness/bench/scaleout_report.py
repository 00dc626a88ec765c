"""The scale-out benchmark's report: JSON (schema below), a markdown table, PNG plots.

JSON schema ``warmstart.bench.scaleout/1``::

    {"schema": "warmstart.bench.scaleout/1",
     "modes": ["baseline", "registry-proxy", "warmstart"],
     "scenarios": ["spike", "startup", "fanout"],          # those that ran
     "environment": {...}, "params": {...},
     "spike": [{"mode": str, "metrics": {SpikeMetrics fields},
                "records": {"columns": [RequestRecord fields], "rows": [[...], ...]},
                "timeline": {"columns": [TimelinePoint fields], "rows": [...]},
                "demand": {"columns": ["t_s", "slots"], "rows": [...]}}, ...],
     "startup": [{StartupResult fields}, ...],
     "fanout": [{FanoutResult fields}, ...],
     "prewarm": [{PrewarmResult fields}, ...],
     "summary": [{"scenario", "metric", "unit", "values": {mode: number | null},
                  "ratio", "ratio_value", "target", "met"}, ...],
     "spike_cost": {"definition": str,                       # when the spike ran
                    "window_s": number | null,               # replica-seconds over [0, this)
                    "rows": [{SpikeCostRow fields}, ...],    # one per spike run
                    "summary": [str, ...]}}                  # vs provisioned, one line each

``summary`` and ``spike_cost`` are derived (the tables' rows); :func:`from_json` ignores them.
Times are seconds, bytes are bytes; ``null`` means not measured or never happened (a time to
capacity never met). Replica-seconds: see
:data:`~warmstart_harness.bench.scaleout_spike_cost.REPLICA_SECONDS_DEFINITION`.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, fields
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from statistics import median
from typing import Any

from warmstart_harness.bench.scaleout_fanout_report import fanout_node_table
from warmstart_harness.bench.scaleout_plots import plot_fanout, plot_spike, plot_startup
from warmstart_harness.bench.scaleout_rows import (
    STARTUP_REFERENCE_TIER,
)
from warmstart_harness.bench.scaleout_spike_cost import spike_cost_json, spike_cost_table
from warmstart_harness.bench.scaleout_summary import TIER_ORDER, table_rows
from warmstart_harness.bench.scaleout_types import (
    BASELINE,
    TIERS,
    DemandPoint,
    FanoutResult,
    PrewarmResult,
    RequestRecord,
    ScaleoutResults,
    SpikeMetrics,
    SpikeResult,
    StartupResult,
    TimelinePoint,
)

SCHEMA = "warmstart.bench.scaleout/1"


# -- environment --------------------------------------------------------------------------------


def _proc_field(path: str, key: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return value.strip()
    except OSError:
        return None
    return None


def environment_info(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Where the benchmark ran: interpreter, OS, CPUs, memory, package versions, when."""

    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    mem = _proc_field("/proc/meminfo", "MemTotal")
    info: dict[str, Any] = {
        "time_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _proc_field("/proc/cpuinfo", "model name"),
        "memory_bytes": int(mem.split()[0]) * 1024 if mem and mem.split()[0].isdigit() else None,
        "warmstart": version("warmstart"),
        "aiohttp": version("aiohttp"),
    }
    info.update(extra or {})
    return info


# -- JSON ---------------------------------------------------------------------------------------


def _columns(cls: type, items: Sequence[Any]) -> dict[str, Any]:
    names = [f.name for f in fields(cls)]
    return {"columns": names, "rows": [[getattr(i, n) for n in names] for i in items]}


def _from_columns(cls: Callable[..., Any], table: Mapping[str, Any]) -> list[Any]:
    names = table["columns"]
    return [cls(**dict(zip(names, row, strict=True))) for row in table["rows"]]


def _spike_to_json(result: SpikeResult) -> dict[str, Any]:
    return {
        "mode": result.mode,
        "metrics": asdict(result.metrics),
        "records": _columns(RequestRecord, result.records),
        "timeline": _columns(TimelinePoint, result.timeline),
        "demand": _columns(DemandPoint, result.demand),
        "upstream_bytes": result.upstream_bytes,
        "upstream_model_bytes": result.upstream_model_bytes,
        "links": result.links,
    }


def _spike_from_json(doc: Mapping[str, Any]) -> SpikeResult:
    return SpikeResult(
        mode=doc["mode"],
        records=_from_columns(RequestRecord, doc["records"]),
        timeline=_from_columns(TimelinePoint, doc["timeline"]),
        metrics=SpikeMetrics(**doc["metrics"]),
        demand=_from_columns(DemandPoint, doc.get("demand", {"columns": [], "rows": []})),
        upstream_bytes=doc.get("upstream_bytes"),
        upstream_model_bytes=doc.get("upstream_model_bytes"),
        links=doc.get("links"),
    )


def scenarios(results: ScaleoutResults) -> list[str]:
    """The scenarios that have results, in a fixed order."""
    present = {
        "spike": results.spike,
        "startup": results.startup,
        "fanout": results.fanout,
        "prewarm": results.prewarm,
    }
    return [name for name, items in present.items() if items]


def to_json(results: ScaleoutResults) -> dict[str, Any]:
    """The whole run as a JSON-ready dict (see the module for the schema)."""
    return {
        "schema": SCHEMA,
        "modes": list(results.modes),
        "scenarios": scenarios(results),
        "environment": results.environment,
        "params": results.params,
        "spike": [_spike_to_json(r) for r in results.spike],
        "startup": [asdict(r) for r in results.startup],
        "fanout": [asdict(r) for r in results.fanout],
        "prewarm": [asdict(r) for r in results.prewarm],
        "summary": [row.to_json() for row in table_rows(results)],
        **({"spike_cost": spike_cost_json(results)} if results.spike else {}),
    }


def from_json(doc: Mapping[str, Any]) -> ScaleoutResults:
    """Results back from :func:`to_json`'s output; ``ValueError`` for another schema."""
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} document (schema: {doc.get('schema')!r})")
    return ScaleoutResults(
        spike=[_spike_from_json(s) for s in doc.get("spike", [])],
        startup=[StartupResult(**s) for s in doc.get("startup", [])],
        fanout=[FanoutResult.from_json(f) for f in doc.get("fanout", [])],
        prewarm=[PrewarmResult(**p) for p in doc.get("prewarm", [])],
        modes=tuple(doc["modes"]),
        params=dict(doc.get("params", {})),
        environment=dict(doc.get("environment", {})),
    )


def dumps(doc: Mapping[str, Any]) -> str:
    """Indented JSON, but one line per row of a ``{"columns", "rows"}`` table (strict JSON)."""
    tables: dict[str, str] = {}

    def compact(value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {"columns", "rows"}:
                key = f"@@rows{len(tables)}@@"
                rows = ",\n".join(
                    json.dumps(r, separators=(",", ":"), allow_nan=False) for r in value["rows"]
                )
                tables[key] = f"[\n{rows}\n]" if rows else "[]"
                return {"columns": value["columns"], "rows": key}
            return {k: compact(v) for k, v in value.items()}
        if isinstance(value, list):
            return [compact(v) for v in value]
        return value

    text = json.dumps(compact(doc), indent=2, allow_nan=False)
    for key, rows in tables.items():
        text = text.replace(f'"{key}"', rows, 1)
    return text + "\n"


def write_json(results: ScaleoutResults, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(to_json(results)), encoding="utf-8")
    return path


def read_json(path: Path) -> ScaleoutResults:
    return from_json(json.loads(path.read_text(encoding="utf-8")))


def link_table(results: ScaleoutResults) -> str:
    """Bytes on each node's links during each start that recorded them (the cold starts)."""
    lines = [
        "| mode | tier | node | from upstream MiB | LAN in MiB | LAN out MiB |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in results.startup:
        for node, c in sorted((r.links or {}).items()):
            lines.append(
                f"| {r.mode} | {r.tier} | {node} | {c.get('upstream_rx', 0) / 2**20:.0f} "
                f"| {c.get('lan_rx', 0) / 2**20:.0f} | {c.get('lan_tx', 0) / 2**20:.0f} |"
            )
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def held_table(results: ScaleoutResults) -> str:
    """What each node's agent held before each start (a "peer" start must find nothing on its
    own node, a "cold" one nothing anywhere)."""
    lines = [
        "| mode | tier | started on | held there MiB | held by the others MiB |",
        "|---|---|---|---:|---|",
    ]
    for r in results.startup:
        if r.held is None:
            continue
        others = ", ".join(
            f"{node} {n / 2**20:.0f}" for node, n in sorted(r.held.items()) if node != r.node
        )
        lines.append(
            f"| {r.mode} | {r.tier} | {r.node} | {r.held.get(r.node, 0) / 2**20:.0f} "
            f"| {others or '-'} |"
        )
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def prewarm_table(results: ScaleoutResults) -> str:
    """One row per tier a hot pre-warm started from: where its time went. A model's row: its
    ``link s`` is the materialisation (raw layers hard-linked), ``blobs linked`` its files."""
    lines = [
        "| mode | what | pre-warm from | fetch s | link s | import s | of which unpack s "
        "| total s | blobs linked | upstream MiB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    tier_order = {t: i for i, t in enumerate(reversed(TIERS))}
    for r in sorted(
        results.prewarm,
        key=lambda r: (r.mode, r.kind != "image", tier_order.get(r.tier, 99)),
    ):
        linked = f"{r.linked}" + (
            f" files, {r.linked_bytes / 2**20:.0f} MiB" if r.kind == "model" and r.linked else ""
        )
        digits = 2 if r.kind == "model" else 1  # a model's pre-warm from warm takes ms
        lines.append(
            f"| {r.mode} | {r.kind} | {r.tier} | {r.fetch_s:.{digits}f} | {r.link_s:.2f} "
            f"| {r.import_s:.1f} | {r.unpack_s:.1f} | {r.total_s:.{digits}f} | {linked} "
            f"| {r.upstream_bytes / 2**20:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _cell(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "count":
        return f"{value:.0f}"
    if unit == "s":
        return f"{value:.2f} s" if value < 1000 else f"{value:.0f} s"
    if unit == "x":
        return f"{value:.2f}x"
    if unit in ("x image", "x model"):
        return f"{value:.2f}x"
    if unit == "fraction":
        return f"{value:.2f}"
    if unit == "MiB":
        return f"{value:.0f} MiB"
    return f"{value:.1f} {unit}"


def markdown_table(results: ScaleoutResults) -> str:
    """Rows: scenario metrics; columns: each mode, ratio vs baseline, target, met/missed."""
    modes = list(results.modes)
    lines = [
        "| scenario | metric | " + " | ".join(modes) + " | ratio vs baseline | target | met |",
        "|---|---|" + "---:|" * len(modes) + "---:|---|---|",
    ]
    for row in table_rows(results):
        cells = [_cell(row.values.get(m), row.unit) for m in modes]
        if row.metric == "time to capacity":
            cells = [
                "never" if c == "-" and m in row.values else c
                for c, m in zip(cells, modes, strict=True)
            ]
        met = "" if not row.target else {True: "met", False: "missed", None: "n/a"}[row.met]
        lines.append(
            f"| {row.scenario} | {row.metric} | "
            + " | ".join(cells)
            + f" | {row.ratio or '-'} | {row.target or '-'} | {met} |"
        )
    return "\n".join(lines) + "\n"


def startup_phase_table(results: ScaleoutResults) -> str:
    """One row per mode and tier: where a replica's start went, from "start a replica" to
    "first request answered" (medians over repeated starts).

    ``model s`` is the model's whole fetch: through the node's agent it runs beside the pull
    and unpack (the part they did not hide is what it adds), a replica's own download runs
    after its container started (then it is not in the load column); ``-``: no model."""
    with_model = any(r.model_s is not None for r in results.startup)
    # --puller cri: the pull is the CRI's PullImage, which unpacks while it fetches (no split)
    cri = results.params.get("puller") == "cri"
    pull = "pull s (CRI PullImage: fetch + unpack)" if cri else "pull s"
    lines = [
        f"| mode | tier | {pull} | unpack s | model s | start s | model load + first answer s "
        "| total s | vs baseline cold | upstream MiB |"
        + (" of it model MiB |" if with_model else ""),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if with_model else ""),
    ]
    groups: dict[tuple[str, str], list[StartupResult]] = {}
    for r in results.startup:
        groups.setdefault((r.mode, r.tier), []).append(r)
    cold = groups.get((BASELINE, STARTUP_REFERENCE_TIER))
    cold_total = median([r.total_s for r in cold]) if cold else None
    order = {m: i for i, m in enumerate(results.modes)}
    tier_order = {t: i for i, t in enumerate(TIER_ORDER)}
    for (mode, tier), items in sorted(
        groups.items(), key=lambda kv: (order.get(kv[0][0], 99), tier_order.get(kv[0][1], 99))
    ):
        m = {
            k: median([getattr(r, k) for r in items])
            for k in ("pull_s", "unpack_s", "start_s", "load_s", "total_s", "upstream_bytes",
                      "upstream_model_bytes")
        }  # fmt: skip
        fetches = [r.model_s for r in items if r.model_s is not None]
        model = f"{median(fetches):.1f}" if fetches else "-"
        ratio = f"{cold_total / m['total_s']:.1f}x" if cold_total and m["total_s"] else "-"
        unpack = "-" if cri else f"{m['unpack_s']:.1f}"
        line = (
            f"| {mode} | {tier} | {m['pull_s']:.1f} | {unpack} | {model} "
            f"| {m['start_s']:.2f} | {m['load_s']:.1f} | {m['total_s']:.1f} | {ratio} "
            f"| {m['upstream_bytes'] / 2**20:.0f} |"
        )
        if with_model:
            line += f" {m['upstream_model_bytes'] / 2**20:.0f} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


# -- everything ---------------------------------------------------------------------------------


def write_report(
    results: ScaleoutResults,
    json_path: Path | None,
    out_dir: Path | None,
    prefix: str = "scaleout",
) -> list[Path]:
    """JSON to ``json_path``; the table (``{prefix}.md``) and the plots to ``out_dir``."""
    written: list[Path] = []
    if json_path is not None:
        written.append(write_json(results, json_path))
    if out_dir is None:
        return written
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / f"{prefix}.md"
    text = markdown_table(results)
    changed = results.params.get("agent_settings") or {}
    if changed:  # a comparison run: say it before anything else
        settings = ", ".join(f"{k} = {json.dumps(v)}" for k, v in sorted(changed.items()))
        text = f"Agents ran with settings other than the defaults: {settings}.\n\n" + text
    if results.spike:
        text += "\n" + spike_cost_table(results)
    if results.startup:
        text += "\n" + startup_phase_table(results)
    if any(r.held is not None for r in results.startup):
        text += "\n" + held_table(results)
    if results.prewarm:
        text += "\n" + prewarm_table(results)
    if any(r.links for r in results.startup):
        text += "\n" + link_table(results)
    if any(r.per_node for r in results.fanout):
        text += "\n" + fanout_node_table(results)
    table.write_text(text, encoding="utf-8")
    written.append(table)
    if results.spike:
        written.append(plot_spike(results.spike, out_dir / f"{prefix}-spike.png", results.modes))
    if results.startup:
        written.append(
            plot_startup(results.startup, out_dir / f"{prefix}-startup.png", results.modes)
        )
    if results.fanout:
        written += plot_fanout(results.fanout, out_dir, results.modes, prefix)
    return written
