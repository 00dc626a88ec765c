"""The fleet report: rows from runs, the table, JSON both ways, the plot file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from warmstart_harness.bench.fleet_hardware import FleetParams
from warmstart_harness.bench.fleet_policies import ONE_HOME, PIECES, PieceParams
from warmstart_harness.bench.fleet_report import (
    SCHEMA,
    from_json,
    markdown_table,
    plot,
    read_json,
    run_fleet,
    to_json,
    write_json,
)


@pytest.fixture(scope="module")
def results():
    base = FleetParams(nodes=2, blob_sizes=(10**8,), nic_rate=100e6)
    return run_fleet(base, [2, 5], PieceParams())


def test_rows_side_by_side(results) -> None:
    assert [(r.nodes, r.policy) for r in results.rows] == [
        (2, ONE_HOME),
        (2, PIECES),
        (5, ONE_HOME),
        (5, PIECES),
    ]
    old5 = results.rows[2]
    assert old5.p50_s == pytest.approx(4 * 1.0 + 0.1, rel=1e-3)  # (N-1) x 1 s + the upstream's
    assert old5.largest_upload_bytes == 4 * 10**8
    assert old5.piece_size is None and old5.floor_s == pytest.approx(1.0)
    assert all(r.upstream_bytes == 10**8 for r in results.rows)
    assert [len(done) for _, _, done in results.completions] == [2, 2, 5, 5]
    table = markdown_table(results)
    assert "| 5 | one-home | 4.10 s | 4.10 s | 4.10 s | 1.00 s | 4.10x | 1.00x the image" in table
    assert "| 5 | pieces |" in table and "8 MiB x 12 |" in table


def test_json_round_trip(results, tmp_path: Path) -> None:
    doc = to_json(results)
    assert doc["schema"] == SCHEMA and doc["simulated"] is True
    assert doc["params"]["nic_rate"] == 100e6 and "nodes" not in doc["params"]
    back = read_json(write_json(results, tmp_path / "fleet.json"))
    assert back.rows == results.rows
    assert back.pieces == results.pieces
    assert [c[:2] for c in back.completions] == [c[:2] for c in results.completions]
    assert back.params.blob_sizes == (10**8,)
    json.loads((tmp_path / "fleet.json").read_text())  # strict JSON
    with pytest.raises(ValueError, match="not a warmstart"):
        from_json({"schema": "other"})


def test_plot_is_written(results, tmp_path: Path) -> None:
    path = plot(results, tmp_path / "sub" / "fleet.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
