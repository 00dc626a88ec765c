"""``warmstart bench scaleout`` end to end on a tiny configuration: two nodes in network
namespaces with shaped uplinks, the example image with a small padding layer and a separate
8 MiB model artifact, every scenario in two modes, and the spike in provisioned mode. Checks
what the benchmark claims, not how fast it ran: which tiers were measured, that warmstart's
fan-out drew the image and model from the upstream exactly once while the baseline drew them
once per node, that a hot start drew nothing, that warmstart fetched the model from the upstream
once for all its starts and once for the spike while the baseline's replicas downloaded it
each time, that no request was lost, that provisioned kept every replica ready and paid the
most replica-seconds, and that the report was written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.tools import require_tool
from warmstart_harness.bench.scaleout import run_scaleout, write_outputs
from warmstart_harness.bench.scaleout_config import ScaleoutConfig

pytestmark = [pytest.mark.package_registries, pytest.mark.timeout(600)]


def write_trace(path: Path) -> Path:
    """A small trace of the Azure schema: quiet, then a busy minute."""
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    t = 0.0
    for i in range(60):
        rows.append(f"{t:.3f},{400 + i % 7 * 50},{20 + i % 5 * 10}")
        t += 2.0
    for i in range(240):
        rows.append(f"{t:.3f},{400 + i % 7 * 50},{20 + i % 5 * 10}")
        t += 0.25
    path.write_text("\n".join(rows) + "\n")
    return path


def test_tiny_scaleout_in_two_modes(image_cache: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces and containerd need root")
    for tool in ("containerd", "ctr", "runc", "ip", "tc", "nsenter", "debootstrap", "umoci"):
        require_tool(tool)
    config = ScaleoutConfig(
        nodes=2,
        padding_bytes=8 << 20,
        model_bytes=8 << 20,
        modes=("baseline", "warmstart", "provisioned"),
        trace=write_trace(tmp_path / "trace.csv"),
        factor=2.0,
        burst_s=8.0,
        lead_s=4.0,
        image_cache=image_cache,
        quick=True,
        spike_spare0=True,
    )
    lines: list[str] = []
    results = run_scaleout(config, tmp_path / "work", log=lines.append)

    tiers = {(r.mode, r.tier): r for r in results.startup}
    assert set(tiers) == {
        ("baseline", "cold"),
        ("baseline", "image-cached"),
        ("warmstart", "cold"),
        ("warmstart", "warm"),
        ("warmstart", "peer"),
        ("warmstart", "hot"),
    }
    image_bytes = results.params["image_bytes"]
    model_bytes = results.params["model_bytes"]  # its layers and config
    assert results.params["model_files"] == 3  # a shard, its index, config.json
    # a replica downloads the model's layers (not its config blob); the agent fetches them all
    downloaded = tiers[("baseline", "cold")].upstream_model_bytes
    assert model_bytes - 4096 < downloaded < model_bytes
    assert tiers[("baseline", "cold")].upstream_bytes == image_bytes + downloaded
    assert tiers[("baseline", "image-cached")].upstream_bytes == downloaded  # image cached
    assert tiers[("baseline", "image-cached")].pull_s < 1.0
    assert tiers[("warmstart", "cold")].upstream_bytes == image_bytes + model_bytes
    assert tiers[("warmstart", "cold")].upstream_model_bytes == model_bytes
    for tier in ("warm", "peer", "hot"):
        assert tiers[("warmstart", tier)].upstream_bytes == 0, tier
    for r in results.startup:
        assert r.total_s >= r.pull_s + r.unpack_s + r.start_s
        assert r.model_s is not None and r.model_phase_s is not None
        if r.mode == "warmstart":  # through the agent, materialised: links
            assert r.model_agent is not None and r.model_materialise_s is not None
            made = r.model_agent["model"]
            assert made["built"] == (r.tier != "hot")  # a hot start finds it materialised
            assert made["linked_bytes"] == (0 if r.tier == "hot" else downloaded)
        else:  # the replica's own download, after its container started
            assert r.model_agent is None and r.model_phase_s == r.model_s > 0
    assert tiers[("warmstart", "peer")].model_agent["sources"] == {"peer": model_bytes}
    assert tiers[("warmstart", "hot")].model_agent["sources"] == {"local": model_bytes}
    # the cold starts crossed the links once: the image came through one shaped uplink
    for mode in ("baseline", "warmstart"):
        links = tiers[(mode, "cold")].links
        assert links is not None and set(links) == {"node0", "node1"}
        assert sum(c["upstream_rx"] for c in links.values()) >= image_bytes

    # the hot pre-warm from each tier: every blob linked, upstream bytes only when cold; the
    # model's: materialised as links, from the upstream only when cold
    models = {p.tier: p for p in results.prewarm if p.kind == "model"}
    assert set(models) == {"warm", "peer", "cold"}
    assert models["cold"].upstream_bytes == model_bytes
    for p in models.values():
        assert p.linked == 3 and p.linked_bytes == downloaded  # the layers, as hard links
        assert p.tier == "cold" or p.upstream_bytes == 0
    prewarms = {p.tier: p for p in results.prewarm if p.kind == "image"}
    assert set(prewarms) == {"warm", "peer", "cold"}
    assert prewarms["cold"].upstream_bytes == image_bytes
    for tier in ("warm", "peer"):
        assert prewarms[tier].upstream_bytes == 0, tier
    for p in prewarms.values():
        assert p.linked >= 2 and p.total_s >= p.fetch_s  # config and layers, never streamed

    fanout = {f.mode: f for f in results.fanout if f.scenario == "fanout"}
    assert fanout["baseline"].upstream_bytes == 2 * (image_bytes + downloaded)  # once per node
    assert fanout["warmstart"].upstream_bytes == image_bytes + model_bytes  # once for the cluster
    for f in fanout.values():  # each node's finish and link bytes
        assert [n.node for n in f.per_node] == ["node0", "node1"]
        assert all(0 < n.done_s <= f.wall_s for n in f.per_node)
        assert sum(n.upstream_rx for n in f.per_node) >= f.upstream_bytes
    # fetch only (no containerd): baseline nodes each copy the image from the upstream; the
    # agents draw it once and each blob crosses the LAN once, to the node that is not its home
    fetch = {f.mode: f for f in results.fanout if f.scenario == "fanout-fetch"}
    assert set(fetch) == {"baseline", "warmstart"}
    assert fetch["baseline"].upstream_bytes == 2 * image_bytes
    assert fetch["warmstart"].upstream_bytes == image_bytes
    for n in fetch["baseline"].per_node:
        assert n.upstream_rx >= image_bytes and n.lan_tx < (1 << 20)
    ours = fetch["warmstart"].per_node
    assert sum(n.lan_rx for n in ours) >= image_bytes > sum(n.upstream_rx for n in ours) / 1.2
    assert fetch["warmstart"].agents_cpu_s is not None and fetch["baseline"].agents_cpu_s is None

    spike = {s.mode: s for s in results.spike}
    assert set(spike) == {"baseline", "warmstart", "warmstart-spare0", "provisioned"}
    for s in spike.values():
        assert s.metrics.requests == len(s.records) > 0
        assert s.metrics.lost == 0, [r for r in s.records if not r.ok][:3]
        assert max(p.ready for p in s.timeline) >= 1
    # the model from the upstream: once for warmstart's cluster (its agents start empty), once
    # per replica start elsewhere (provisioned: both replicas)
    assert spike["warmstart"].upstream_model_bytes == model_bytes
    assert spike["warmstart-spare0"].upstream_model_bytes == model_bytes
    assert spike["provisioned"].upstream_model_bytes == 2 * downloaded
    assert spike["baseline"].upstream_model_bytes in (downloaded, 2 * downloaded)
    assert spike["warmstart"].links is not None
    # provisioned: both replicas ready through the replay, so it pays 2 x the window; every
    # autoscaled run (one replica before the burst) pays less over the same window
    floor = spike["provisioned"]
    assert {(p.ready, p.starting, p.stopping) for p in floor.timeline} == {(2, 0, 0)}
    window = floor.metrics.cost_window_s
    assert window == config.lead_s + config.burst_s
    assert floor.metrics.replica_seconds == pytest.approx(2 * window, rel=0.02)
    for s in spike.values():
        assert s.metrics.cost_window_s == window
        assert s.metrics.replica_seconds is not None
        assert window * 0.9 <= s.metrics.replica_seconds <= floor.metrics.replica_seconds + 1e-6

    written = write_outputs(results, tmp_path / "out" / "scaleout.json", tmp_path / "out")
    names = {p.name for p in written}
    assert {"scaleout.json", "scaleout.md", "scaleout-spike.png", "scaleout-startup.png"} <= names
    assert "scaleout-fanout-nodes.png" in names
    doc = json.loads((tmp_path / "out" / "scaleout.json").read_text())
    assert doc["params"]["nodes"] == 2
    table = (tmp_path / "out" / "scaleout.md").read_text()
    assert "| startup | startup from hot" in table
    assert "| startup | startup with the image cached, model downloaded" in table
    assert "| model s |" in table and "| baseline | image-cached |" in table
    assert "| fanout-fetch | warmstart | node1 |" in table
    assert "| provisioned | " in table and "| cost vs provisioned |" in table
    assert [row["mode"] for row in doc["spike_cost"]["rows"]] == [s.mode for s in results.spike]


def test_tiny_startup_with_the_cri_puller(image_cache: Path, tmp_path: Path) -> None:
    """``--puller cri``: every replica pulled by containerd's CRI plugin (PullImage) in the
    node's namespace, its config_path the agent's certs dir (warmstart) or the runtime's
    hosts.toml (baseline, registry-proxy); the tiers draw from the upstream exactly what they do
    with ctr, so the CRI pulled through each mode's mirror."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces and containerd need root")
    for tool in ("containerd", "ctr", "runc", "ip", "tc", "nsenter", "debootstrap", "umoci"):
        require_tool(tool)
    config = ScaleoutConfig(
        nodes=2,
        padding_bytes=8 << 20,
        modes=("baseline", "registry-proxy", "warmstart"),
        scenarios=("startup",),
        image_cache=image_cache,
        quick=True,
        puller="cri",
    )
    lines: list[str] = []
    results = run_scaleout(config, tmp_path / "work", log=lines.append)

    tiers = {(r.mode, r.tier): r for r in results.startup}
    assert set(tiers) == {
        ("baseline", "cold"),
        ("registry-proxy", "cold"),
        ("registry-proxy", "warm"),
        ("warmstart", "cold"),
        ("warmstart", "warm"),
        ("warmstart", "peer"),
        ("warmstart", "hot"),
    }
    image_bytes = results.params["image_bytes"]
    assert results.params["puller"] == "cri"
    for mode in ("baseline", "warmstart"):
        assert tiers[(mode, "cold")].upstream_bytes == image_bytes, mode
    assert tiers[("registry-proxy", "cold")].upstream_bytes >= image_bytes  # its double fetch
    for key in (("registry-proxy", "warm"), *(("warmstart", t) for t in ("warm", "peer", "hot"))):
        assert tiers[key].upstream_bytes == 0, key  # through the node's mirror, not around it
    for r in results.startup:
        assert r.unpack_s == 0.0 and r.pull_s > 0  # PullImage: fetch + unpack, one phase
        assert r.total_s >= r.pull_s + r.start_s
    assert {p.tier for p in results.prewarm} == {"warm", "peer", "cold"}

    written = write_outputs(results, None, tmp_path / "out")
    table = (tmp_path / "out" / "scaleout.md").read_text()
    assert "| pull s (CRI PullImage: fetch + unpack) | unpack s |" in table
    assert "| warmstart | hot | " in table
    assert written
