"""Stand-in model weights in real safetensors layout, of a requested size, written as streams.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON (``{"name":
{"dtype", "shape", "data_offsets": [begin, end]}, ..., "__metadata__": {...}}``, offsets
relative to the byte buffer that follows; the JSON may be padded with trailing spaces), then
the tensors' bytes, contiguous. Here the tensors are BF16 and their bytes random (incompressible,
as real weights nearly are), written in pieces: no file is ever held in memory.

A model is sharded as the Hugging Face hub does it: ``model-00001-of-0000N.safetensors``
(each at most ``shard_size`` bytes), ``model.safetensors.index.json`` (``metadata.total_size``:
tensor bytes; ``weight_map``: tensor -> shard) and a ``config.json``. The shards' file sizes add
up to exactly the size asked for (headers included; the JSON's space padding makes them fit).
"""

from __future__ import annotations

import json
import os
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SHARD_SIZE = 2 << 30
DEFAULT_TENSOR_SIZE = 64 << 20
DTYPE = "BF16"
ITEM_SIZE = 2  # bytes per BF16 element
ROW = 2048  # elements per row when a tensor's size allows a 2-D shape
PIECE = 8 << 20
METADATA = {"format": "pt"}


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    begin: int  # offset in the shard's byte buffer
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class ShardPlan:
    """One shard: its header bytes (padded to fit) and its tensors, in file order."""

    header: bytes
    tensors: tuple[Tensor, ...]

    @property
    def file_size(self) -> int:
        return 8 + len(self.header) + sum(t.nbytes for t in self.tensors)


@dataclass
class StandInModel:
    """What :func:`write_safetensors_model` wrote."""

    directory: Path
    shards: list[Path] = field(default_factory=list)
    index: Path | None = None
    config: Path | None = None
    total_size: int = 0  # bytes of the shard files
    tensor_bytes: int = 0  # of them, tensor data


def shard_sizes(total: int, shard_size: int) -> list[int]:
    """``total`` bytes in as few shards of at most ``shard_size`` as fit, sizes near equal."""
    if total <= 0 or shard_size <= 0:
        raise ValueError("the total and shard sizes must be positive")
    count = -(-total // shard_size)
    base, extra = divmod(total, count)
    return [base + (1 if i < extra else 0) for i in range(count)]


def _shape(nbytes: int) -> tuple[int, ...]:
    elements = nbytes // ITEM_SIZE
    if elements >= ROW and elements % ROW == 0:
        return (elements // ROW, ROW)
    return (elements,)


def _tensors(data: int, first: int, tensor_size: int) -> list[Tensor]:
    step = max(tensor_size - tensor_size % ITEM_SIZE, ITEM_SIZE)
    out: list[Tensor] = []
    begin = 0
    while begin < data or not out:
        end = min(begin + step, data)
        out.append(
            Tensor(f"model.layers.{first + len(out)}.weight", _shape(end - begin), begin, end)
        )
        begin = end
    return out


def header_json(tensors: list[Tensor] | tuple[Tensor, ...]) -> bytes:
    doc: dict[str, object] = {"__metadata__": METADATA}
    for t in tensors:
        doc[t.name] = {"dtype": DTYPE, "shape": list(t.shape), "data_offsets": [t.begin, t.end]}
    return json.dumps(doc, separators=(",", ":")).encode()


def plan_shard(
    file_size: int, first_tensor: int, tensor_size: int = DEFAULT_TENSOR_SIZE
) -> ShardPlan:
    """The layout of a shard of exactly ``file_size`` bytes whose tensors are numbered from
    ``first_tensor``. Pure."""
    guess = 128
    while True:
        data = file_size - 8 - guess
        if data < 0:
            raise ValueError(f"a shard of {file_size} bytes cannot hold its own header")
        data -= data % ITEM_SIZE
        tensors = _tensors(data, first_tensor, tensor_size)
        header = header_json(tensors)
        room = file_size - 8 - data
        if len(header) <= room:
            return ShardPlan(header + b" " * (room - len(header)), tuple(tensors))
        guess = len(header) + ITEM_SIZE


def _random_source(seed: int | None) -> Callable[[int], bytes]:
    if seed is None:
        return os.urandom
    return random.Random(seed).randbytes


def write_shard(path: Path, plan: ShardPlan, random_bytes: Callable[[int], bytes]) -> None:
    """Write a planned shard: length, header, then the tensor bytes in pieces."""
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(plan.header)))
        f.write(plan.header)
        left = sum(t.nbytes for t in plan.tensors)
        while left > 0:
            n = min(PIECE, left)
            f.write(random_bytes(n))
            left -= n


def write_safetensors_model(
    dest: Path,
    total_size: int,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    tensor_size: int = DEFAULT_TENSOR_SIZE,
    seed: int | None = None,
) -> StandInModel:
    """Write a stand-in model of ``total_size`` bytes of shards into ``dest`` (created if
    needed): shards, the index and a config.json. ``seed`` makes the bytes reproducible."""
    dest.mkdir(parents=True, exist_ok=True)
    sizes = shard_sizes(total_size, shard_size)
    random_bytes = _random_source(seed)
    model = StandInModel(dest)
    weight_map: dict[str, str] = {}
    first = 0
    for i, size in enumerate(sizes, start=1):
        name = f"model-{i:05d}-of-{len(sizes):05d}.safetensors"
        plan = plan_shard(size, first, tensor_size)
        path = dest / name
        write_shard(path, plan, random_bytes)
        model.shards.append(path)
        model.total_size += plan.file_size
        for t in plan.tensors:
            weight_map[t.name] = name
            model.tensor_bytes += t.nbytes
        first += len(plan.tensors)
    model.index = dest / "model.safetensors.index.json"
    model.index.write_text(
        json.dumps(
            {"metadata": {"total_size": model.tensor_bytes}, "weight_map": weight_map}, indent=2
        )
        + "\n"
    )
    model.config = dest / "config.json"
    model.config.write_text(
        json.dumps(
            {
                "architectures": ["StandInForCausalLM"],
                "model_type": "warmstart-stand-in",
                "torch_dtype": "bfloat16",
                "num_hidden_layers": first,
            },
            indent=2,
        )
        + "\n"
    )
    return model


__all__ = [
    "DEFAULT_SHARD_SIZE",
    "ShardPlan",
    "StandInModel",
    "Tensor",
    "header_json",
    "plan_shard",
    "shard_sizes",
    "write_safetensors_model",
    "write_shard",
]
