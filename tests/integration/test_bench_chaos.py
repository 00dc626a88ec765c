"""``warmstart bench chaos`` end to end on a tiny configuration: three nodes in network
namespaces, small images, one injection of every fault class, a 5 s outage and a 5 s soak.
Checks what the chaos soak must show whatever the speed: every class ran and its fault hit,
no pull hung, no corrupt blob was kept in any agent or containerd store, no client got a
complete body that was not the blob, the soak sampled the agent, and the report was written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.tools import require_tool
from warmstart_harness.bench.chaos import run_chaos, write_outputs
from warmstart_harness.bench.chaos_plan import FAULT_CLASSES, ChaosConfig
from warmstart_harness.bench.chaos_report import served_corrupt, summarize

pytestmark = pytest.mark.timeout(300)


def test_tiny_chaos_run(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces, containerd and tmpfs mounts need root")
    for tool in ("containerd", "ctr", "runc", "ip", "tc", "nsenter", "docker-registry",
                 "skopeo", "mount", "umount", "ldd"):  # fmt: skip
        require_tool(tool)
    config = ChaosConfig.quick_config(
        seed=3,
        layer_mib=(8, 12),
        outage_seconds=5.0,
        soak_seconds=5.0,
        sample_every=1.0,
        storm=2,
        pull_timeout=30.0,
        time_limit=170.0,  # the classes must not be skipped on a busy machine
    )
    lines: list[str] = []
    results = run_chaos(config, tmp_path / "work", log=lines.append)
    log = "\n".join(lines[-60:])

    assert results.skipped == [], log
    assert [c.fault for c in results.classes] == list(FAULT_CLASSES), log
    for c in results.classes:
        row = summarize(c)
        assert c.error is None, (c.fault, c.error, log)
        assert row.injected >= 1, (c.fault, c.injections, log)  # the fault really hit
        assert row.attempted >= 1, (c.fault, log)
        assert row.hung == 0, (c.fault, [p for p in c.pulls if p.timed_out])
        assert row.corrupt_kept == 0, (c.fault, c.corrupt_files, c.notes)
        assert served_corrupt(c) == 0, (c.fault, [p.error for p in c.pulls if p.error])

    soak = results.soak
    assert soak is not None and soak.start is not None and soak.end is not None
    assert soak.samples and soak.pulls > 0 and soak.blob_gets > 0
    assert soak.errors == 0 and soak.corrupt_served == 0, soak.first_errors

    written = write_outputs(results, tmp_path / "out" / "chaos.json", tmp_path / "out")
    assert {p.name for p in written} == {"chaos.json", "chaos.md"}
    table = (tmp_path / "out" / "chaos.md").read_text()
    for fault in FAULT_CLASSES:
        assert f"| {fault} |" in table
    assert "| agent RSS (MiB) |" in table and "| target | wanted | measured |" in table
    doc = json.loads((tmp_path / "out" / "chaos.json").read_text())
    assert [r["fault"] for r in doc["rows"]] == list(FAULT_CLASSES)
    assert doc["params"]["seed"] == 3 and doc["environment"]["sha_ni"] >= 0
    # nothing is left behind: no tmpfs mount under the work dir
    mounts = Path("/proc/mounts").read_text()
    assert str(tmp_path) not in mounts
