"""The scale-out benchmark's model artifact (``--model-size``): stand-in weights kept apart from
the image, as in the published SageMaker case (a 17.7 GB image, about 16 GB of weights).

- :func:`prepare_model` writes (or reuses, under the image cache) a stand-in model of the asked
  size in real safetensors layout (:func:`warmstart_harness.testbed.model_files.write_safetensors_model`:
  shards of random BF16 tensors, their index and a config.json; seeded, so the same size gives
  the same bytes and digests every run) and pushes it upstream with ``warmstart model push``'s
  :class:`~warmstart.model_push.ModelPusher`: a CNCF ModelPack artifact, one raw layer a file.
- How a replica gets it depends on the mode. **warmstart** takes the product's path, as the
  endpoint controller does (:mod:`warmstart.serving.models`): the node's agent is asked for the
  model materialised and pinned (:func:`agent_model`) while containerd pulls the image, and the
  replica gets the agent's directory read-only at ``/opt/ml/model``. A replica **without an
  agent** (baseline, registry-proxy, provisioned) downloads it itself at start, as KServe's
  storage initializer or SageMaker's model download do: :func:`download_env` points the example
  model server's downloader (:mod:`warmstart_harness.model_server.download`) at the upstream, and the
  replica, in its container on the node's network, fetches every blob over the node's shaped
  link into its own model directory (verifying each digest while streaming) before it reads
  the weights.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from warmstart.agent.api import PrewarmResponse
from warmstart.agent.client import AgentClient
from warmstart.model_push import ModelPusher
from warmstart.oci import parse_reference
from warmstart.oci.modelpack import ModelInfo
from warmstart.registry import ClientOptions, RegistryClient
from warmstart.serving.models import materialised_path, pin_holder, replica_model_request
from warmstart_harness.testbed.model_files import write_safetensors_model
from warmstart_harness.testbed.registry import Request

Log = Callable[[str], None]

REPOSITORY = "warmstart/bench-model"
SEED = 16  # the stand-in's bytes: the same every run, so its digests are too
# Where a replica without an agent downloads the model (SM_MODEL_DIR): a fresh directory in its
# own container, not the image's /opt/ml/model (whose padding stands for the image's software).
DOWNLOAD_DIR = "/opt/ml/downloaded-model"

# a startup replica pins its model on the node as an endpoint of this name would
BENCH_ENDPOINT = "bench-startup"


@dataclass(frozen=True)
class BenchModel:
    """The model artifact in the upstream registry."""

    reference: str  # <upstream host>/<repository>:<tag>
    source: str  # http://<upstream host>/<repository>:<tag>: what a replica downloads
    repository: str
    bytes: int  # blob bytes: every layer and the config (what one full fetch draws)
    files: int

    def upstream_bytes(self, requests: Iterable[Request]) -> int:
        """Body bytes the upstream sent for this model's blobs."""
        return sum(
            r.size
            for r in requests
            if r.method == "GET" and r.blob_digest and r.status < 400
            and r.repository == self.repository
        )  # fmt: skip


def model_tag(size: int) -> str:
    """The artifact's tag: its size and the seed (the same bytes, the same tag)."""
    return f"st{size >> 20}m-s{SEED}" if size % (1 << 20) == 0 else f"st{size}b-s{SEED}"


def stand_in_dir(cache: Path, size: int, log: Log) -> Path:
    """The stand-in model of ``size`` bytes of shards, written once under ``cache``."""
    root = cache / f"bench-model-{model_tag(size)}"
    model_dir = root / "model"
    marker = root / "built.json"
    if marker.exists():
        log(f"model: reusing {model_dir}")
        return model_dir
    started = time.monotonic()
    written = write_safetensors_model(model_dir, size, seed=SEED)
    marker.write_text(json.dumps({"shards": [p.name for p in written.shards]}))
    log(
        f"model: wrote {len(written.shards)} safetensors shard(s), {written.total_size} bytes, in "
        f"{time.monotonic() - started:.1f} s"
    )
    return model_dir


def prepare_model(cache: Path, size: int, registry_host: str, log: Log) -> BenchModel:
    """Write (or reuse) the stand-in model and push it to ``registry_host`` (plain HTTP)."""
    model_dir = stand_in_dir(cache, size, log)
    tag = model_tag(size)
    reference = f"{registry_host}/{REPOSITORY}:{tag}"

    async def push() -> BenchModel:
        options = ClientOptions(insecure=frozenset({registry_host}))
        async with RegistryClient(options) as client:
            result = await ModelPusher(client).push(
                model_dir, parse_reference(reference), ModelInfo(name="bench-model")
            )
        artifact = result.artifact
        assert artifact is not None
        blob_bytes = artifact.config_descriptor.size + sum(d.size for d in artifact.layers)
        log(
            f"model: pushed {result.pinned} ({result.files} files, {result.bytes_total} bytes) "
            f"in {result.seconds:.1f} s"
        )
        return BenchModel(reference, f"http://{reference}", REPOSITORY, blob_bytes, result.files)

    return asyncio.run(push())


def download_env(model: BenchModel) -> dict[str, str]:
    """What a replica without an agent is given to download the model itself at start."""
    return {"WARMSTART_MODEL_SOURCE": model.source, "SM_MODEL_DIR": DOWNLOAD_DIR}


@dataclass(frozen=True)
class AgentModel:
    """The model as the node's agent materialised it for one replica (and pinned it)."""

    path: str  # mount it read-only at /opt/ml/model
    seconds: float  # the request, as the replica's start waited for it
    answer: PrewarmResponse

    @property
    def materialise_s(self) -> float:
        return self.answer.model.seconds if self.answer.model is not None else 0.0


def agent_client(agent_url: str, token: str | None) -> AgentClient:
    # No time limit: a cold model of many GB takes as long as its transfer (as the controller).
    return AgentClient(agent_url, token=token, timeout=None)


async def agent_model(agent_url: str, token: str | None, model: BenchModel) -> AgentModel:
    """The product's path (what the controller asks when a replica starts): the model
    materialised and pinned on this node; the directory to mount."""
    started = time.monotonic()
    async with agent_client(agent_url, token) as agent:
        answer = await agent.prewarm(replica_model_request(model.reference, BENCH_ENDPOINT))
    return AgentModel(
        materialised_path(answer, model.reference), time.monotonic() - started, answer
    )


async def agent_unpin(agent_url: str, token: str | None, model: BenchModel) -> None:
    """Release the pin :func:`agent_model` took (the replica is gone)."""
    async with agent_client(agent_url, token) as agent:
        await agent.unpin(model.reference, holder=pin_holder(BENCH_ENDPOINT), time_limit=10.0)


__all__ = [
    "DOWNLOAD_DIR",
    "REPOSITORY",
    "AgentModel",
    "BenchModel",
    "agent_model",
    "agent_unpin",
    "download_env",
    "model_tag",
    "prepare_model",
    "stand_in_dir",
]
