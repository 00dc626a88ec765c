from __future__ import annotations

import json
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from warmstart_harness.bench.scaleout_report import (
    SCHEMA,
    dumps,
    environment_info,
    from_json,
    link_table,
    markdown_table,
    prewarm_table,
    read_json,
    startup_phase_table,
    to_json,
    write_report,
)
from warmstart_harness.bench.scaleout_spike_cost import (
    spike_cost_rows,
    spike_cost_summary,
    spike_cost_table,
)
from warmstart_harness.bench.scaleout_summary import table_rows
from warmstart_harness.bench.scaleout_types import (
    BASELINE,
    PROVISIONED,
    REGISTRY_PROXY,
    WARMSTART,
    WARMSTART_SPARE0,
    FanoutResult,
    PrewarmResult,
    ScaleoutResults,
    SpikeResult,
    StartupResult,
    TimelinePoint,
)
from warmstart_harness.bench.spike_metrics import offered_demand, spike_metrics

from .helpers import record

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
K = 2


def spike(
    mode: str, latency: float, ready_at: float | None, lost: int = 0, decided_at: float = 2.0
) -> SpikeResult:
    """60 requests over 30 s, each ``latency`` long; replicas go 1 -> 3 at ``ready_at``, the two
    new ones starting from ``decided_at`` (provisioned: 3 ready all along).

    Demand is 4 slots (2 replicas) from 2 s to 30 s; capacity is judged, and replica-seconds
    counted, until 30 s.
    """
    records = [
        record(i * 0.5, i * 0.5, i * 0.5 + latency, index=i, tokens=(100, 10)) for i in range(60)
    ]
    for i in range(lost):
        records[i] = replace(records[i], status=503, error="HTTP 503 queue_full", retries=1)
    records[-1] = replace(records[-1], retries=2)  # got through after two 503s

    def point(t: float) -> TimelinePoint:
        if mode == PROVISIONED or (ready_at is not None and t >= ready_at):
            return TimelinePoint(t, 3, 0)
        return TimelinePoint(t, 1, 2 if t >= decided_at else 0)

    timeline = [point(float(t)) for t in range(0, 41)]
    demand = offered_demand(records, lambda i, o: 2.0)  # 4 slots: 2 replicas
    metrics = spike_metrics(
        records, timeline, demand, slots_per_replica=K, burst_start_s=2.0, hold_s=3.0, until_s=30.0
    )
    return SpikeResult(mode, records, timeline, metrics, demand)


def results(
    *, warmstart_ready_at: float | None = 6.0, lost: int = 0, provisioned: bool = False
) -> ScaleoutResults:
    """Three modes (four with ``provisioned``: P50 2.5 s, 3 replicas from the start)."""
    startup = [
        StartupResult("baseline", "cold", 20.0, 6.0, 1.0, 3.0, 31.0, 10**9),
        StartupResult("baseline", "cold", 19.0, 6.0, 1.0, 3.0, 29.0, 10**9),
        StartupResult("registry-proxy", "warm", 12.0, 6.0, 1.0, 3.0, 22.0, 0),
        StartupResult("warmstart", "hot", 0.0, 0.0, 1.0, 3.0, 5.0, 0),
        StartupResult("warmstart", "warm", 2.0, 2.0, 1.0, 3.0, 8.0, 0),
        StartupResult("warmstart", "cold", 18.0, 6.0, 1.0, 3.0, 28.0, 10**9),
    ]
    fanout = [
        FanoutResult("baseline", 4, 40.0, 4 * 10**9, 10**9),
        FanoutResult("registry-proxy", 4, 20.0, 10**9, 10**9),
        FanoutResult("warmstart", 4, 10.0, 10**9, 10**9),
        FanoutResult("warmstart", 4, 12.0, 10**9, 10**9),
    ]
    return ScaleoutResults(
        spike=[
            spike("baseline", 10.0, 26.0),
            spike("registry-proxy", 8.0, 16.0),
            spike("warmstart", 3.0, warmstart_ready_at, lost=lost, decided_at=4.0),
            *([spike(PROVISIONED, 2.5, None)] if provisioned else []),
        ],
        startup=startup,
        fanout=fanout,
        modes=(BASELINE, REGISTRY_PROXY, WARMSTART, *([PROVISIONED] if provisioned else [])),
        params={"trace": "azure-llm-2023-conv.csv", "compression": 10, "K": K},
        environment=environment_info({"note": "test"}),
    )


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_metrics_of_the_fixture_are_what_the_table_claims():
    r = results()
    ttc = {s.mode: s.metrics.time_to_capacity_s for s in r.spike}
    assert ttc == {"baseline": 24.0, "registry-proxy": 14.0, "warmstart": 4.0}


def test_write_report_json_round_trips_and_pngs_are_valid(tmp_path: Path):
    r = results()
    written = write_report(r, tmp_path / "json" / "scaleout.json", tmp_path / "out")
    names = sorted(p.name for p in written)
    assert names == [
        "scaleout-fanout-upstream.png",
        "scaleout-fanout-wall.png",
        "scaleout-spike.png",
        "scaleout-startup.png",
        "scaleout.json",
        "scaleout.md",
    ]
    assert all(p.exists() and p.stat().st_size > 0 for p in written)
    for p in written:
        if p.suffix == ".png":
            width, height = png_size(p)
            assert width > 100 and height > 100
    wide = png_size(tmp_path / "out" / "scaleout-spike.png")
    assert wide[0] > wide[1]  # three columns side by side

    def no_nan(name: str) -> None:
        raise AssertionError(f"non-JSON constant {name}")

    doc = json.loads((tmp_path / "json" / "scaleout.json").read_text(), parse_constant=no_nan)
    assert doc["schema"] == SCHEMA
    assert doc["modes"] == ["baseline", "registry-proxy", "warmstart"]
    assert doc["scenarios"] == ["spike", "startup", "fanout"]
    assert doc["spike"][0]["records"]["columns"][:3] == ["index", "scheduled_s", "sent_s"]
    assert len(doc["spike"][0]["records"]["rows"]) == 60
    assert doc["environment"]["note"] == "test" and doc["environment"]["python"]
    assert {row["metric"] for row in doc["summary"]} >= {"P50 latency", "time to capacity"}
    assert read_json(tmp_path / "json" / "scaleout.json") == r
    written = (tmp_path / "out" / "scaleout.md").read_text()
    assert written == (
        markdown_table(r) + "\n" + spike_cost_table(r) + "\n" + startup_phase_table(r)
    )


def test_markdown_rows_ratios_and_targets():
    table = markdown_table(results())
    lines = table.splitlines()
    assert lines[0] == (
        "| scenario | metric | baseline | registry-proxy | warmstart "
        "| ratio vs baseline | target | met |"
    )
    assert (
        "| spike | P50 latency | 10.00 s | 8.00 s | 3.00 s | -70% | -60% or more | met |" in lines
    )
    assert (
        "| spike | time to capacity | 24.00 s | 14.00 s | 4.00 s | 6.0x | 3x faster or more | met |"
        in lines
    )
    assert "| spike | lost requests | 0 | 0 | 0 | - | 0 in every mode | met |" in lines
    assert "| spike | retries after 503 | 2 | 2 | 2 | - | - |  |" in lines
    assert (
        "| startup | startup from hot (baseline: cold) | 30.00 s | - | 5.00 s "
        "| 6.0x | 20x faster or more | missed |" in lines
    )
    assert (
        "| startup | startup from warm (baseline: cold) | 30.00 s | 22.00 s | 8.00 s "
        "| 3.8x | 3x faster or more | met |" in lines
    )
    assert (
        "| startup | startup from cold | 30.00 s | - | 28.00 s | 1.1x "
        "| 0.95x or more (at most 5% slower) | met |" in lines
    )
    assert "| fanout | wall time, 4 nodes | 40.00 s | 20.00 s | 11.00 s | 3.6x | - |  |" in lines
    assert (
        "| fanout | upstream bytes, 4 nodes | 4.00x | 1.00x | 1.00x | 4.0x | 1x the image | met |"
        in lines
    )
    # 4 nodes at once against one baseline node's cold start (30 s): 11 s is 0.37x, met.
    assert (
        "| fanout | wall time, 4 nodes / one node's cold start (30.0 s) | 1.33x | 0.67x | 0.37x "
        "| - | 1.3x or less | met |" in lines
    )


def test_missed_targets_are_reported():
    table = markdown_table(results(warmstart_ready_at=None, lost=3))
    assert (
        "| spike | time to capacity | 24.00 s | 14.00 s | never | never | 3x faster or more "
        "| missed |" in table
    )
    assert "| spike | lost requests | 0 | 0 | 3 | - | 0 in every mode | missed |" in table
    rows = {row.metric: row for row in table_rows(results(warmstart_ready_at=None))}
    assert rows["time to capacity"].met is False
    assert rows["P50 latency"].met is True


def test_baseline_that_never_reached_capacity_gives_a_lower_bound():
    r = results()
    base = r.spike[0]
    r.spike[0] = replace(base, metrics=replace(base.metrics, time_to_capacity_s=None))
    row = {row.metric: row for row in table_rows(r)}["time to capacity"]
    assert row.ratio == ">= 7.0x"  # watched 28 s after the burst; warmstart took 4 s
    assert row.met is True
    assert "| spike | time to capacity | never | 14.00 s | 4.00 s | >= 7.0x |" in markdown_table(r)


def test_only_the_scenarios_that_ran(tmp_path: Path):
    r = ScaleoutResults(startup=results().startup)
    written = write_report(r, None, tmp_path)
    assert sorted(p.name for p in written) == ["scaleout-startup.png", "scaleout.md"]
    doc = to_json(r)
    assert doc["scenarios"] == ["startup"] and doc["spike"] == []
    assert from_json(json.loads(dumps(doc))) == r
    assert "| spike |" not in markdown_table(r)


def test_from_json_rejects_other_documents():
    with pytest.raises(ValueError, match="schema"):
        from_json({"schema": "something/else", "modes": []})


def test_dumps_puts_one_row_per_line_and_is_strict_json():
    text = dumps({"a": {"columns": ["x", "y"], "rows": [[1, None], [2.5, "s"]]}, "b": 1})
    assert '[1,null],\n[2.5,"s"]' in text
    assert json.loads(text) == {
        "a": {"columns": ["x", "y"], "rows": [[1, None], [2.5, "s"]]},
        "b": 1,
    }
    with pytest.raises(ValueError):
        dumps({"x": float("nan")})


def test_startup_phase_table_orders_tiers_and_compares_with_baseline_cold():
    table = startup_phase_table(
        ScaleoutResults(
            startup=[
                StartupResult("warmstart", "hot", 0.1, 0.0, 0.1, 1.8, 2.0),
                StartupResult("baseline", "cold", 20.0, 15.0, 0.2, 4.8, 40.0, 2 << 30),
                StartupResult("warmstart", "cold", 21.0, 15.0, 0.2, 3.8, 40.0, 2 << 30),
                StartupResult("warmstart", "warm", 8.0, 15.0, 0.2, 1.8, 25.0),
                StartupResult("warmstart", "warm", 10.0, 15.0, 0.2, 1.8, 27.0),
            ]
        )
    )
    rows = [line for line in table.splitlines()[2:]]
    assert [r.split(" | ")[0:2] for r in rows] == [
        ["| baseline", "cold"],
        ["| warmstart", "cold"],
        ["| warmstart", "warm"],
        ["| warmstart", "hot"],
    ]
    assert rows[0] == "| baseline | cold | 20.0 | 15.0 | - | 0.20 | 4.8 | 40.0 | 1.0x | 2048 |"
    assert rows[2] == "| warmstart | warm | 9.0 | 15.0 | - | 0.20 | 1.8 | 26.0 | 1.5x | 0 |"
    assert rows[3].endswith("| 2.0 | 20.0x | 0 |")


def test_prewarm_rows_and_table_and_json_round_trip(tmp_path: Path):
    r = results()
    r.prewarm = [
        PrewarmResult("warmstart", "cold", 20.0, 0.01, 6.5, 6.0, 26.6, 10**9, 3),
        PrewarmResult("warmstart", "peer", 4.0, 0.01, 6.4, 6.0, 10.5, 0, 3),
        PrewarmResult("warmstart", "warm", 0.1, 0.01, 6.9, 6.2, 7.1, 0, 3),
    ]
    lines = markdown_table(r).splitlines()
    # baseline's unpack is 6.0 s (median of its cold starts): 7.1 s is within 6.0 + 2 s.
    assert (
        "| prewarm | hot pre-warm from warm (baseline: containerd's unpack) | 6.00 s | - | 7.10 s "
        "| - | unpack + 2 s or less | met |" in lines
    )
    table = prewarm_table(r).splitlines()
    assert table[2].startswith(
        "| warmstart | image | cold | 20.0 | 0.01 | 6.5 | 6.0 | 26.6 | 3 | 954 |"
    )
    assert [row.split(" | ")[2] for row in table[2:]] == ["cold", "peer", "warm"]
    write_report(r, tmp_path / "s.json", None)
    assert read_json(tmp_path / "s.json").prewarm == r.prewarm
    slow = results()
    slow.prewarm = [PrewarmResult("warmstart", "warm", 0.1, 0.0, 9.0, 8.0, 9.1)]
    assert any(line.endswith("| missed |") and "pre-warm" in line
               for line in markdown_table(slow).splitlines())  # fmt: skip


def test_spike_with_prewarm_spare_zero_is_reported_against_baseline():
    r = results()
    r.spike.append(spike(WARMSTART_SPARE0, 8.0, 20.0))
    lines = markdown_table(r).splitlines()
    # baseline P50 10 s, spare0 P50 8 s: -20 %, short of -30 %.
    assert (
        "| spike | P50 latency, prewarm_spare = 0 (demand-driven pre-warm only) | 10.00 s | - "
        "| 8.00 s | -20% | -30% or more | missed |" in lines
    )
    assert "| spike | lost requests, prewarm_spare = 0 | - | - | 0 | - | 0 | met |" in lines
    # the default run's rows are unchanged by it
    assert (
        "| spike | P50 latency | 10.00 s | 8.00 s | 3.00 s | -70% | -60% or more | met |" in lines
    )


def test_link_table_lists_each_node_of_a_recorded_start():
    r = results()
    r.startup.append(
        StartupResult(
            "warmstart", "cold", 10.0, 5.0, 0.1, 0.5, 16.0, 2 << 20,
            {"node1": {"upstream_rx": 2 << 20, "lan_rx": 0, "lan_tx": 2 << 20},
             "node0": {"upstream_rx": 0, "lan_rx": 2 << 20, "lan_tx": 0}},
        )
    )  # fmt: skip
    rows = link_table(r).splitlines()[2:]
    assert rows == [
        "| warmstart | cold | node0 | 0 | 2 | 0 |",
        "| warmstart | cold | node1 | 2 | 0 | 2 |",
    ]
    assert link_table(results()) == ""


def test_fanout_behind_a_shared_upstream_cap_has_the_0_6x_target():
    r = results()
    r.params["upstream_rate"] = "800mbit"
    lines = markdown_table(r).splitlines()
    # baseline 40 s, warmstart median 11 s: 0.275x of baseline's wall time
    assert (
        "| fanout | wall time, 4 nodes | 40.00 s | 20.00 s | 11.00 s | 3.6x "
        "| 0.6x baseline's or less (shared upstream cap) | met |" in lines
    )
    assert "| fanout | wall time, 4 nodes | 40.00 s | 20.00 s | 11.00 s | 3.6x | - |  |" in (
        markdown_table(results()).splitlines()
    )


def test_replica_seconds_of_the_fixture():
    # until 30 s: 1 replica, +2 starting from the decision (2 s; warmstart 4 s); provisioned 3
    got = {s.mode: s.metrics.replica_seconds for s in results(provisioned=True).spike}
    assert got == pytest.approx(
        {"baseline": 86.0, "registry-proxy": 86.0, "warmstart": 82.0, "provisioned": 90.0}
    )
    assert {s.metrics.cost_window_s for s in results(provisioned=True).spike} == {30.0}


def test_spike_cost_rows_against_provisioned():
    rows = {row.mode: row for row in spike_cost_rows(results(provisioned=True))}
    assert list(rows) == ["baseline", "registry-proxy", "warmstart", "provisioned"]
    ws = rows["warmstart"]
    assert (ws.p50_s, ws.p99_s, ws.lost, ws.replica_seconds) == pytest.approx((3.0, 3.0, 0, 82.0))
    assert (ws.cost_vs_provisioned, ws.p50_vs_provisioned) == pytest.approx((82 / 90, 1.2))
    floor = rows["provisioned"]
    assert (floor.cost_vs_provisioned, floor.p50_vs_provisioned) == (1.0, 1.0)
    assert rows["baseline"].p50_vs_provisioned == pytest.approx(4.0)
    # without a provisioned run: the costs, but nothing relative to it
    plain = spike_cost_rows(results())
    assert [r.replica_seconds for r in plain] == pytest.approx([86.0, 86.0, 82.0])
    assert all(r.cost_vs_provisioned is None and r.p50_vs_provisioned is None for r in plain)


def test_spike_cost_table_and_summary_lines():
    r = results(provisioned=True)
    r.spike.insert(3, spike(WARMSTART_SPARE0, 5.0, 20.0, lost=1))
    lines = spike_cost_table(r).splitlines()
    assert lines[0] == (
        "| spike run | P50 | P99 | lost | replica-seconds | cost vs provisioned "
        "| P50 vs provisioned |"
    )
    assert lines[2:7] == [
        "| baseline | 10.00 s | 10.00 s | 0 | 86 | 0.96 | 4.00x |",
        "| registry-proxy | 8.00 s | 8.00 s | 0 | 86 | 0.96 | 3.20x |",
        "| warmstart | 3.00 s | 3.00 s | 0 | 82 | 0.91 | 1.20x |",
        "| warmstart-spare0 | 5.00 s | 5.00 s | 1 | 86 | 0.96 | 2.00x |",
        "| provisioned | 2.50 s | 2.50 s | 0 | 90 | 1.00 | 1.00x |",
    ]
    summary = spike_cost_summary(r)
    assert len(summary) == 5  # every run but provisioned, then what the load itself needs
    # 4 slots (2 replicas of K = 2) from 1 s on, 1.5 slots (1 replica) before: 1 + 29 x 2
    assert summary[4].startswith(
        "the offered load itself needs 59 replica-seconds (0.66 of provisioned's): "
    )
    assert summary[2] == (
        "warmstart: P50 1.20x provisioned's (3.00 s vs 2.50 s), P99 1.20x, lost 0, at 0.91 of "
        "its cost (82 vs 90 replica-seconds)"
    )
    assert "- " + summary[0] in lines
    assert lines[-1].startswith("Replica-seconds: the integral")
    assert "decides to start it" in lines[-1] and lines[-1].endswith("The window here: 30 s.")
    assert spike_cost_summary(results()) == [
        "no provisioned run: the spike's cost is not compared (--modes ...,provisioned)"
    ]
    assert "| warmstart | 3.00 s | 3.00 s | 0 | 82 | - | - |" in spike_cost_table(results())


def test_provisioned_in_the_main_table_json_and_plot(tmp_path: Path):
    r = results(provisioned=True)
    lines = markdown_table(r).splitlines()
    assert lines[0] == (
        "| scenario | metric | baseline | registry-proxy | warmstart | provisioned "
        "| ratio vs baseline | target | met |"
    )
    assert "| spike | P50 latency | 10.00 s | 8.00 s | 3.00 s | 2.50 s | -70% |" in lines[3]
    assert (
        "| spike | replica-seconds | 86.0 replica-s | 86.0 replica-s | 82.0 replica-s "
        "| 90.0 replica-s | - | - |  |" in lines
    )
    assert "| spike | lost requests | 0 | 0 | 0 | 0 | - | 0 in every mode | met |" in lines
    # provisioned ran no startup: its cells say so
    assert any(line.startswith("| startup | startup from cold | 30.00 s | - | 28.00 s | - |")
               for line in lines)  # fmt: skip
    written = write_report(r, tmp_path / "s.json", tmp_path)
    doc = json.loads((tmp_path / "s.json").read_text())
    cost = doc["spike_cost"]
    assert cost["window_s"] == 30.0 and "until it is stopped" in cost["definition"]
    assert [row["mode"] for row in cost["rows"]] == list(r.modes)
    assert cost["rows"][2] == {
        "mode": "warmstart",
        "p50_s": 3.0,
        "p99_s": 3.0,
        "lost": 0,
        "replica_seconds": 82.0,
        "cost_vs_provisioned": pytest.approx(82 / 90),
        "p50_vs_provisioned": pytest.approx(1.2),
    }
    assert cost["summary"] == spike_cost_summary(r)
    assert doc["spike"][3]["metrics"]["replica_seconds"] == 90.0
    assert read_json(tmp_path / "s.json") == r
    width, height = png_size(tmp_path / "scaleout-spike.png")
    assert width > height > 100  # four columns side by side
    assert "| provisioned | 2.50 s |" in (tmp_path / "scaleout.md").read_text()
    assert {p.name for p in written} >= {"scaleout-spike.png", "scaleout.md", "s.json"}


def test_reports_from_before_replica_seconds_still_read():
    doc = to_json(results())
    for run in doc["spike"]:
        del run["metrics"]["replica_seconds"], run["metrics"]["cost_window_s"]
    old = from_json(json.loads(dumps(doc)))
    assert all(s.metrics.replica_seconds is None for s in old.spike)
    assert "| warmstart | 3.00 s | 3.00 s | 0 | - | - | - |" in spike_cost_table(old)


def test_a_replicas_model_fetch_is_kept_in_its_startup_record():
    with_model = StartupResult("warmstart", "cold", 5.0, 2.0, 0.2, 1.0, 9.5, model_s=7.5)
    r = ScaleoutResults(startup=[with_model, StartupResult("baseline", "cold", 5, 2, 0.2, 1, 8)])
    doc = to_json(r)
    assert [s["model_s"] for s in doc["startup"]] == [7.5, None]  # None: no model
    assert from_json(json.loads(dumps(doc))) == r


def test_the_report_says_what_each_node_held_before_each_start() -> None:
    from warmstart_harness.bench.scaleout_report import held_table

    results = ScaleoutResults(
        modes=("warmstart",),
        startup=[
            StartupResult("warmstart", "cold", 9.0, 3.0, 0.1, 1.0, 13.0, node="node0",
                          held={"node0": 0, "node1": 0, "node2": 0}),
            StartupResult("warmstart", "peer", 2.0, 3.0, 0.1, 1.0, 6.0, node="node2",
                          held={"node0": 3 << 30, "node1": 2 << 30, "node2": 0}),
        ],
    )  # fmt: skip
    table = held_table(results)
    assert "| warmstart | cold | node0 | 0 | node1 0, node2 0 |" in table
    assert "| warmstart | peer | node2 | 0 | node0 3072, node1 2048 |" in table
