"""Models cached like images, with a real registry and real agents: ModelPack, ORAS-titled
artifacts and modelcar images are pre-warmed and materialised read-only with the right file
names; hostile artifacts are refused with nothing materialised; a model is fetched from the
upstream once per cluster; a pinned model is never evicted."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import oras.client as oras_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.model_push import push_model
from tests.support.models import (
    WEIGHT_CONFIG_RAW,
    WEIGHT_TAR_GZIP,
    WEIGHT_TAR_ZSTD,
    Blob,
    Member,
    config_blob,
    raw_file,
    tar_bytes,
)
from warmstart.oci import mediatypes as mt
from warmstart_harness.testbed.agent import AgentProcess
from warmstart_harness.testbed.net import free_port
from warmstart_harness.testbed.registry import RegistryProcess

pytestmark = pytest.mark.integration
MiB = 1 << 20


def files_under(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def model_status(agent: AgentProcess, reference: str) -> dict[str, Any]:
    doc = agent.status()
    found = [m for m in doc["models"] if m["reference"] == reference]
    assert found, f"{reference} not in /status models: {doc['models']}"
    assert all(i["reference"] != reference for i in doc["images"])
    return found[0]


def make_agent(
    agents: Callable[..., AgentProcess], registry: RegistryProcess, **kw: Any
) -> AgentProcess:
    return agents(upstreams={registry.host: registry.url}, **kw)


def test_modelpack_is_materialised_read_only_with_links(
    registry: RegistryProcess, agents: Callable[..., AgentProcess]
) -> None:
    weights = os.urandom(5 * MiB)
    layers = [
        raw_file("model.safetensors", weights),
        raw_file("config.json", b'{"hidden": 8}', WEIGHT_CONFIG_RAW),
        Blob(tar_bytes([Member("tok/vocab.txt", b"a b c")], "gzip"), WEIGHT_TAR_GZIP, {}),
        Blob(tar_bytes([Member("extra/notes.md", b"# hi")], "zstd"), WEIGHT_TAR_ZSTD, {}),
    ]
    push_model(registry, "models/tiny", "v1", config_blob(), layers)
    ref = f"{registry.host}/models/tiny:v1"
    agent = make_agent(agents, registry)

    code, warm = agent.prewarm(ref)  # an artifact: taken as a model, warm
    assert code == 200, warm
    assert warm["model_format"] == "modelpack" and warm["model"] is None
    assert model_status(agent, ref)["tier"] == "warm"

    code, hot = agent.prewarm(ref, hot=True)
    assert code == 200, hot
    info = hot["model"]
    path = Path(info["path"])
    assert files_under(path) == {
        "model.safetensors": weights,
        "config.json": b'{"hidden": 8}',
        "tok/vocab.txt": b"a b c",
        "extra/notes.md": b"# hi",
    }
    assert info["files"] == 4 and info["linked_bytes"] == len(weights) + 13
    blob = agent.store / "blobs" / "sha256" / layers[0].digest.hex
    assert (path / "model.safetensors").stat().st_ino == blob.stat().st_ino
    for p in [path, *path.rglob("*")]:
        assert stat.S_IMODE(p.stat().st_mode) & 0o222 == 0, p
    by_ref = Path(info["reference_path"])
    assert by_ref.is_symlink() and by_ref.resolve() == path.resolve()
    status = model_status(agent, ref)
    assert status["tier"] == "hot" and status["path"] == str(path)
    assert status["format"] == "modelpack"

    assert agent.status()["store"]["model_extracted"] == len(b"a b c") + len(b"# hi")
    code, raw = agent.get("/metrics")
    assert code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(raw.decode())
        for s in family.samples
    }
    assert samples[("warmstart_agent_models_materialised_total", (("outcome", "built"),))] == 1
    linked = samples[("warmstart_agent_model_bytes_total", (("how", "linked"),))]
    assert linked == len(weights) + 13
    code, again = agent.prewarm(ref, hot=True)
    assert (
        code == 200
        and again["model"]["built"] is False
        and again["sources"] == {"local": again["bytes"]}
    )


def test_oras_pushed_artifact_materialises_with_title_names(
    registry: RegistryProcess, agents: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "weights.bin").write_bytes(os.urandom(2 * MiB))
    (src / "tokenizer.json").write_bytes(b'{"v": 1}')
    client = oras_client.OrasClient(hostname=registry.host, insecure=True)
    cwd = os.getcwd()
    os.chdir(src)  # oras-py names files by the path it is given
    try:
        client.push(
            target=f"{registry.host}/models/oras:v1", files=["weights.bin", "tokenizer.json"]
        )
    finally:
        os.chdir(cwd)
    agent = make_agent(agents, registry)
    ref = f"{registry.host}/models/oras:v1"
    code, hot = agent.prewarm(ref, hot=True, model=True)
    assert code == 200, hot
    assert hot["model_format"] == "artifact"
    assert files_under(Path(hot["model"]["path"])) == files_under(src)

    # and oras-py pulls it back through the agent's mirror unchanged (no ?ns=: default upstream)
    mirror = make_agent(agents, registry, settings={"default_upstream": registry.host})
    out = tmp_path / "out"
    pull = oras_client.OrasClient(hostname=mirror.host, insecure=True)
    pull.pull(target=f"{mirror.host}/models/oras:v1", outdir=str(out))
    assert files_under(out) == files_under(src)


def test_modelcar_image_materialises_its_models_dir(
    registry: RegistryProcess, agents: Callable[..., AgentProcess]
) -> None:
    base = tar_bytes(
        [
            Member("bin", type=tarfile.DIRTYPE),
            Member("bin/sh", type=tarfile.SYMTYPE, linkname="busybox"),
            Member("models", type=tarfile.DIRTYPE),
            Member("models/model.onnx", b"onnx"),
            Member("models/sub/vocab.txt", b"v"),
        ],
        "gzip",
    )
    config = Blob(
        b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}',
        mt.OCI_CONFIG,
        {},
    )
    push_model(
        registry,
        "models/car",
        "v1",
        config,
        [Blob(base, mt.OCI_LAYER_GZIP, {})],
        artifact_type=None,
    )
    agent = make_agent(agents, registry)
    ref = f"{registry.host}/models/car:v1"
    code, body = agent.prewarm(ref, hot=True)  # a container image, not asked as a model
    assert code == 409, body  # no containerd here: an image's hot import needs one
    code, hot = agent.prewarm(ref, hot=True, model=True)
    assert code == 200, hot
    assert hot["model_format"] == "modelcar"
    assert files_under(Path(hot["model"]["path"])) == {"model.onnx": b"onnx", "sub/vocab.txt": b"v"}


@pytest.mark.parametrize(
    ("name", "layers", "message"),
    [
        ("dotdot", [raw_file("../../etc/passwd", b"x")], "leaves the model directory"),
        ("absolute", [raw_file("/etc/passwd", b"x")], "absolute path"),
        ("twice", [raw_file("w.bin", b"1"), raw_file("w.bin", b"2")], "both claim"),
        (
            "symlink",
            [
                Blob(
                    tar_bytes([Member("l", type=tarfile.SYMTYPE, linkname="/etc")]),
                    "application/vnd.cncf.model.weight.v1.tar",
                    {},
                )
            ],
            "symlink",
        ),
        (
            "device",
            [
                Blob(
                    tar_bytes([Member("d", type=tarfile.CHRTYPE)]),
                    "application/vnd.cncf.model.weight.v1.tar",
                    {},
                )
            ],
            "device",
        ),
    ],
)
def test_hostile_artifacts_are_refused_and_nothing_is_materialised(
    registry: RegistryProcess,
    agents: Callable[..., AgentProcess],
    name: str,
    layers: list[Blob],
    message: str,
) -> None:
    push_model(registry, f"hostile/{name}", "v1", config_blob(), layers)
    agent = make_agent(agents, registry)
    code, body = agent.prewarm(f"{registry.host}/hostile/{name}:v1", hot=True, model=True)
    assert code == 400, body
    text = str(body)
    assert message in text, text
    models = agent.store / "models"
    assert [p for p in (models / "sha256").iterdir()] == []
    assert [p for p in (models / "tmp").iterdir()] == []
    assert "Traceback" not in agent.log.read_text()


def test_unknown_kind_of_artifact_is_refused(
    registry: RegistryProcess, agents: Callable[..., AgentProcess]
) -> None:
    push_model(
        registry,
        "hostile/unknown",
        "v1",
        Blob(b"{}", "application/vnd.example.config+json", {}),
        [Blob(b"data", "application/vnd.example.layer", {})],
        artifact_type="application/vnd.example.thing",
    )
    agent = make_agent(agents, registry)
    code, body = agent.prewarm(f"{registry.host}/hostile/unknown:v1", hot=True, model=True)
    assert code == 400 and "unknown kind of artifact" in str(body), body
    assert list((agent.store / "models" / "sha256").iterdir()) == []


def test_a_model_is_fetched_from_the_upstream_once_per_cluster(
    registry: RegistryProcess, agents: Callable[..., AgentProcess]
) -> None:
    layers = [raw_file(f"shard-{i}.safetensors", os.urandom(2 * MiB)) for i in range(3)]
    push_model(registry, "models/shared", "v1", config_blob(), layers)
    ref = f"{registry.host}/models/shared:v1"
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    a = make_agent(agents, registry, port=ports[0], peers=urls)
    b = make_agent(agents, registry, port=ports[1], peers=urls)
    mark = registry.mark()
    for agent in (a, b):
        code, hot = agent.prewarm(ref, hot=True)
        assert code == 200, hot
        assert files_under(Path(hot["model"]["path"])) == {
            layer.annotations["org.cncf.model.filepath"]: layer.data for layer in layers
        }
    for layer in [config_blob(), *layers]:
        assert registry.blob_gets(str(layer.digest), since=mark, successful_only=True) == 1


def test_a_pinned_model_is_not_evicted_until_unpinned(
    registry: RegistryProcess, agents: Callable[..., AgentProcess]
) -> None:
    big = [raw_file("w.bin", os.urandom(3 * MiB))]
    other = [raw_file("o.bin", os.urandom(3 * MiB))]
    push_model(registry, "models/pinned", "v1", config_blob(), big)
    push_model(registry, "models/other", "v1", config_blob(), other)
    agent = make_agent(agents, registry, settings={"budget": 5 * MiB})
    ref = f"{registry.host}/models/pinned:v1"
    code, hot = agent.prewarm(ref, hot=True, pin=True)
    assert code == 200, hot
    path = Path(hot["model"]["path"])
    code, body = agent.prewarm(f"{registry.host}/models/other:v1", hot=True)
    assert code == 503 and "unpin" in str(body), body  # no room: the pinned model stays
    assert path.is_dir() and files_under(path) == {"w.bin": big[0].data}
    # an endpoint pins it too: two holders, released separately
    code, _ = agent.post_json(
        "/prewarm", {"reference": ref, "hot": True, "pin": True, "holder": "endpoint/e1"}
    )
    assert code == 200
    code, answer = agent.post_json("/unpin", {"reference": ref})
    assert code == 200 and answer["released"] is True
    code, body = agent.prewarm(f"{registry.host}/models/other:v1", hot=True)
    assert code == 503, body  # still pinned by the endpoint
    assert path.is_dir()
    code, answer = agent.post_json("/unpin", {"reference": ref, "holder": "endpoint/e1"})
    assert code == 200 and answer["released"] is True
    code, body = agent.prewarm(f"{registry.host}/models/other:v1", hot=True)
    assert code == 200, body
    assert not path.exists()


def test_a_layer_whose_bytes_do_not_match_its_digest_is_refused(
    registry: RegistryProcess, agents: Callable[..., AgentProcess], fault_proxy: Any
) -> None:
    weights = raw_file("w.bin", os.urandom(2 * MiB))
    push_model(registry, "hostile/corrupt", "v1", config_blob(), [weights])
    proxy = fault_proxy(registry)
    proxy.corrupt(path_contains=str(weights.digest), times=None)
    agent = agents(upstreams={registry.host: proxy.url})
    code, body = agent.prewarm(f"{registry.host}/hostile/corrupt:v1", hot=True, model=True)
    assert code == 503 and "other data; nothing was stored" in str(body), body
    assert not (agent.store / "blobs" / "sha256" / weights.digest.hex).exists()
    assert list((agent.store / "models" / "sha256").iterdir()) == []
    assert "Traceback" not in agent.log.read_text()


def test_pushed_with_warmstart_then_pulled_through_the_agent_by_oras(
    registry: RegistryProcess, agents: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    src = tmp_path / "tiny"
    src.mkdir()
    (src / "model.safetensors").write_bytes(os.urandom(3 * MiB))
    (src / "config.json").write_bytes(b'{"layers": 2}')
    ref = f"{registry.host}/models/pushed:v1"
    proc = subprocess.run(
        [sys.executable, "-m", "warmstart.cli.main", "model", "push", str(src), ref,
         "--insecure-registry", registry.host, "-q"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    mirror = make_agent(agents, registry, settings={"default_upstream": registry.host})
    out = tmp_path / "out"
    oras_client.OrasClient(hostname=mirror.host, insecure=True).pull(
        target=f"{mirror.host}/models/pushed:v1", outdir=str(out)
    )
    assert files_under(out) == files_under(src)
    code, hot = mirror.prewarm(ref, hot=True)
    assert code == 200, hot
    # every layer was cached by the pull (ORAS reads no config blob: that one is fetched now)
    assert hot["sources"].get("upstream", 0) < 1024 and hot["sources"]["local"] > 3 * MiB, hot
    assert files_under(Path(hot["model"]["path"])) == files_under(src)
