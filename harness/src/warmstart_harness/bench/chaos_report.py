"""The chaos soak's results: outcomes, one row per fault class, targets, tables (pure).

Every pull or start runs under a deadline and ends one of four ways (:func:`classify`):
``completed``; ``failed-clear`` (an error that names its cause: a host refused or timed out, a
blob or manifest not found, a service unavailable, no space, a budget, a digest mismatch...);
``failed-unclear`` (an error that does not: an empty message, an exit status, a cancelled
context); ``hung`` (still running at its deadline, then killed).

Nothing here reads a clock or a file: the orchestration (``warmstart_harness.bench.chaos``) records
times relative to the run's start and hands them over.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from warmstart_harness.bench.chaos_plan import (
    AGENT_CRASH,
    DISK_CORRUPT,
    FANOUT_CRASH,
    FAULT_CLASSES,
    UNCACHED,
    UPSTREAM_OUTAGE,
)

COMPLETED = "completed"
FAILED_CLEAR = "failed-clear"
FAILED_UNCLEAR = "failed-unclear"
HUNG = "hung"

# Roles of a pull in a class: what is counted in its row.
SETUP = "setup"  # puts the cluster in the state the fault needs (not counted)
BASELINE = "baseline"  # the undisturbed twin of a disturbed pull (not counted)
DURING = "during"  # runs while the fault is injected
PROBE = "probe"  # after the fault, until a pull on the node succeeds (recovery)
COUNTED_ROLES = frozenset({DURING, PROBE})

# A body that broke mid-transfer: retried (as warmstart's runtime will; ctr does not retry).
_BROKEN_BODY = re.compile(
    r"unexpected EOF|connection reset|broken pipe|short read|closed network connection|"
    r"stream error|body closed|server closed idle connection",
    re.IGNORECASE,
)
# Errors that say what went wrong (and so where to look).
_CLEAR = re.compile(
    r"connection refused|no route to host|network is unreachable|no such host|i/o timeout|"
    r"timed? ?out|deadline exceeded|not found|unavailable|no space|budget|denied|unauthorized|"
    r"forbidden|digest|unexpected EOF|connection reset|too many requests|\b50[0-4]\b|"
    r"did not answer",
    re.IGNORECASE,
)


# containerd hashed a body it received and it was not the blob: someone served wrong bytes.
_SERVED_CORRUPT = re.compile(r"unexpected commit digest", re.IGNORECASE)


def is_broken_body(error: str) -> bool:
    """Whether a failed pull's error says its body broke mid-transfer (worth a retry)."""
    return bool(_BROKEN_BODY.search(error))


def is_clear_error(error: str | None) -> bool:
    """Whether an error names its cause (see the module doc)."""
    return bool(error and error.strip() and _CLEAR.search(error))


def is_served_corrupt(error: str | None) -> bool:
    """Whether a failed pull's error says containerd received bytes that were not the blob."""
    return bool(error and _SERVED_CORRUPT.search(error))


def classify(ok: bool, timed_out: bool, error: str | None) -> str:
    if timed_out:
        return HUNG
    if ok:
        return COMPLETED
    return FAILED_CLEAR if is_clear_error(error) else FAILED_UNCLEAR


@dataclass(frozen=True)
class PullRecord:
    """One pull (``kind`` "pull") or start (pull + run, ``kind`` "start"); seconds from the
    run's start."""

    fault: str
    injection: int  # the injection's number in its class (0: none)
    node: str
    image: str
    role: str
    started_s: float
    ended_s: float
    ok: bool
    timed_out: bool = False
    error: str | None = None
    attempts: int = 1
    kind: str = "pull"
    tier: str | None = None  # upstream-outage: what the node found (HOT, WARM, PEER, UNCACHED)

    @property
    def seconds(self) -> float:
        return self.ended_s - self.started_s

    @property
    def outcome(self) -> str:
        return classify(self.ok, self.timed_out, self.error)

    @property
    def counted(self) -> bool:
        return self.role in COUNTED_ROLES

    @property
    def served_corrupt(self) -> bool:
        return is_served_corrupt(self.error)


@dataclass(frozen=True)
class InjectionRecord:
    """One fault as it happened. ``fired`` is false when the chance passed (the pull was over
    before the fault's point); ``start_s``/``end_s``: when it began and ended (the agent
    healthy again, the registry back, the storm over, ...)."""

    fault: str
    number: int
    node: str
    fired: bool
    start_s: float | None = None
    end_s: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClassResult:
    fault: str
    planned: int = 0
    injections: list[InjectionRecord] = field(default_factory=list)
    pulls: list[PullRecord] = field(default_factory=list)
    corrupt_kept: int = 0
    corrupt_files: list[str] = field(default_factory=list)
    upstream_bytes: int = 0
    upstream_direct_bytes: int = 0  # of which containerd fetched itself (mirror bypassed)
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # the class could not run to its end (harness failure)


def recovery_seconds(fault_end: float, pulls: Iterable[PullRecord], node: str) -> float | None:
    """From ``fault_end`` until the first pull on ``node`` that succeeded at or after it; None
    if none did."""
    ends = [p.ended_s for p in pulls if p.node == node and p.ok and p.ended_s >= fault_end]
    return min(ends) - fault_end if ends else None


def class_recovery(result: ClassResult) -> float | None:
    """The worst recovery over the class's fired injections (each on its node; the outage on
    every node). NaN if a fired injection never saw a successful pull afterwards."""
    worst: float | None = None
    for inj in result.injections:
        if not inj.fired or inj.end_s is None:
            continue
        nodes = inj.detail.get("recovery_nodes") or [inj.node]
        for node in nodes:
            r = recovery_seconds(inj.end_s, result.pulls, node)
            value = math.nan if r is None else r
            if worst is None or value > worst or math.isnan(value):
                worst = value
    return worst


@dataclass(frozen=True)
class ClassRow:
    fault: str
    planned: int
    injected: int
    attempted: int
    completed: int
    failed_clear: int
    failed_unclear: int
    hung: int
    corrupt_kept: int
    recover_s: float | None
    upstream_bytes: int
    upstream_direct_bytes: int
    notes: str


def summarize(result: ClassResult) -> ClassRow:
    counted = [p for p in result.pulls if p.counted]
    outcomes = [p.outcome for p in counted]
    notes = list(result.notes)
    bad = served_corrupt(result)
    if bad:
        notes.insert(0, f"{bad} body(ies) served that did not match the digest")
    if result.error:
        notes.insert(0, f"stopped early: {result.error}")
    return ClassRow(
        fault=result.fault,
        planned=result.planned,
        injected=sum(1 for i in result.injections if i.fired),
        attempted=len(counted),
        completed=outcomes.count(COMPLETED),
        failed_clear=outcomes.count(FAILED_CLEAR),
        failed_unclear=outcomes.count(FAILED_UNCLEAR),
        hung=outcomes.count(HUNG),
        corrupt_kept=result.corrupt_kept,
        recover_s=class_recovery(result),
        upstream_bytes=result.upstream_bytes,
        upstream_direct_bytes=result.upstream_direct_bytes,
        notes="; ".join(notes),
    )


# -- the soak ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    t_s: float
    rss_kib: int
    fds: int


@dataclass
class SoakResult:
    seconds: float
    clients: int
    images: int
    warmup_s: float = 0.0
    pulls: int = 0
    blob_gets: int = 0
    aborted_gets: int = 0  # reads given up after the first chunk on purpose
    errors: int = 0
    bytes: int = 0
    corrupt_served: int = 0  # complete bodies whose bytes did not hash to their digest
    samples: list[Sample] = field(default_factory=list)  # under load
    start: Sample | None = None  # quiet: after the warm-up, before the load
    end: Sample | None = None  # quiet: after the load, same connections open
    first_errors: list[str] = field(default_factory=list)


def change(start: float, end: float) -> float:
    """Relative change from ``start`` to ``end`` (0.1 = +10 %)."""
    return (end - start) / start if start else math.inf


def is_flat(start: float, end: float, tolerance: float) -> bool:
    return abs(change(start, end)) <= tolerance


# -- targets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    target: str
    measured: str
    met: bool | None  # None: could not be measured


def _victim(result: ClassResult, pull: PullRecord) -> str | None:
    """The node killed in the injection a pull belongs to."""
    for i in result.injections:
        if i.number == pull.injection:
            return i.node
    return None


def served_corrupt(result: ClassResult) -> int:
    """Bodies a client received complete that were not the blob: containerd refused them at
    commit (pulls), or a plain client's hash did not match (``corrupt_served`` of an
    injection)."""
    refused = sum(1 for p in result.pulls if p.served_corrupt)
    return refused + sum(int(i.detail.get("corrupt_served", 0)) for i in result.injections)


def crash_ratios(result: ClassResult) -> list[tuple[str, float | None]]:
    """Per agent-crash injection that fired (``"#N variant"``): disturbed pull time / its
    undisturbed twin's (None if the disturbed pull did not complete)."""
    out: list[tuple[str, float | None]] = []
    for inj in result.injections:
        if not inj.fired:
            continue
        name = " ".join(x for x in (f"#{inj.number}", inj.detail.get("variant")) if x)
        mine = [p for p in result.pulls if p.injection == inj.number]
        during = [p for p in mine if p.role == DURING]
        twin = [p for p in mine if p.role == BASELINE and p.ok]
        if not during or not twin or not during[0].ok:
            out.append((name, None))
            continue
        out.append((name, during[0].seconds / twin[0].seconds))
    return out


def outage_cached_starts(result: ClassResult) -> tuple[int, int]:
    """(succeeded, attempted) starts of cached images during the outage."""
    starts = [p for p in result.pulls if p.role == DURING and p.tier and p.tier != UNCACHED]
    return sum(1 for p in starts if p.ok), len(starts)


def outage_uncached_fail_s(result: ClassResult) -> list[float]:
    """How long each start of the uncached image took to fail during the outage."""
    return [
        p.seconds
        for p in result.pulls
        if p.role == DURING and p.tier == UNCACHED and not p.ok and not p.timed_out
    ]


def _fmt_ratio(r: float | None) -> str:
    return "did not complete" if r is None else f"{r:.2f}x"


def _all_zero(name: str, goal: str, counts: Mapping[str, int], nothing: str) -> Target:
    """A target met when every count (by class) is 0; not judged (None) when none ran."""
    return Target(
        name,
        goal,
        ", ".join(f"{f} {n}" for f, n in counts.items()) or nothing,
        all(n == 0 for n in counts.values()) if counts else None,
    )


def evaluate_targets(
    classes: Sequence[ClassResult], soak: SoakResult | None, tolerance: float = 0.10
) -> list[Target]:
    rows = {c.fault: summarize(c) for c in classes}
    by_fault = {c.fault: c for c in classes}
    out: list[Target] = []
    kept = {f: r.corrupt_kept for f, r in rows.items()}
    out.append(_all_zero("corrupt blobs kept", "0 in every class", kept, "no class ran"))
    hung = {f: r.hung for f, r in rows.items()}
    out.append(_all_zero("hung pulls", "0 in every class", hung, "no class ran"))
    crash = by_fault.get(AGENT_CRASH)
    if crash is not None:
        ratios = crash_ratios(crash)
        out.append(
            Target(
                "pull interrupted by an agent crash",
                "completes after restart in <= 2x its undisturbed time",
                ", ".join(f"{n} {_fmt_ratio(r)}" for n, r in ratios) or "no crash fired",
                all(r is not None and r <= 2.0 for _, r in ratios) if ratios else None,
            )
        )
    outage = by_fault.get(UPSTREAM_OUTAGE)
    if outage is not None:
        ok, total = outage_cached_starts(outage)
        fails = outage_uncached_fail_s(outage)
        out.append(
            Target(
                "starts of cached images during the upstream outage",
                "100 % succeed",
                f"{ok}/{total}" + (f" ({100 * ok / total:.0f} %)" if total else ""),
                ok == total if total else None,
            )
        )
        out.append(
            Target(
                "starts of an uncached image during the outage",
                "fail fast with a clear error",
                (
                    f"{len(fails)} failed, slowest after {max(fails):.1f} s"
                    if fails
                    else "none failed"
                ),
                None,
            )
        )
    fanout = by_fault.get(FANOUT_CRASH)
    if fanout is not None:
        fired = [i for i in fanout.injections if i.fired]
        survivors_ok = all(
            p.ok for p in fanout.pulls if p.role == DURING and p.node != _victim(fanout, p)
        )
        upstream_ratios = [
            i.detail.get("upstream_layer_bytes", 0) / max(1, i.detail.get("blob_bytes", 1))
            for i in fired
        ]
        out.append(
            Target(
                "fan-out (pieces) with a peer killed mid-way",
                "the other nodes finish; the upstream sends the agents the layer once (<= 1.05x)",
                (
                    ", ".join(
                        f"#{i.number} {r:.2f}x" for i, r in zip(fired, upstream_ratios, strict=True)
                    )
                    + ("" if survivors_ok else "; a surviving node's pull failed")
                )
                if fired
                else "no crash fired",
                (survivors_ok and all(r <= 1.05 for r in upstream_ratios)) if fired else None,
            )
        )
    corrupt = by_fault.get(DISK_CORRUPT)
    if corrupt is not None:
        fired = [i for i in corrupt.injections if i.fired]
        good = [
            i
            for i in fired
            if all(
                i.detail.get(k)
                for k in ("verify_reported", "verify_removed", "next_pull_ok", "containerd_copy_ok")
            )
        ]
        out.append(
            Target(
                "a blob corrupted on disk",
                "store verify reports and removes it; the next pull gets the right bytes",
                f"{len(good)}/{len(fired)} injections"
                + "".join(
                    f"; #{i.number} {i.detail.get('variant')}: containerd kept the same file "
                    "until removed as verify advised"
                    for i in fired
                    if i.detail.get("corrupt_kept_after_verify")
                ),
                len(good) == len(fired) if fired else None,
            )
        )
    served = {c.fault: served_corrupt(c) for c in classes}
    if soak is not None:
        served["soak"] = soak.corrupt_served
    out.append(
        _all_zero(
            "bodies served that were not the blob (to containerd or a client)",
            "0 (no client gets a complete body that is not the blob)",
            served,
            "nothing ran",
        )
    )
    if soak is not None and soak.start is not None and soak.end is not None:
        for what, attr in (("agent RSS", "rss_kib"), ("agent open fds", "fds")):
            a, b = getattr(soak.start, attr), getattr(soak.end, attr)
            out.append(
                Target(
                    f"{what} across the soak",
                    f"flat (within +-{tolerance:.0%})",
                    f"{a} -> {b} ({change(a, b):+.1%})",
                    is_flat(a, b, tolerance),
                )
            )
    return out


# -- rendering --------------------------------------------------------------------------------


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f}"


def _seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if math.isnan(s):
        return "never"
    return f"{s:.1f}"


def _mark(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "-"}[met]


def class_table(classes: Sequence[ClassResult]) -> str:
    lines = [
        "| fault | injected | attempted | completed | failed, clear error | failed, unclear "
        "| hung (target 0) | corrupt kept (target 0) | recover s "
        "| upstream MiB (containerd direct) | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in sorted(classes, key=lambda c: FAULT_CLASSES.index(c.fault)):
        r = summarize(c)
        lines.append(
            f"| {r.fault} | {r.injected}/{r.planned} | {r.attempted} | {r.completed} "
            f"| {r.failed_clear} | {r.failed_unclear} | {r.hung} | {r.corrupt_kept} "
            f"| {_seconds(r.recover_s)} | {_mib(r.upstream_bytes)} "
            f"({_mib(r.upstream_direct_bytes)}) | {r.notes} |"
        )
    return "\n".join(lines)


def soak_table(soak: SoakResult, tolerance: float = 0.10) -> str:
    lines = [
        f"| soak ({soak.clients} clients, {soak.images} images, {soak.seconds:.0f} s) "
        f"| start | end | max | change | flat (+-{tolerance:.0%}) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    if soak.start is None or soak.end is None:
        return "\n".join([*lines, "| (no samples) | | | | | |"])
    samples = [soak.start, *soak.samples, soak.end]
    for what, attr, fmt in (
        ("agent RSS (MiB)", "rss_kib", lambda v: f"{v / 1024:.1f}"),
        ("agent open fds", "fds", str),
    ):
        a, b = getattr(soak.start, attr), getattr(soak.end, attr)
        top = max(getattr(s, attr) for s in samples)
        lines.append(
            f"| {what} | {fmt(a)} | {fmt(b)} | {fmt(top)} | {change(a, b):+.1%} "
            f"| {'yes' if is_flat(a, b, tolerance) else 'NO'} |"
        )
    return "\n".join(lines)


def soak_line(soak: SoakResult) -> str:
    return (
        f"soak: {soak.pulls} image pulls, {soak.blob_gets} blob GETs ({soak.aborted_gets} "
        f"aborted on purpose), {soak.bytes / 2**30:.1f} GiB, {soak.errors} errors, "
        f"{soak.corrupt_served} corrupt bodies; warm-up {soak.warmup_s:.1f} s"
    )


def targets_table(targets: Sequence[Target]) -> str:
    lines = ["| target | wanted | measured | |", "|---|---|---|---|"]
    for t in targets:
        lines.append(f"| {t.name} | {t.target} | {t.measured} | {_mark(t.met)} |")
    return "\n".join(lines)


@dataclass
class ChaosResults:
    params: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    classes: list[ClassResult] = field(default_factory=list)
    soak: SoakResult | None = None
    skipped: list[str] = field(default_factory=list)  # classes left out (time limit)

    def tolerance(self) -> float:
        return float(self.params.get("flat_tolerance", 0.10))

    def targets(self) -> list[Target]:
        return evaluate_targets(self.classes, self.soak, self.tolerance())


def markdown(results: ChaosResults) -> str:
    p = results.params
    head = (
        f"# warmstart bench chaos\n\nseed {p.get('seed')}, {p.get('nodes')} nodes, "
        f"{'quick' if p.get('quick') else 'full'} run, "
        f"wall {p.get('wall_s', '?')} s; CPU sha_ni flags: "
        f"{results.environment.get('sha_ni', '?')}\n"
    )
    parts = [head, class_table(results.classes)]
    if results.skipped:
        parts.append("Skipped (time limit): " + ", ".join(results.skipped))
    if results.soak is not None:
        parts += [soak_table(results.soak, results.tolerance()), soak_line(results.soak)]
    parts.append(targets_table(results.targets()))
    return "\n\n".join(parts) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def to_json(results: ChaosResults) -> dict[str, Any]:
    doc: dict[str, Any] = _jsonable(
        {
            "params": results.params,
            "environment": results.environment,
            "rows": [asdict(summarize(c)) for c in results.classes],
            "classes": [
                {
                    **asdict(c),
                    "pulls": [{**asdict(p), "outcome": p.outcome} for p in c.pulls],
                }
                for c in results.classes
            ],
            "soak": asdict(results.soak) if results.soak is not None else None,
            "skipped": results.skipped,
            "targets": [asdict(t) for t in results.targets()],
        }
    )
    return doc
