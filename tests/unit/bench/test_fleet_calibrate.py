"""Calibration: measured fan-outs (a hand-made file, and the scale-out JSON's shape) against
the simulator's prediction on the test bed's topology."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from warmstart_harness.bench.fleet_calibrate import (
    BedCosts,
    Measurement,
    bed_params,
    calibrate,
    markdown_table,
    read_file,
    read_measurements,
)

# No CPU cost, no latency: the test bed reduces to its links, computable by hand.
FREE = BedCosts(
    cpus=2.0,
    hash_rate=1e15,
    recv_cpu_per_byte=0.0,
    send_cpu_per_byte=0.0,
    request_latency=0.0,
    tracker_latency=0.0,
    upstream_latency=0.0,
)


def test_a_hand_made_file(tmp_path: Path) -> None:
    rows = [
        # one-home over an unshaped LAN: every node is done when the home is, 10 s
        {"nodes": 3, "size": 10**9, "rate": "800mbit", "policy": "one-home",
         "completions_s": [11.0, 12.0, 12.5]},
        # a LAN of 50 MB/s each way: the home's uplink carries 2 copies, 40 s
        {"nodes": 3, "size": 10**9, "rate": 100e6, "lan_rate": "400mbit",
         "policy": "one-home", "fetch_s": 50.0},
        {"mode": "baseline", "nodes": 3, "size": 10**9, "rate": "800mbit", "fetch_s": 30.0},
    ]  # fmt: skip
    path = tmp_path / "measured.json"
    path.write_text(json.dumps(rows))
    measured, skipped = read_file(path)
    assert skipped == ["baseline, 3 nodes: not a warmstart policy"]
    cal = calibrate(measured, FREE)
    got = [(r.nodes, r.metric, r.measured_s, round(r.predicted_s, 6)) for r in cal.rows]
    assert got == [(3, "P50", 12.0, 10.0), (3, "slowest node", 12.5, 10.0),
                   (3, "slowest node", 50.0, 40.0)]  # fmt: skip
    assert [round(r.error, 4) for r in cal.rows] == [-0.1667, -0.2, -0.2]
    assert cal.worst("one-home") == pytest.approx(0.2)
    table = markdown_table(cal)
    assert "| 3 | 1.00 GB | 100 MB/s | one-home | P50 | 12.00 s | 10.00 s | -16.7% | yes |" in table
    assert "| 50.00 s | 40.00 s | -20.0% | yes |" in table


def test_without_a_policy_both_are_predicted() -> None:
    m = Measurement(nodes=4, blob_sizes=(10**9,), rate=100e6, fetch_s=11.0)
    cal = calibrate([m], FREE)
    assert [r.policy for r in cal.rows] == ["one-home", "pieces"]
    assert cal.rows[0].predicted_s == pytest.approx(10.0)
    assert cal.rows[1].predicted_s == pytest.approx(10.0, rel=0.05)


def test_the_scaleout_json_shape() -> None:
    doc = {
        "schema": "warmstart.bench.scaleout/1",
        "params": {"nodes": 4, "rate": "800mbit", "upstream_rate": "800mbit", "lan_rate": None,
                   "padding_bytes": 2 << 30},
        "environment": {"cpus": 2, "cpus_usable": 2},
        "fanout": [
            {"mode": "baseline", "nodes": 4, "wall_s": 147.5, "upstream_bytes": 9054327268,
             "image_bytes": 2263581817, "fetch_s": 95.8},
            {"mode": "warmstart", "nodes": 4, "wall_s": 78.5, "upstream_bytes": 2263581817,
             "image_bytes": 2263581817, "fetch_s": 24.5},
        ],
    }  # fmt: skip
    [m], skipped = read_measurements(doc)
    assert skipped == ["baseline, 4 nodes: not a warmstart policy"]
    assert m.blob_sizes == (2 << 30, 2263581817 - (2 << 30))  # the padding layer, the rest
    assert (m.rate, m.upstream_rate, m.lan_rate, m.cpus, m.fetch_s) == (
        100e6, 100e6, None, 2, 24.5)  # fmt: skip
    params = bed_params(m, BedCosts())
    assert (params.wan_rate, params.nic_rate, params.shared_cpus) == (100e6, None, 2.0)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"nope": 1}, "expected a scale-out JSON"),
        ([{"nodes": 2, "rate": "800mbit", "fetch_s": 1}], "needs size"),
        ([{"nodes": 2, "size": 10, "fetch_s": 1}], "needs the nodes' rate"),
        ([{"nodes": 2, "size": 10, "rate": "1mbit"}], "completions_s or fetch_s"),
        ([{"nodes": 2, "size": 10, "rate": "1mbit", "fetch_s": 1, "policy": "x"}], "unknown"),
    ],
)
def test_bad_measurements(doc, message) -> None:
    with pytest.raises(ValueError, match=message):
        read_measurements(doc)
