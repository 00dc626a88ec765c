"""Read every byte under the model directory, as loading safetensors shards does."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LoadReport:
    files: int
    bytes: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        return (
            f"read {self.files} files, {self.bytes} bytes in {self.seconds:.2f} s "
            f"({self.mb_per_s:.0f} MB/s)"
        )

    def as_dict(self) -> dict[str, float | int]:
        return {"files": self.files, "bytes": self.bytes, "seconds": round(self.seconds, 4)}


def model_files(model_dir: Path) -> list[Path]:
    """Every regular file under ``model_dir``, sorted (symlinks to files count once each)."""
    return sorted(p for p in model_dir.rglob("*") if p.is_file())


def read_all(model_dir: Path, *, chunk: int = 8 << 20) -> LoadReport:
    """Read every file under ``model_dir`` to the end; raise if the directory is missing."""
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    start = time.monotonic()
    total = 0
    files = model_files(model_dir)
    buf = bytearray(chunk)
    view = memoryview(buf)
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while True:
                n = f.readinto(view)
                if not n:
                    break
                total += n
    return LoadReport(len(files), total, time.monotonic() - start)
