"""ModelPusher on a MemoryTransport: a directory in, a ModelPack artifact in the fake registry."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from tests.unit.registry.fakes import FakeRegistry, Net
from warmstart.model_dir import LocalFile
from warmstart.model_push import ModelPusher, hash_file
from warmstart.oci import Digest, InvalidReference, Reference, parse_reference
from warmstart.oci import mediatypes as mt
from warmstart.oci.modelpack import ANNOTATION_FILEPATH, ARTIFACT_TYPE, ModelInfo
from warmstart.registry import ClientOptions, RegistryClient
from warmstart.registry.transport import MemoryTransport

WEIGHTS = os.urandom(50_000)


class Recorder:
    def __init__(self) -> None:
        self.files: list[str] = []
        self.hashed_bytes: dict[str, int] = {}
        self.positions: dict[str, list[int]] = {}
        self.existed: dict[str, bool] = {}

    def started(self, ref: Reference, files: Sequence[LocalFile]) -> None:
        self.files = [f.path for f in files]

    def hashed(self, file: LocalFile, nbytes: int) -> None:
        self.hashed_bytes[file.path] = self.hashed_bytes.get(file.path, 0) + nbytes

    def pushing(self, file: LocalFile, position: int) -> None:
        self.positions.setdefault(file.path, []).append(position)

    def finished(self, file: LocalFile, existed: bool) -> None:
        self.existed[file.path] = existed


def make_model(root: Path) -> Path:
    (root / "tokenizer").mkdir(parents=True)
    (root / "model.safetensors").write_bytes(WEIGHTS)
    (root / "config.json").write_text('{"model_type": "tiny"}')
    (root / "tokenizer" / "tokenizer.json").write_text('{"version": "1.0"}')
    (root / "README.md").write_text("# tiny\n")
    (root / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    return root


@pytest.fixture
def fake() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
async def client(fake: FakeRegistry) -> AsyncIterator[tuple[RegistryClient, str]]:
    net = Net()
    host = f"127.0.0.1:{net.serve(fake.app()).port}"
    options = ClientOptions(
        insecure=frozenset({host}), push_chunk_size=16_384, backoff_base=0.001, backoff_max=0.01
    )
    c = RegistryClient(options, transport=MemoryTransport(net.handle))
    try:
        yield c, host
    finally:
        await c.close()


def writes(fake: FakeRegistry) -> list[str]:
    return [s.method for s in fake.requests if s.method in ("POST", "PATCH")]


async def test_push_a_directory_then_again(
    client: tuple[RegistryClient, str], fake: FakeRegistry, tmp_path: Path
) -> None:
    c, host = client
    root = make_model(tmp_path / "tiny")
    ref = parse_reference(f"{host}/models/tiny:v1")
    progress = Recorder()
    first = await ModelPusher(c, progress=progress).push(root, ref)

    body, media_type = fake.manifests[("models/tiny", "v1")]
    assert media_type == mt.OCI_MANIFEST
    assert first.digest == Digest.of(body)
    assert first.pinned == f"{host}/models/tiny:v1@{first.digest}"
    doc = json.loads(body)
    assert doc["artifactType"] == ARTIFACT_TYPE
    paths = [layer["annotations"][ANNOTATION_FILEPATH] for layer in doc["layers"]]
    assert paths == ["README.md", "config.json", "model.safetensors", "tokenizer/tokenizer.json"]
    for layer, path in zip(doc["layers"], paths, strict=True):
        assert fake.blobs[layer["digest"]] == (root / path).read_bytes()
    config = json.loads(fake.blobs[doc["config"]["digest"]])
    assert config["descriptor"] == {"name": "tiny"}
    assert config["config"] == {"format": "safetensors"}

    total = sum((root / p).stat().st_size for p in paths)
    assert (first.files, first.bytes_total, first.bytes_uploaded) == (4, total, total)
    assert first.bytes_skipped == 0
    assert first.hidden == [".gitattributes"]
    assert progress.files == paths
    assert progress.hashed_bytes == {p: (root / p).stat().st_size for p in paths}
    assert progress.positions["model.safetensors"][-1] == len(WEIGHTS)
    assert progress.existed == dict.fromkeys(paths, False)
    # 50,000 bytes in 16 KiB chunks: 4 PATCHes; one for each small file and the config
    assert writes(fake).count("PATCH") == 4 + 3 + 1

    fake.requests.clear()
    again = await ModelPusher(c, progress=Recorder()).push(root, ref)
    assert again.digest == first.digest
    assert (again.bytes_uploaded, again.bytes_skipped, again.bytes_sent) == (0, total, 0)
    assert writes(fake) == []  # HEADs and the manifest PUT only


async def test_same_files_same_digest(
    client: tuple[RegistryClient, str], fake: FakeRegistry, tmp_path: Path
) -> None:
    c, host = client
    a = make_model(tmp_path / "a" / "tiny")
    b = make_model(tmp_path / "b" / "tiny")
    (b / "model.safetensors").write_bytes(WEIGHTS)  # same bytes, written again
    pusher = ModelPusher(c)
    one = await pusher.push(a, parse_reference(f"{host}/models/tiny:a"))
    two = await pusher.push(b, parse_reference(f"{host}/models/tiny:b"))
    assert one.digest == two.digest
    named = await pusher.push(a, parse_reference(f"{host}/models/tiny:n"), ModelInfo(name="x"))
    assert named.digest != one.digest


async def test_identical_files_are_pushed_once(
    client: tuple[RegistryClient, str], fake: FakeRegistry, tmp_path: Path
) -> None:
    c, host = client
    root = tmp_path / "dup"
    (root / "sub").mkdir(parents=True)
    (root / "a.bin").write_bytes(WEIGHTS)
    (root / "sub" / "b.bin").write_bytes(WEIGHTS)
    result = await ModelPusher(c, concurrency=2).push(root, parse_reference(f"{host}/m/dup:1"))
    assert writes(fake).count("POST") == 2  # one weight blob, the config
    assert (result.bytes_uploaded, result.bytes_skipped) == (len(WEIGHTS), len(WEIGHTS))
    doc = json.loads(fake.manifests[("m/dup", "1")][0])
    assert [layer["digest"] for layer in doc["layers"]] == [str(Digest.of(WEIGHTS))] * 2


async def test_a_digest_reference_is_refused(
    client: tuple[RegistryClient, str], tmp_path: Path
) -> None:
    c, host = client
    root = make_model(tmp_path / "tiny")
    ref = parse_reference(f"{host}/m/tiny@{Digest.of(b'x')}")
    with pytest.raises(InvalidReference, match="push to a tag"):
        await ModelPusher(c).push(root, ref)


def test_hash_file_reports_blocks(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(WEIGHTS)
    seen: list[int] = []
    assert hash_file(path, seen.append) == (Digest.of(WEIGHTS), len(WEIGHTS))
    assert sum(seen) == len(WEIGHTS)
