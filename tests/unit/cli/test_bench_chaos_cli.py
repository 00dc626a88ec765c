"""``warmstart bench chaos``: root check, options to the config, report out (the run stubbed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import warmstart_harness.bench.chaos as chaos
from warmstart.cli.main import app
from warmstart_harness.bench.chaos_plan import UPSTREAM_OUTAGE, ChaosConfig
from warmstart_harness.bench.chaos_report import ChaosResults, ClassResult


def test_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = CliRunner().invoke(app, ["bench", "chaos", "--quick"])
    assert result.exit_code == 2
    assert "bench chaos needs root" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_options_reach_the_config_and_the_report_is_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[ChaosConfig] = []

    def fake_run(config: ChaosConfig, work: Path, log: Any = print) -> ChaosResults:
        seen.append(config)
        assert work.is_dir()
        return ChaosResults(
            params={"seed": config.seed, "nodes": config.nodes, "quick": config.quick},
            classes=[ClassResult(UPSTREAM_OUTAGE, planned=1)],
        )

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(chaos, "run_chaos", fake_run)
    args = ["bench", "chaos", "--quick", "--seed", "9", "--nodes", "4", "--seconds", "12",
            "--json", str(tmp_path / "c.json"), "--out", str(tmp_path / "md"),
            "--workdir", str(tmp_path / "w")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    [config] = seen
    assert (config.seed, config.nodes, config.soak_seconds, config.quick) == (9, 4, 12.0, True)
    assert config.outage_seconds == 10.0  # the quick run's
    assert "| upstream-outage | 0/1 |" in result.output
    assert (tmp_path / "c.json").exists() and (tmp_path / "md" / "chaos.md").exists()
    assert (tmp_path / "w").is_dir()  # a given workdir is kept

    seen.clear()
    result = CliRunner().invoke(app, ["bench", "chaos", "--json", str(tmp_path / "d.json"),
                                      "--out", str(tmp_path / "md2")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert seen[0] == ChaosConfig()  # the defaults: 3 nodes, 300 s soak, 30 s outage


def test_too_few_nodes_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    result = CliRunner().invoke(app, ["bench", "chaos", "--nodes", "2"])
    assert result.exit_code == 2
