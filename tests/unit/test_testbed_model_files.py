"""The stand-in safetensors model: the layout parsed back by an independent reader."""

from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path

import pytest

from warmstart_harness.testbed import model_files
from warmstart_harness.testbed.model_files import (
    plan_shard,
    shard_sizes,
    write_safetensors_model,
    write_shard,
)

DTYPE_SIZES = {"BF16": 2, "F16": 2, "F32": 4, "U8": 1}


def read_safetensors(path: Path) -> tuple[dict[str, dict], dict[str, str], int]:
    """(tensors, __metadata__, start of the byte buffer), checking what the format demands."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        raw = f.read(n)
    assert len(raw) == n
    assert raw[:1] == b"{"
    text = raw.decode("utf-8")
    header, end = json.JSONDecoder().raw_decode(text)
    assert text[end:].strip(" ") == "", "only spaces may pad the header"
    metadata = header.pop("__metadata__", {})
    assert all(isinstance(v, str) for v in metadata.values())
    buffer = path.stat().st_size - 8 - n
    position = 0
    for name, t in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, end = t["data_offsets"]
        assert begin == position, f"{name}: a hole or an overlap before it"
        assert (end - begin) == math.prod(t["shape"]) * DTYPE_SIZES[t["dtype"]], name
        position = end
    assert position == buffer, "tensors do not cover the byte buffer"
    return header, metadata, 8 + n


def test_sharded_model_layout(tmp_path: Path) -> None:
    total = 3 * (1 << 20) + 12_345
    model = write_safetensors_model(
        tmp_path / "m", total, shard_size=1 << 20, tensor_size=100_000, seed=7
    )
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert names == [
        "config.json",
        "model-00001-of-00004.safetensors",
        "model-00002-of-00004.safetensors",
        "model-00003-of-00004.safetensors",
        "model-00004-of-00004.safetensors",
        "model.safetensors.index.json",
    ]
    assert sum(p.stat().st_size for p in model.shards) == total == model.total_size
    assert all(p.stat().st_size <= 1 << 20 for p in model.shards)

    index = json.loads((tmp_path / "m" / "model.safetensors.index.json").read_text())
    seen: dict[str, str] = {}
    tensor_bytes = 0
    for shard in model.shards:
        tensors, metadata, start = read_safetensors(shard)
        assert metadata == {"format": "pt"}
        assert all(t["dtype"] == "BF16" for t in tensors.values())
        assert max(t["data_offsets"][1] - t["data_offsets"][0] for t in tensors.values()) <= 100_000
        for name, t in tensors.items():
            seen[name] = shard.name
            tensor_bytes += t["data_offsets"][1] - t["data_offsets"][0]
        data = shard.read_bytes()[start : start + 200_000]
        assert len(zlib.compress(data)) > 0.99 * len(data)  # incompressible
    assert index["weight_map"] == seen
    assert index["metadata"]["total_size"] == tensor_bytes == model.tensor_bytes
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16"
    assert config["num_hidden_layers"] == len(seen)


def test_a_seed_gives_the_same_bytes(tmp_path: Path) -> None:
    a = write_safetensors_model(tmp_path / "a", 300_000, seed=1)
    b = write_safetensors_model(tmp_path / "b", 300_000, seed=1)
    c = write_safetensors_model(tmp_path / "c", 300_000, seed=2)
    assert a.shards[0].read_bytes() == b.shards[0].read_bytes()
    assert a.shards[0].read_bytes() != c.shards[0].read_bytes()
    assert [p.name for p in a.shards] == ["model-00001-of-00001.safetensors"]


@pytest.mark.parametrize("size", [200, 201, 1000, 4097, 65_537, 1 << 20, (1 << 20) + 1])
def test_every_shard_is_exactly_its_size(size: int, tmp_path: Path) -> None:
    plan = plan_shard(size, 0, tensor_size=4096)
    assert plan.file_size == size
    path = tmp_path / "s.safetensors"
    write_shard(path, plan, bytes)  # zeros are enough for the layout
    assert path.stat().st_size == size
    read_safetensors(path)


def test_tensor_bytes_are_written_in_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_files, "PIECE", 10_000)
    asked: list[int] = []

    def random_bytes(n: int) -> bytes:
        asked.append(n)
        return bytes(n)

    write_shard(tmp_path / "s.safetensors", plan_shard(100_000, 0), random_bytes)
    assert max(asked) == 10_000 and sum(asked) > 99_000


def test_sizes_and_limits() -> None:
    assert shard_sizes(10, 4) == [4, 3, 3]
    assert shard_sizes(8, 4) == [4, 4]
    assert shard_sizes(3, 4) == [3]
    with pytest.raises(ValueError):
        shard_sizes(0, 4)
    with pytest.raises(ValueError, match="cannot hold its own header"):
        plan_shard(50, 0)
