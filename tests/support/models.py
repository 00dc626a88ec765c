"""Model artifacts for tests: manifests in each published shape and hostile tar layers."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from dataclasses import dataclass

import zstandard

from warmstart.oci import Digest
from warmstart.oci import mediatypes as mt
from warmstart.oci.model import MODELPACK_ARTIFACT, MODELPACK_CONFIG, TITLE_ANNOTATION

FILEPATH = "org.cncf.model.filepath"
WEIGHT_RAW = "application/vnd.cncf.model.weight.v1.raw"
WEIGHT_CONFIG_RAW = "application/vnd.cncf.model.weight.config.v1.raw"
WEIGHT_TAR = "application/vnd.cncf.model.weight.v1.tar"
WEIGHT_TAR_GZIP = "application/vnd.cncf.model.weight.v1.tar+gzip"
WEIGHT_TAR_ZSTD = "application/vnd.cncf.model.weight.v1.tar+zstd"


@dataclass(frozen=True)
class Blob:
    data: bytes
    media_type: str
    annotations: dict[str, str]

    @property
    def digest(self) -> Digest:
        return Digest.of(self.data)

    def descriptor(self) -> dict[str, object]:
        d: dict[str, object] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": len(self.data),
        }
        if self.annotations:
            d["annotations"] = self.annotations
        return d


def raw_file(path: str, data: bytes, media_type: str = WEIGHT_RAW) -> Blob:
    return Blob(data, media_type, {FILEPATH: path, TITLE_ANNOTATION: path})


def titled(path: str, data: bytes, media_type: str = "application/octet-stream") -> Blob:
    return Blob(data, media_type, {TITLE_ANNOTATION: path})


@dataclass(frozen=True)
class Member:
    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""


def tar_bytes(members: list[Member], compression: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type = m.type
            info.linkname = m.linkname
            info.mode = 0o755 if m.type == tarfile.DIRTYPE else 0o644
            if m.type == tarfile.REGTYPE:
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
            else:
                tar.addfile(info)
    data = buf.getvalue()
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def config_blob(media_type: str = MODELPACK_CONFIG) -> Blob:
    body = {"descriptor": {"name": "test-model"}, "modelfs": {"type": "layers", "diffIds": []}}
    return Blob(json.dumps(body, sort_keys=True).encode(), media_type, {})


def manifest_bytes(
    config: Blob, layers: list[Blob], artifact_type: str | None = MODELPACK_ARTIFACT
) -> bytes:
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [b.descriptor() for b in layers],
    }
    if artifact_type:
        doc["artifactType"] = artifact_type
    return json.dumps(doc, sort_keys=True).encode()


__all__ = [
    "FILEPATH",
    "WEIGHT_CONFIG_RAW",
    "WEIGHT_RAW",
    "WEIGHT_TAR",
    "WEIGHT_TAR_GZIP",
    "WEIGHT_TAR_ZSTD",
    "Blob",
    "Member",
    "config_blob",
    "manifest_bytes",
    "raw_file",
    "tar_bytes",
    "titled",
]
