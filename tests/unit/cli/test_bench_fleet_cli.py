"""``warmstart bench fleet``: options to the simulation, the table and files out, calibration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from warmstart.cli.main import app
from warmstart_harness.bench.fleet_report import read_json


def test_both_policies_side_by_side(tmp_path: Path) -> None:
    args = ["bench", "fleet", "--nodes", "3", "--nodes", "6,12", "--size", "200MB",
            "--rate", "800mbit", "--seed", "2", "--json", str(tmp_path / "f.json"),
            "--out", str(tmp_path / "out")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "simulated: blob(s) 0.2 GB, every node's NIC 100 MB/s" in result.output
    assert "| 6 | one-home | 10.10 s | 10.10 s | 10.10 s | 2.00 s | 5.05x |" in result.output
    assert "| 12 | pieces |" in result.output
    saved = read_json(tmp_path / "f.json")
    assert [(r.nodes, r.policy) for r in saved.rows][:2] == [(3, "one-home"), (3, "pieces")]
    assert saved.params.seed == 2 and saved.params.nic_rate == 100e6
    assert (tmp_path / "out" / "fleet.png").exists()
    assert "| nodes | policy |" in (tmp_path / "out" / "fleet.md").read_text()


def test_options_reach_the_model(tmp_path: Path) -> None:
    args = ["bench", "fleet", "--nodes", "4", "--size", "1GB", "--blobs", "2",
            "--rate", "25Gb/s", "--upstream-rate", "1GB/s", "--piece-size", "16MiB",
            "--requests", "8", "--upload-slots", "6", "--hash-rate", "390MB/s",
            "--hash-cores", "2", "--disk-rate", "none", "--tracker-rps", "5000",
            "--no-blob-digest", "--no-home-seeds-once",
            "--policies", "pieces", "--json", str(tmp_path / "f.json"), "--out", str(tmp_path)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = read_json(tmp_path / "f.json")
    p, pp = saved.params, saved.pieces
    assert p.blob_sizes == (500_000_000, 500_000_000)
    assert (p.nic_rate, p.upstream_rate, p.hash_rate) == (3.125e9, 1e9, 390e6)
    assert (pp.piece_size, pp.requests, pp.upload_slots, pp.upload_slots_downloading) == (
        16 << 20, 8, 6, 3)  # fmt: skip
    assert (p.hash_cores, p.disk_rate) == (2, None)
    assert (pp.tracker_rps, pp.verify_blob_digest, pp.home_seeds_once) == (5000, False, False)
    assert [r.policy for r in saved.rows] == ["pieces"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "0"], "positive whole numbers"),
        (["--nodes", "ten"], "positive whole numbers"),
        (["--rate", "fast"], "--rate: invalid rate"),
        (["--policies", "torrent"], "unknown policy(ies) torrent"),
        (["--size", "big"], "invalid size"),
    ],
)
def test_bad_options_are_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(
        app, ["bench", "fleet", "--nodes", "2", *args, "--json", "/dev/null"]
    )
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_calibrate_prints_the_error_per_row(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"rows": [
        {"nodes": 4, "size": 10**9, "rate": "800mbit", "policy": "one-home", "fetch_s": 11.0},
        {"mode": "registry-proxy", "nodes": 4, "size": 10**9, "rate": "800mbit", "fetch_s": 40},
    ]}))  # fmt: skip
    result = CliRunner().invoke(app, ["bench", "fleet", "--calibrate", str(path)])
    assert result.exit_code == 0, result.output
    assert "| 4 | 1.00 GB | 100 MB/s | one-home | slowest node | 11.00 s |" in result.output
    assert "skipped: registry-proxy, 4 nodes: not a warmstart policy" in result.output
    assert "one-home: worst error" in result.output and "(within 20%)" in result.output

    path.write_text("[]")
    result = CliRunner().invoke(app, ["bench", "fleet", "--calibrate", str(path)])
    assert result.exit_code == 2 and "no warmstart fan-out rows" in result.output
