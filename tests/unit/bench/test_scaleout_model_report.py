"""The scale-out report with a separate model artifact (``--model-size``): the startup table's
model column, the issue's targets as rows, the model's pre-warm rows, the spike's upstream
model bytes, and the JSON round trip."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from warmstart_harness.bench.scaleout_model import DOWNLOAD_DIR, BenchModel, download_env, model_tag
from warmstart_harness.bench.scaleout_report import (
    dumps,
    from_json,
    markdown_table,
    prewarm_table,
    startup_phase_table,
    to_json,
)
from warmstart_harness.bench.scaleout_rows import Row
from warmstart_harness.bench.scaleout_summary import table_rows
from warmstart_harness.bench.scaleout_types import (
    BASELINE,
    IMAGE_CACHED,
    PROVISIONED,
    WARMSTART,
    FanoutResult,
    PrewarmResult,
    ScaleoutResults,
    StartupResult,
)
from warmstart_harness.testbed.registry import Request

from .test_scaleout_report import spike

MIB = 1 << 20
MODEL = 1024 * MIB
IMAGE = 1100 * MIB


def start(mode: str, tier: str, total: float, model_s: float, **kw: object) -> StartupResult:
    values: dict[str, object] = {"pull_s": 0.1, "unpack_s": 0.0, "start_s": 0.1, "load_s": 0.5}
    values.update(kw)
    return StartupResult(mode, tier, total_s=total, model_s=model_s, **values)  # type: ignore[arg-type]


def model_results() -> ScaleoutResults:
    """baseline 30 s cold (model downloaded in 11 s), 14 s with the image cached; warmstart
    cold 24 s (model 11 s from the upstream), peer 8 s (model 3 s), warm 7 s, hot 1.2 s."""
    startup = [
        start(BASELINE, "cold", 30.0, 11.0, pull_s=11.0, unpack_s=7.0, upstream_bytes=IMAGE + MODEL,
              upstream_model_bytes=MODEL),
        start(BASELINE, IMAGE_CACHED, 14.0, 11.0, upstream_bytes=MODEL, upstream_model_bytes=MODEL),
        start(WARMSTART, "cold", 24.0, 11.0, pull_s=15.0, unpack_s=7.0,
              upstream_bytes=IMAGE + MODEL, upstream_model_bytes=MODEL, model_materialise_s=0.01),
        start(WARMSTART, "warm", 7.0, 0.2, model_materialise_s=0.02),
        start(WARMSTART, "peer", 8.0, 3.0, model_materialise_s=0.01),
        start(WARMSTART, "hot", 1.2, 0.05, model_materialise_s=0.0),
    ]  # fmt: skip
    prewarm = [
        PrewarmResult(WARMSTART, "warm", 5.0, 0.0, 6.0, 6.0, 6.1, 0, 3),
        PrewarmResult(WARMSTART, "warm", 0.15, 0.02, 0.0, 0.0, 0.2, 0, 3, kind="model",
                      linked_bytes=MODEL),
        PrewarmResult(WARMSTART, "cold", 11.0, 0.01, 0.0, 0.0, 11.1, MODEL, 3, kind="model",
                      linked_bytes=MODEL),
        PrewarmResult(WARMSTART, "peer", 2.5, 0.01, 0.0, 0.0, 2.6, 0, 3, kind="model",
                      linked_bytes=MODEL),
    ]  # fmt: skip
    spikes = [
        replace(spike(BASELINE, 10.0, 26.0), upstream_bytes=3 * IMAGE + 4 * MODEL,
                upstream_model_bytes=4 * MODEL,
                links={"node0": {"upstream_rx": 5 * MIB, "lan_rx": 0, "lan_tx": 0}}),
        replace(spike(WARMSTART, 3.0, 6.0, decided_at=4.0), upstream_bytes=IMAGE + MODEL,
                upstream_model_bytes=MODEL),
        replace(spike(PROVISIONED, 2.5, None), upstream_model_bytes=4 * MODEL),
    ]  # fmt: skip
    return ScaleoutResults(
        spike=spikes,
        startup=startup,
        prewarm=prewarm,
        fanout=[FanoutResult(WARMSTART, 4, 30.0, IMAGE + MODEL, IMAGE, 12.0, MODEL)],
        modes=(BASELINE, WARMSTART, PROVISIONED),
        params={"model_bytes": MODEL, "image_bytes": IMAGE},
    )


def rows_by_metric(r: ScaleoutResults) -> dict[str, Row]:
    return {row.metric: row for row in table_rows(r)}


def test_the_issues_targets_are_rows_of_the_table() -> None:
    rows = rows_by_metric(model_results())
    hot = rows["startup from hot (baseline: cold), image and model"]
    assert hot.ratio_value == 25.0 and hot.target == "10x faster or more" and hot.met
    cached = rows["startup with the image cached, model downloaded (baseline: cold)"]
    assert cached.values == {BASELINE: 14.0}
    assert round(cached.ratio_value, 2) == 2.14 and cached.met
    versus = rows["startup from hot vs the image cached (baseline: image-cached)"]
    assert round(versus.ratio_value, 1) == 11.7 and versus.met
    peer = next(v for k, v in rows.items() if k.startswith("model fetch during a start"))
    assert "from the upstream: 11.0 s" in peer.metric
    assert peer.values == {BASELINE: 11.0, WARMSTART: 3.0}
    assert round(peer.ratio_value, 2) == 3.67 and peer.met
    alone = rows["model pre-warm alone, fetch from a peer (from the upstream: 11.0 s)"]
    assert alone.values == {WARMSTART: 2.5} and alone.ratio_value == 4.4 and alone.met
    materialise = rows["model warm -> hot (materialise: hard links)"]
    assert materialise.values == {WARMSTART: 0.02} and materialise.met
    once = next(v for k, v in rows.items() if k.startswith("upstream model bytes over all"))
    assert once.values == {BASELINE: 2.0, WARMSTART: 1.0} and once.met
    assert "warmstart: cold+warm+peer+hot" in once.metric
    spiked = rows["upstream model bytes (first replica and scale-out)"]
    assert spiked.values == {BASELINE: 4.0, WARMSTART: 1.0, PROVISIONED: 4.0}
    assert spiked.met
    assert rows["bytes on the nodes' shaped upstream links (all nodes)"].values == {BASELINE: 5.0}
    p50 = rows["P50 vs provisioned"]
    assert p50.values[WARMSTART] == 1.2 and p50.met
    cost = rows["replica-seconds vs provisioned"]
    assert round(cost.values[WARMSTART], 2) == 0.91 and cost.met is False
    fanout = rows["upstream bytes (image + model), 4 nodes"]
    assert fanout.values[WARMSTART] == 1.0 and fanout.target == "1x the image and model"
    table = markdown_table(model_results())
    assert (
        "| spike | replica-seconds vs provisioned | 0.96 | 0.91 | 1.00 | - | 0.5 or less " in table
    )


def test_missed_model_targets_say_so() -> None:
    r = model_results()
    r.startup = [
        replace(s, total_s=25.0) if s.tier == IMAGE_CACHED else s
        for s in r.startup
        if s.tier != "peer"
    ] + [start(WARMSTART, "peer", 9.0, 5.0)]
    r.prewarm = [replace(p, link_s=1.5) if p.kind == "model" else p for p in r.prewarm]
    rows = rows_by_metric(r)
    assert rows["startup with the image cached, model downloaded (baseline: cold)"].met is False
    assert (
        next(v for k, v in rows.items() if k.startswith("model fetch during a start")).met is False
    )
    assert rows["model warm -> hot (materialise: hard links)"].met is False
    # without a model the hot target stays 20x and none of these rows appear
    plain = ScaleoutResults(
        startup=[replace(s, model_s=None) for s in model_results().startup
                 if s.tier != IMAGE_CACHED],
        modes=(BASELINE, WARMSTART),
    )  # fmt: skip
    metrics = [row.metric for row in table_rows(plain)]
    assert "startup from hot (baseline: cold)" in metrics
    assert next(r for r in table_rows(plain) if r.metric.startswith("startup from hot")).target == (
        "20x faster or more"
    )
    assert not [m for m in metrics if "model" in m or "cached" in m]


def test_startup_table_has_the_model_column_and_orders_image_cached_after_cold() -> None:
    table = startup_phase_table(model_results()).splitlines()
    assert table[0] == (
        "| mode | tier | pull s | unpack s | model s | start s | model load + first answer s "
        "| total s | vs baseline cold | upstream MiB | of it model MiB |"
    )
    assert [line.split(" | ")[:2] for line in table[2:]] == [
        ["| baseline", "cold"],
        ["| baseline", "image-cached"],
        ["| warmstart", "cold"],
        ["| warmstart", "peer"],
        ["| warmstart", "warm"],
        ["| warmstart", "hot"],
    ]
    assert table[2] == (
        "| baseline | cold | 11.0 | 7.0 | 11.0 | 0.10 | 0.5 | 30.0 | 1.0x | 2124 | 1024 |"
    )
    assert table[3].endswith("| 11.0 | 0.10 | 0.5 | 14.0 | 2.1x | 1024 | 1024 |")
    assert table[7].endswith("| 1.2 | 25.0x | 0 | 0 |")


def test_model_prewarm_rows() -> None:
    table = prewarm_table(model_results()).splitlines()
    assert table[0].startswith("| mode | what | pre-warm from | fetch s | link s |")
    assert table[2].startswith("| warmstart | image | warm |")
    assert table[3] == (
        "| warmstart | model | cold | 11.00 | 0.01 | 0.0 | 0.0 | 11.10 | 3 files, 1024 MiB | 1024 |"
    )
    assert table[4].startswith("| warmstart | model | peer | 2.50 | 0.01 |")
    assert table[5].startswith("| warmstart | model | warm | 0.15 | 0.02 |")
    # the image's pre-warm row still compares the image's pre-warm only
    rows = rows_by_metric(model_results())
    assert rows["hot pre-warm from warm (baseline: containerd's unpack)"].values[WARMSTART] == 6.1


def test_json_round_trip_keeps_the_models_fields(tmp_path: Path) -> None:
    r = model_results()
    doc = to_json(r)
    assert doc["spike"][0]["upstream_model_bytes"] == 4 * MODEL
    assert doc["spike"][2]["upstream_bytes"] is None
    assert doc["startup"][0]["upstream_model_bytes"] == MODEL
    assert doc["prewarm"][1]["kind"] == "model"
    assert doc["spike_cost"]["load_replica_seconds"] == 59.0
    assert from_json(json.loads(dumps(doc))) == r
    # a report from before the model fields reads too
    for run in doc["spike"]:
        del run["upstream_bytes"], run["upstream_model_bytes"], run["links"]
    old = from_json(json.loads(dumps(doc)))
    assert all(s.upstream_model_bytes is None for s in old.spike)


def test_bench_model_counts_its_own_repositorys_blob_bytes() -> None:
    model = BenchModel("10.1.0.1:5000/warmstart/bench-model:t", "http://10.1.0.1:5000/warmstart/"
                       "bench-model:t", "warmstart/bench-model", MODEL, 3)  # fmt: skip
    blob = "/v2/warmstart/bench-model/blobs/sha256:" + "a" * 64
    requests = [
        Request("GET", blob, 200, 100),
        Request("HEAD", blob, 200, 0),
        Request("GET", blob, 404, 19),
        Request("GET", "/v2/warmstart/bench-model/manifests/t", 200, 900),
        Request("GET", "/v2/warmstart/example-minilm/blobs/sha256:" + "b" * 64, 200, 5000),
        Request("GET", blob, 206, 50),
    ]
    assert model.upstream_bytes(requests) == 150
    assert download_env(model) == {
        "WARMSTART_MODEL_SOURCE": "http://10.1.0.1:5000/warmstart/bench-model:t",
        "SM_MODEL_DIR": DOWNLOAD_DIR,
    }
    assert model_tag(1 << 30) == "st1024m-s16" and model_tag(1000) == "st1000b-s16"


def test_the_stand_in_model_is_written_once_and_the_same_every_time(tmp_path: Path) -> None:
    from warmstart_harness.bench.scaleout_model import stand_in_dir

    lines: list[str] = []
    first = stand_in_dir(tmp_path / "a", 3 * MIB, lines.append)
    names = sorted(p.name for p in first.iterdir())
    assert names == ["config.json", "model-00001-of-00001.safetensors",
                     "model.safetensors.index.json"]  # fmt: skip
    shard = (first / names[1]).read_bytes()
    assert len(shard) == 3 * MIB and lines[0].startswith("model: wrote 1 safetensors shard")
    assert stand_in_dir(tmp_path / "a", 3 * MIB, lines.append) == first
    assert lines[1] == f"model: reusing {first}"
    again = stand_in_dir(tmp_path / "b", 3 * MIB, lines.append)  # seeded: the same bytes
    assert (again / names[1]).read_bytes() == shard
