"""The fan-out rows: per-node finishes and link bytes, the largest upload, the floor."""

from __future__ import annotations

import json
from pathlib import Path

from warmstart.fetch.pieces import piece_size_for
from warmstart_harness.bench.fleet_calibrate import BedCosts, bed_params, read_measurements
from warmstart_harness.bench.scaleout_fanout_report import (
    fanout_node_table,
    fanout_rows,
    largest_upload,
    link_rate,
)
from warmstart_harness.bench.scaleout_report import from_json, to_json, write_report
from warmstart_harness.bench.scaleout_rows import Row
from warmstart_harness.bench.scaleout_types import (
    BASELINE,
    FANOUT,
    FANOUT_FETCH,
    WARMSTART,
    FanoutResult,
    NodeTransfer,
    ScaleoutResults,
)

GiB = 1 << 30
PNG = b"\x89PNG\r\n\x1a\n"


def fetch_run(mode: str, done: list[float], sent: list[int], upstream: int) -> FanoutResult:
    nodes = tuple(
        NodeTransfer(f"node{i}", t, upstream if i == 0 else 0, GiB, s)
        for i, (t, s) in enumerate(zip(done, sent, strict=True))
    )
    return FanoutResult(
        mode, len(done), max(done) + 1, upstream, GiB, max(done), 0, FANOUT_FETCH, nodes,
        machine_busy_s=1.5 * (max(done) + 1),
    )  # fmt: skip


def results() -> ScaleoutResults:
    # "200mbit" is 25e6 B/s, the slower link: one node's transfer is 1 GiB / 25e6 = 42.9 s
    base = fetch_run(BASELINE, [60.0, 61.0, 64.0, 70.0], [0, 0, 0, 0], 4 * GiB)
    ours = fetch_run(WARMSTART, [50.0, 52.0, 55.0, 58.0], [GiB * 3 // 2, GiB, GiB, 0], GiB)
    return ScaleoutResults(
        fanout=[base, ours],
        modes=(BASELINE, WARMSTART),
        params={"rate": "200mbit", "lan_rate": "400mbit", "nodes": 4},
    )


def row(rows: list[Row], start: str) -> Row:
    return next(r for r in rows if r.metric.startswith(start))


def test_link_rate_is_the_slower_link() -> None:
    assert link_rate({"rate": "200mbit", "lan_rate": "400mbit"}) == 25e6
    assert link_rate({"rate": "800mbit"}) == 100e6
    assert link_rate({}) is None


def test_rows_judge_upload_floor_and_fetch_against_baseline() -> None:
    rows = fanout_rows(results())
    assert {r.scenario for r in rows} == {FANOUT_FETCH}
    upload = row(rows, "largest upload")
    assert upload.values[WARMSTART] == 1.5 and upload.met is True
    fetch = row(rows, "fetch time")
    assert fetch.values == {BASELINE: 70.0, WARMSTART: 58.0} and fetch.met is True
    floor = row(rows, "slowest node / one node's transfer")
    assert "42.9 s" in floor.metric
    assert abs(floor.values[WARMSTART] - 58.0 / (GiB / 25e6)) < 1e-9
    assert floor.met is True  # 58 s / 42.9 s = 1.35x <= 1.5x
    slow = results()
    slow.fanout[1] = fetch_run(WARMSTART, [50.0, 70.0], [GiB * 3, GiB], GiB)
    rows = fanout_rows(slow)
    assert row(rows, "slowest node / one node's transfer").met is False  # 1.63x
    assert row(rows, "largest upload").met is False  # 3x the image
    cores = row(rows, "CPU cores busy")
    assert cores.values[WARMSTART] == 1.5 and cores.ratio_value is None


def test_json_round_trip_keeps_every_node() -> None:
    doc = json.loads(json.dumps(to_json(results())))
    again = from_json(doc)
    assert again.fanout == results().fanout
    assert again.fanout[1].per_node[0] == NodeTransfer("node0", 50.0, GiB, GiB, GiB * 3 // 2)


def test_older_json_without_nodes_still_reads() -> None:
    doc = to_json(results())
    for f in doc["fanout"]:
        for key in ("per_node", "scenario", "machine_busy_s", "agents_cpu_s"):
            f.pop(key)
    old = from_json(json.loads(json.dumps(doc)))
    assert old.fanout[0].scenario == FANOUT and old.fanout[0].per_node == ()


def test_node_table_and_plots(tmp_path: Path) -> None:
    table = fanout_node_table(results())
    assert table.count("| fanout-fetch |") == 8
    assert "| fanout-fetch | warmstart | node0 | 50.0 | 1024 | 1024 | 1536 | 1.50 |" in table
    written = write_report(results(), tmp_path / "r.json", tmp_path)
    nodes = tmp_path / "scaleout-fanout-nodes.png"
    assert nodes in written and nodes.read_bytes().startswith(PNG)
    assert "| fanout-fetch | warmstart | node3 |" in (tmp_path / "scaleout.md").read_text()


def test_largest_upload_needs_links() -> None:
    assert largest_upload(FanoutResult(WARMSTART, 4, 10.0, GiB, GiB)) is None


def test_calibration_reads_each_node_finish_as_the_product_policy() -> None:
    doc = json.loads(json.dumps(to_json(results())))
    doc["params"]["padding_bytes"] = GiB // 2
    kept, skipped = read_measurements(doc)
    assert len(kept) == 1 and skipped and "baseline" in skipped[0]
    assert kept[0].completions_s == (50.0, 52.0, 55.0, 58.0)
    assert kept[0].policy == "pieces"
    # simulated as the agents ran it: the product's piece size and slots, or the run's settings
    made = kept[0].pieces
    assert made is not None and made.piece_size == piece_size_for(GiB // 2)
    assert (made.requests, made.upload_slots, made.upload_slots_downloading) == (4, 4, 4)
    # the CPU per byte the agents were measured to use: their CPU / the bytes their nodes got
    doc["fanout"][1]["agents_cpu_s"] = 8.0
    received = sum(n["upstream_rx"] + n["lan_rx"] for n in doc["fanout"][1]["per_node"])
    [priced], _ = read_measurements(doc)
    assert priced.agent_cpu_per_byte == 8.0 / received
    assert kept[0].agent_cpu_per_byte is None  # not recorded: the simulator's estimate
    slow = bed_params(priced, BedCosts(), measured_cpu=True)
    assert (slow.cpu_recv_per_byte, slow.cpu_send_per_byte) == (8.0 / received, 0.0)
    assert bed_params(priced, BedCosts()).cpu_recv_per_byte == BedCosts().recv_cpu_per_byte
    # what the run recorded as its effective piece settings wins over today's defaults
    doc["params"]["agent_piece_settings"] = {"piece_uploads": 3}
    [recorded], _ = read_measurements(doc)
    assert recorded.pieces is not None and recorded.pieces.upload_slots == 3
    del doc["params"]["agent_piece_settings"]
    doc["params"]["agent_settings"] = {"piece_uploads": 6, "piece_max": "8MiB"}
    [changed], _ = read_measurements(doc)
    assert changed.pieces is not None and changed.pieces.piece_size == 8 << 20
    assert changed.pieces.upload_slots == 6
