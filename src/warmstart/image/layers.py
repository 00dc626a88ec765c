"""What both image builds share: the cache directory they keep between builds, a layer's
record, and the helpers that make a layer reproducible (one mtime) and measure it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Keeps the debootstrap rootfs, the wheels and the OCI layout between builds. The one default:
# the CLI's `image build-example` and `bench scaleout`, the harness's bench
# scaleout and demo import it.
# $WARMSTART_IMAGE_CACHE overrides it everywhere.
DEFAULT_IMAGE_CACHE = Path("/var/cache/warmstart/example-image")


@dataclass(frozen=True)
class LayerInfo:
    name: str
    content: str
    digest: str
    size: int  # compressed, as pushed
    unpacked: int


def tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def normalize_mtimes(root: Path, epoch: int = 0) -> None:
    """Give every path under ``root`` (and ``root``) one mtime, so that rebuilding unchanged
    content gives byte-identical layers (same digests: registries and node caches dedupe)."""
    for path in [root, *root.rglob("*")]:
        os.utime(path, (epoch, epoch), follow_symlinks=False)
