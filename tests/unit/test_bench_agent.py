from __future__ import annotations

import json
from pathlib import Path

from warmstart_harness.bench.agent import (
    ScenarioResult,
    markdown_table,
    upstream_blob_bytes,
    write_report,
)
from warmstart_harness.testbed.registry import Request

D = "sha256:" + "a" * 64


def test_upstream_blob_bytes_counts_successful_blob_gets_only() -> None:
    reqs = [
        Request("GET", f"/v2/x/blobs/{D}", 200, 100),
        Request("GET", f"/v2/x/blobs/{D}", 206, 50),
        Request("HEAD", f"/v2/x/blobs/{D}", 200, 0),
        Request("GET", f"/v2/x/blobs/{D}", 401, 87),
        Request("GET", "/v2/x/manifests/v1", 200, 500),
    ]
    assert upstream_blob_bytes(reqs) == 150


def test_ratio_respects_the_direction() -> None:
    speed = ScenarioResult("blob", "t", "MB/s", "higher", {"agent": [200, 210], "reg": [100]})
    assert speed.ratio("agent", "reg") == 2.05
    time_ = ScenarioResult("fanout", "t", "s", "lower", {"agent": [2.0], "proxy": [5.0]})
    assert time_.ratio("agent", "proxy") == 2.5
    assert time_.ratio("agent", "nobody") is None


def test_report_files(tmp_path: Path) -> None:
    r = ScenarioResult(
        "fanout",
        "8 clients",
        "s",
        "lower",
        {"agent": [2.0, 2.2, 2.1], "proxy": [5.0, 5.5, 4.9]},
        {"clients": 8, "upstream_x_image_by_contender": {"agent": [1.0], "proxy": [2.0, 1.9]}},
        baseline="proxy",
    )
    table = markdown_table([r])
    assert "| fanout | agent | 2.10 s | 2.00, 2.20, 2.10 | 2.38x proxy |" in table
    assert "| fanout | proxy | 5.00 s | 5.00, 5.50, 4.90 |  |" in table
    assert "| fanout | upstream_x_image (proxy) | 1.95 | 2, 1.9 | |" in table
    paths = write_report([r], tmp_path / "a.json", tmp_path)
    names = sorted(p.name for p in paths)
    assert names == ["a.json", "agent-fanout-upstream_x_image.png", "agent-fanout.png", "agent.md"]
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc[0]["medians"] == {"agent": 2.1, "proxy": 5.0}
