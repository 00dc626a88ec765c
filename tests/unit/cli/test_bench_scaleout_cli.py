"""``warmstart bench scaleout``: modes to the config (provisioned among them), the spike's cost
table on the console (the run stubbed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import warmstart_harness.bench.scaleout as scaleout
from tests.unit.bench.helpers import metrics
from warmstart.cli.main import app
from warmstart_harness.bench.scaleout_config import ScaleoutConfig
from warmstart_harness.bench.scaleout_types import ScaleoutResults, SpikeResult, TimelinePoint


def test_provisioned_is_a_mode_and_the_spike_cost_is_printed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[ScaleoutConfig] = []

    def fake_run(config: ScaleoutConfig, work: Path, log: Any = print) -> ScaleoutResults:
        seen.append(config)
        line = [TimelinePoint(0.0, 2), TimelinePoint(10.0, 2)]
        return ScaleoutResults(
            spike=[
                SpikeResult("warmstart", [], line, metrics(p50_s=3.0, replica_seconds=50.0)),
                SpikeResult("provisioned", [], line, metrics(p50_s=2.0, replica_seconds=200.0)),
            ],
            modes=config.modes,
        )

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(scaleout, "run_scaleout", fake_run)
    args = ["bench", "scaleout", "--quick", "--modes", "warmstart,provisioned",
            "--scenarios", "spike", "--json", str(tmp_path / "s.json"),
            "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "w")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    [config] = seen
    assert (config.modes, config.scenarios) == (("warmstart", "provisioned"), ("spike",))
    out = result.output
    assert "spike warmstart: P50 3.00 s" in out and "replica-seconds 50" in out
    assert "| spike run | P50 | P99 | lost | replica-seconds | cost vs provisioned " in out
    assert "| warmstart | 3.00 s | 40.00 s | 0 | 50 | 0.25 | 1.50x |" in out
    assert "| provisioned | 2.00 s | 40.00 s | 0 | 200 | 1.00 | 1.00x |" in out
    assert (
        "warmstart: P50 1.50x provisioned's (3.00 s vs 2.00 s), P99 1.00x, lost 0, at 0.25 of "
        "its cost (50 vs 200 replica-seconds)" in out
    )
    assert (tmp_path / "s.json").exists() and (tmp_path / "out" / "scaleout.md").exists()

    seen.clear()
    result = CliRunner().invoke(app, ["bench", "scaleout", "--quick", "--scenarios", "spike",
                                      "--json", str(tmp_path / "d.json"), "--out",
                                      str(tmp_path / "o2")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert seen[0].modes == ("baseline", "registry-proxy", "warmstart", "provisioned")


def test_an_unknown_mode_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    result = CliRunner().invoke(app, ["bench", "scaleout", "--modes", "warmstart,reserved"])
    assert result.exit_code == 2
    assert "unknown mode(s) reserved; choose from" in result.output
    assert "provisioned" in result.output


def test_model_size_goes_to_the_config_and_the_padding_stays_its_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[ScaleoutConfig] = []

    def fake_run(config: ScaleoutConfig, work: Path, log: Any = print) -> ScaleoutResults:
        seen.append(config)
        return ScaleoutResults(modes=config.modes)

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(scaleout, "run_scaleout", fake_run)
    common = ["--json", str(tmp_path / "s.json"), "--out", str(tmp_path / "o"),
              "--workdir", str(tmp_path / "w")]  # fmt: skip
    args = ["bench", "scaleout", "--padding", "1GiB", "--model-size", "1GiB", *common]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (seen[0].padding_bytes, seen[0].model_bytes) == (1 << 30, 1 << 30)
    result = CliRunner().invoke(app, ["bench", "scaleout", "--quick", *common])
    assert result.exit_code == 0, result.output
    assert (seen[1].padding_bytes, seen[1].model_bytes) == (64 << 20, 0)  # quick: no model
    result = CliRunner().invoke(app, ["bench", "scaleout", "--model-size", "lots", *common])
    assert result.exit_code == 2


def test_agent_settings_reach_the_config_and_bad_ones_are_usage_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[ScaleoutConfig] = []

    def fake_run(config: ScaleoutConfig, work: Path, log: Any = print) -> ScaleoutResults:
        seen.append(config)
        return ScaleoutResults(modes=config.modes, params={"agent_settings": config.agent_settings})

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(scaleout, "run_scaleout", fake_run)
    out = ["--json", str(tmp_path / "s.json"), "--out", str(tmp_path / "o")]
    args = ["bench", "scaleout", "--quick", "--agent-setting", "pieces=false",
            "--agent-setting", "piece_uploads = 3", "--agent-setting", 'piece_max="32MiB"', *out]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen[0].agent_settings == {"pieces": False, "piece_uploads": 3, "piece_max": "32MiB"}
    report = (tmp_path / "o" / "scaleout.md").read_text()
    assert report.startswith("Agents ran with settings other than the defaults: piece_max = ")
    for bad, why in (("nope=1", "agent.toml key"), ("pieces", "KEY=VALUE"),
                     ("pieces=maybe", "not TOML")):  # fmt: skip
        result = CliRunner().invoke(app, ["bench", "scaleout", "--agent-setting", bad, *out])
        assert result.exit_code == 2 and why in result.output, result.output
    assert ScaleoutConfig().agent_settings == {}  # the defaults: what a user gets
