"""Write OCI image layouts directly (no umoci), for large benchmark images.

A layer here is an uncompressed tar (``application/vnd.oci.image.layer.v1.tar``) holding files
of seeded random, incompressible bytes, streamed to disk while hashed: a 1 GiB layer needs no
1 GiB buffer and no gzip pass. ``skopeo copy oci:DIR:TAG docker://...`` pushes the result.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from warmstart.image.push import push_layout as push_layout  # re-exported for the harness
from warmstart.oci import Digest
from warmstart.oci import mediatypes as mt

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

_CHUNK = 1 << 20


class _HashingWriter(io.RawIOBase):
    """A write-only file object that hashes and counts what passes through to ``raw`` (which
    it does not close)."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        self.hash.update(data)
        self.size += memoryview(data).nbytes
        return self._raw.write(data)


class _RandomReader:
    """A read-only file object of ``size`` seeded random bytes."""

    def __init__(self, size: int, seed: int) -> None:
        self._left = size
        self._rng = random.Random(seed)

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._left:
            n = self._left
        self._left -= n
        return self._rng.randbytes(n)


@dataclass(frozen=True)
class LayerSpec:
    """One layer: files of random bytes, ``(path in the image, size)``, and files copied from
    this machine, ``(path in the image, path here)`` (mode kept; e.g. a binary to run)."""

    files: tuple[tuple[str, int], ...]
    seed: int = 0
    host_files: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class LayoutImage:
    layout: Path
    tag: str
    manifest_digest: Digest
    config_digest: Digest
    layer_digests: tuple[Digest, ...]
    layer_sizes: tuple[int, ...]
    config_size: int
    manifest_size: int

    @property
    def total_size(self) -> int:
        return sum(self.layer_sizes) + self.config_size + self.manifest_size


def _blob_path(layout: Path, digest: Digest) -> Path:
    return layout / "blobs" / digest.algorithm / digest.hex


def _put_bytes(layout: Path, data: bytes) -> Digest:
    digest = Digest.of(data)
    path = _blob_path(layout, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def _write_layer(layout: Path, spec: LayerSpec) -> tuple[Digest, int, str]:
    tmp = layout / "blobs" / "sha256" / f".tmp-{os.getpid()}-{spec.seed}"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as raw:
        writer = _HashingWriter(raw)
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for index, (name, size) in enumerate(spec.files):
                info = tarfile.TarInfo(name.lstrip("/"))
                info.size = size
                info.mode = 0o644
                info.mtime = 0
                tar.addfile(info, _RandomReader(size, spec.seed * 1000 + index))
            for name, source in spec.host_files:
                st = os.stat(source)
                info = tarfile.TarInfo(name.lstrip("/"))
                info.size = st.st_size
                info.mode = st.st_mode & 0o7777
                info.mtime = 0
                with open(source, "rb") as f:
                    tar.addfile(info, f)
    digest = Digest("sha256", writer.hash.hexdigest())
    tmp.rename(_blob_path(layout, digest))
    return digest, writer.size, digest.hex


def write_image(
    layout: Path,
    tag: str,
    layers: Sequence[LayerSpec],
    *,
    architecture: str = "amd64",
    entrypoint: Sequence[str] = ("/bin/true",),
    env: Sequence[str] = (),
) -> LayoutImage:
    """Write (or add to) an OCI layout at ``layout`` with one image tagged ``tag``."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    written = [_write_layer(layout, spec) for spec in layers]
    diff_ids = [f"sha256:{h}" for _, _, h in written]  # uncompressed: diff id == digest
    config = {
        "created": "1970-01-01T00:00:00Z",
        "architecture": architecture,
        "os": "linux",
        "config": {"Entrypoint": list(entrypoint), "Env": list(env)},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": "1970-01-01T00:00:00Z", "created_by": "warmstart testbed"} for _ in written
        ],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_digest = _put_bytes(layout, config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {
            "mediaType": mt.OCI_CONFIG,
            "digest": str(config_digest),
            "size": len(config_bytes),
        },
        "layers": [
            {"mediaType": mt.OCI_LAYER, "digest": str(d), "size": size} for d, size, _ in written
        ],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    manifest_digest = _put_bytes(layout, manifest_bytes)
    index_path = layout / "index.json"
    index: dict[str, Any] = (
        json.loads(index_path.read_text())
        if index_path.exists()
        else {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
    )
    index["manifests"] = [
        m
        for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag
    ] + [
        {
            "mediaType": mt.OCI_MANIFEST,
            "digest": str(manifest_digest),
            "size": len(manifest_bytes),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }
    ]
    index_path.write_text(json.dumps(index))
    return LayoutImage(
        layout,
        tag,
        manifest_digest,
        config_digest,
        tuple(d for d, _, _ in written),
        tuple(s for _, s, _ in written),
        len(config_bytes),
        len(manifest_bytes),
    )
