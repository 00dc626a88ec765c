from __future__ import annotations

from pathlib import Path

import pytest

from warmstart_harness.model_server.weights import LoadReport, model_files, read_all


def test_reads_every_byte_of_every_file(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"x" * 1000)
    (tmp_path / "padding").mkdir()
    (tmp_path / "padding" / "p0.bin").write_bytes(b"y" * 5000)
    (tmp_path / "empty").write_bytes(b"")
    report = read_all(tmp_path, chunk=64)
    assert (report.files, report.bytes) == (3, 6000)
    assert [p.name for p in model_files(tmp_path)] == ["a.bin", "empty", "p0.bin"]
    assert "3 files, 6000 bytes" in report.describe()


def test_missing_directory_fails(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_all(tmp_path / "nope")


def test_report_rate() -> None:
    assert LoadReport(1, 2_000_000, 2.0).mb_per_s == 1.0
    assert LoadReport(1, 10, 0.0).mb_per_s == 0.0
