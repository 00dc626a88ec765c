from __future__ import annotations

import json
import math

import pytest

from warmstart_harness.bench.chaos_plan import (
    AGENT_CRASH,
    DISK_CORRUPT,
    DISK_FULL,
    HOT,
    PEER,
    UNCACHED,
    UPSTREAM_OUTAGE,
    WRONG_PEER,
)
from warmstart_harness.bench.chaos_report import (
    BASELINE,
    COMPLETED,
    DURING,
    FAILED_CLEAR,
    FAILED_UNCLEAR,
    HUNG,
    PROBE,
    SETUP,
    ChaosResults,
    ClassResult,
    InjectionRecord,
    PullRecord,
    Sample,
    SoakResult,
    change,
    class_recovery,
    class_table,
    classify,
    crash_ratios,
    evaluate_targets,
    is_broken_body,
    is_clear_error,
    is_flat,
    markdown,
    recovery_seconds,
    soak_table,
    summarize,
    to_json,
)

REFUSED = (
    'ctr: failed to resolve reference "r/a:v1": failed to do request: Head '
    '"http://10.9.0.1:5000/v2/a/manifests/v1": dial tcp 10.9.0.1:5000: connect: connection refused'
)
MIRROR_503 = (
    'ctr: failed to resolve reference "r/a:v1": pulling from host 10.9.3.10:5050 failed with '
    "status code [manifests v1]: 503 Service Unavailable"
)
EOF_BODY = "ctr: failed to copy: httpReadSeeker: failed read: unexpected EOF"
RESET = "ctr: read tcp 10.9.3.10:40000->10.9.3.10:5050: read: connection reset by peer"
COMMIT = (
    'ctr: failed commit on ref "layer-sha256:2e": commit failed: unexpected commit digest '
    "sha256:c0, expected sha256:2e: failed precondition"
)


def pull(
    node: str = "node0",
    role: str = DURING,
    start: float = 0.0,
    end: float = 1.0,
    ok: bool = True,
    *,
    fault: str = AGENT_CRASH,
    injection: int = 1,
    timed_out: bool = False,
    error: str | None = None,
    tier: str | None = None,
) -> PullRecord:
    if not ok and error is None and not timed_out:
        error = REFUSED
    return PullRecord(
        fault, injection, node, "img", role, start, end, ok, timed_out, error, tier=tier
    )


@pytest.mark.parametrize(
    ("error", "broken"),
    [(EOF_BODY, True), (RESET, True), ("write: broken pipe", True), (REFUSED, False),
     (MIRROR_503, False), (COMMIT, False), ("", False)],
)  # fmt: skip
def test_broken_body(error: str, broken: bool) -> None:
    assert is_broken_body(error) is broken


@pytest.mark.parametrize(
    ("error", "clear"),
    [(REFUSED, True), (MIRROR_503, True), (EOF_BODY, True), (COMMIT, True),
     ("blob sha256:ab not found", True), ("no space left on device", True),
     ("ctr: exit status 1", False), ("context canceled", False), ("", False), (None, False),
     ("   ", False)],
)  # fmt: skip
def test_clear_error(error: str | None, clear: bool) -> None:
    assert is_clear_error(error) is clear


def test_classify() -> None:
    assert classify(True, False, None) == COMPLETED
    assert classify(False, True, None) == HUNG
    assert classify(True, True, None) == HUNG  # still running at its deadline
    assert classify(False, False, REFUSED) == FAILED_CLEAR
    assert classify(False, False, "exit status 1") == FAILED_UNCLEAR


def test_recovery_is_the_first_success_after_the_fault_on_that_node() -> None:
    pulls = [
        pull("node0", end=4.0),  # before the fault ended
        pull("node1", end=6.0),  # another node
        pull("node0", end=7.0, ok=False),
        pull("node0", end=9.0),
        pull("node0", end=8.5),
    ]
    assert recovery_seconds(5.0, pulls, "node0") == pytest.approx(3.5)
    assert recovery_seconds(10.0, pulls, "node0") is None


def test_class_recovery_worst_over_injections_and_never() -> None:
    result = ClassResult(UPSTREAM_OUTAGE)
    result.injections = [
        InjectionRecord(UPSTREAM_OUTAGE, 1, "all", True, 1.0, 2.0,
                        {"recovery_nodes": ["node0", "node1"]}),
    ]  # fmt: skip
    result.pulls = [pull("node0", PROBE, 2.0, 2.5), pull("node1", PROBE, 2.0, 4.0)]
    assert class_recovery(result) == pytest.approx(2.0)
    result.pulls = [pull("node0", PROBE, 2.0, 2.5)]
    value = class_recovery(result)
    assert value is not None and math.isnan(value)
    result.injections = [InjectionRecord(UPSTREAM_OUTAGE, 1, "all", False)]
    assert class_recovery(result) is None  # nothing fired: nothing to recover from


def test_summarize_counts_only_during_and_probe_pulls() -> None:
    result = ClassResult(AGENT_CRASH, planned=2)
    result.injections = [
        InjectionRecord(AGENT_CRASH, 1, "node0", True, 1.0, 2.0),
        InjectionRecord(AGENT_CRASH, 2, "node1", False),
    ]
    result.pulls = [
        pull(role=SETUP, ok=False),
        pull(role=BASELINE),
        pull(role=DURING, start=0.5, end=3.0),
        pull(role=DURING, ok=False, error="exit status 1", injection=2),
        pull(role=DURING, timed_out=True, ok=False, injection=2),
        pull(role=PROBE, ok=False, error=COMMIT),
    ]
    result.corrupt_kept = 1
    result.upstream_bytes = 3 << 20
    result.upstream_direct_bytes = 1 << 20
    row = summarize(result)
    assert (row.planned, row.injected, row.attempted) == (2, 1, 4)
    assert (row.completed, row.failed_clear, row.failed_unclear, row.hung) == (1, 1, 1, 1)
    assert row.recover_s == pytest.approx(1.0)
    assert row.corrupt_kept == 1 and row.upstream_bytes == 3 << 20
    assert row.upstream_direct_bytes == 1 << 20
    assert "| 1.0 | 3 (1) |" in class_table([result])
    assert "1 body(ies) served that did not match the digest" in row.notes


def test_crash_ratio_against_the_twin() -> None:
    result = ClassResult(AGENT_CRASH)
    result.injections = [
        InjectionRecord(AGENT_CRASH, 1, "node0", True, 1.0, 2.0, {"variant": "streamed"}),
        InjectionRecord(AGENT_CRASH, 2, "node0", True, 5.0, 6.0),
        InjectionRecord(AGENT_CRASH, 3, "node0", False),
    ]
    result.pulls = [
        pull(role=BASELINE, start=0.0, end=1.0, injection=1),
        pull(role=DURING, start=1.0, end=2.5, injection=1),
        pull(role=BASELINE, start=3.0, end=4.0, injection=2),
        pull(role=DURING, start=4.0, end=9.0, ok=False, injection=2),
    ]
    assert crash_ratios(result) == [("#1 streamed", pytest.approx(1.5)), ("#2", None)]


def soak(start: Sample, end: Sample, *samples: Sample) -> SoakResult:
    return SoakResult(30.0, 8, 4, start=start, end=end, samples=list(samples))


def test_flatness() -> None:
    assert change(100, 110) == pytest.approx(0.10)
    assert is_flat(100, 110, 0.10) and is_flat(100, 90, 0.10)
    assert not is_flat(100, 111, 0.10) and not is_flat(100, 89, 0.10)
    table = soak_table(soak(Sample(0, 1024, 20), Sample(30, 2048, 20), Sample(10, 4096, 30)))
    assert "| agent RSS (MiB) | 1.0 | 2.0 | 4.0 | +100.0% | NO |" in table
    assert "| agent open fds | 20 | 20 | 30 | +0.0% | yes |" in table


def outage_result() -> ClassResult:
    result = ClassResult(UPSTREAM_OUTAGE, planned=1)
    result.injections = [
        InjectionRecord(UPSTREAM_OUTAGE, 1, "all", True, 1.0, 11.0, {"recovery_nodes": ["node1"]})
    ]
    result.pulls = [
        pull("node0", DURING, 1, 2, tier=HOT, fault=UPSTREAM_OUTAGE),
        pull("node1", DURING, 1, 3, ok=False, error=MIRROR_503, tier=PEER, fault=UPSTREAM_OUTAGE),
        pull("node1", DURING, 1, 5.5, ok=False, tier=UNCACHED, fault=UPSTREAM_OUTAGE),
        pull("node1", PROBE, 11, 12, fault=UPSTREAM_OUTAGE),
    ]
    return result


def test_targets() -> None:
    crash = ClassResult(AGENT_CRASH, planned=1)
    crash.injections = [InjectionRecord(AGENT_CRASH, 1, "node0", True, 1.0, 2.0)]
    crash.pulls = [pull(role=BASELINE, end=1.0), pull(role=DURING, start=1.0, end=2.5)]
    peer = ClassResult(WRONG_PEER, planned=1)
    peer.injections = [InjectionRecord(WRONG_PEER, 1, "node0", True, detail={"corrupt_served": 0})]
    full = ClassResult(DISK_FULL, planned=1, corrupt_kept=0)
    full.pulls = [pull(ok=False, error=COMMIT, fault=DISK_FULL)]
    s = soak(Sample(0, 1000, 20), Sample(30, 1050, 23))
    ok = {"verify_reported": True, "verify_removed": True, "next_pull_ok": True,
          "containerd_copy_ok": True}  # fmt: skip
    disk = ClassResult(DISK_CORRUPT, planned=2)
    disk.injections = [
        InjectionRecord(DISK_CORRUPT, 1, "node0", True, detail={**ok, "variant": "agent-only"}),
        InjectionRecord(DISK_CORRUPT, 2, "node1", True, detail={
            **ok, "variant": "linked", "corrupt_kept_after_verify": ["node1/containerd/ab"]}),
    ]  # fmt: skip
    classes = [crash, outage_result(), peer, full, disk]
    targets = {t.name: t for t in evaluate_targets(classes, s)}
    on_disk = targets["a blob corrupted on disk"]
    assert on_disk.met is True and on_disk.measured.startswith("2/2 injections; #2 linked: ")
    disk.injections[0].detail["next_pull_ok"] = False
    assert evaluate_targets([disk], None)[2].met is False
    assert targets["corrupt blobs kept"].met is True
    assert targets["hung pulls"].met is True
    assert targets["pull interrupted by an agent crash"].met is True
    assert targets["pull interrupted by an agent crash"].measured == "#1 1.50x"
    cached = targets["starts of cached images during the upstream outage"]
    assert (cached.measured, cached.met) == ("1/2 (50 %)", False)
    uncached = targets["starts of an uncached image during the outage"]
    assert uncached.measured == "1 failed, slowest after 4.5 s" and uncached.met is None
    served = targets["bodies served that were not the blob (to containerd or a client)"]
    assert served.met is False and "disk-full 1" in served.measured
    assert targets["agent RSS across the soak"].met is True
    assert targets["agent open fds across the soak"].met is False  # +15 %


def test_markdown_and_json() -> None:
    results = ChaosResults(
        params={"seed": 4, "nodes": 3, "quick": True, "wall_s": 100.0},
        environment={"sha_ni": 2},
        classes=[outage_result()],
        soak=soak(Sample(0, 1000, 20), Sample(30, 1000, 20)),
        skipped=[DISK_FULL],
    )
    text = markdown(results)
    assert "seed 4, 3 nodes, quick run" in text and "sha_ni flags: 2" in text
    assert "| upstream-outage | 1/1 | 4 | 2 | 2 | 0 | 0 | 0 | 1.0 | 0 (0) |" in text
    assert "Skipped (time limit): disk-full" in text
    assert (
        "| starts of cached images during the upstream outage | 100 % succeed | 1/2 (50 %) " in text
    )
    doc = json.loads(json.dumps(to_json(results)))
    assert doc["rows"][0]["fault"] == UPSTREAM_OUTAGE
    assert doc["classes"][0]["pulls"][2]["outcome"] == FAILED_CLEAR
    assert doc["soak"]["start"]["rss_kib"] == 1000
    assert {t["name"] for t in doc["targets"]} >= {"corrupt blobs kept", "hung pulls"}
    nan = ClassResult(AGENT_CRASH, planned=1)
    nan.injections = [InjectionRecord(AGENT_CRASH, 1, "node0", True, 1.0, 2.0)]
    assert "| never |" in class_table([nan])
    assert to_json(ChaosResults(classes=[nan]))["rows"][0]["recover_s"] is None


@pytest.mark.parametrize(
    ("upstream_bytes", "victim_pull_ok", "other_ok", "met"),
    [
        (100, False, True, True),  # the layer once from the upstream, the victim's pull broke
        (100, True, True, True),
        (180, True, True, False),  # the upstream was asked for much of it again
        (100, True, False, False),  # a node that was not killed did not finish
    ],
)
def test_fan_out_target(
    upstream_bytes: int, victim_pull_ok: bool, other_ok: bool, met: bool
) -> None:
    from warmstart_harness.bench.chaos_plan import FANOUT_CRASH

    fan = ClassResult(FANOUT_CRASH, planned=1)
    fan.injections = [
        InjectionRecord(
            FANOUT_CRASH, 1, "node1", True, 1.0, 2.0,
            {"blob_bytes": 100, "upstream_layer_bytes": upstream_bytes},
        )
    ]  # fmt: skip
    fan.pulls = [
        pull("node0", fault=FANOUT_CRASH, ok=other_ok),
        pull("node1", fault=FANOUT_CRASH, ok=victim_pull_ok),
        pull("node2", fault=FANOUT_CRASH),
    ]
    [target] = [t for t in evaluate_targets([fan], None) if t.name.startswith("fan-out")]
    assert target.met is met
