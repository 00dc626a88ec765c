"""Extracting an untrusted tar layer (plain, gzip or zstd) into a model directory, streaming.

Every member passes :func:`warmstart.oci.model.check_tar_member`: regular files and directories
only, no absolute paths, no ``..``, no links, devices or FIFOs. Files are created with
``O_EXCL`` below a directory this process made (no symlink is ever created, so nothing can
point out of it). A member whose name another layer already wrote is refused, except in a
modelcar, whose layers overlay one another as they would in a container's root filesystem.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

import zstandard

from warmstart.model.tree import ensure_parent, remove_path
from warmstart.oci.model import InvalidModel, LayerKind, MemberType, check_tar_member

CHUNK = 1 << 20


@dataclass(frozen=True)
class Extracted:
    files: int
    bytes: int


def _member_type(member: tarfile.TarInfo) -> MemberType:
    if member.isreg():
        return MemberType.FILE
    if member.isdir():
        return MemberType.DIR
    if member.issym():
        return MemberType.SYMLINK
    if member.islnk():
        return MemberType.HARDLINK
    if member.ischr() or member.isblk():
        return MemberType.DEVICE
    if member.isfifo():
        return MemberType.FIFO
    return MemberType.OTHER


@contextlib.contextmanager
def open_layer(path: Path, kind: LayerKind) -> Iterator[BinaryIO | gzip.GzipFile]:
    """The layer's tar stream, decompressed while it is read."""
    with open(path, "rb") as raw:
        if kind is LayerKind.TAR:
            yield raw
        elif kind is LayerKind.TAR_GZIP:
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                yield gz
        elif kind is LayerKind.TAR_ZSTD:
            with zstandard.ZstdDecompressor().stream_reader(raw) as zs:
                yield zs
        else:
            raise ValueError(f"{kind} is not a tar layer")


def extract_layer(
    blob: Path,
    kind: LayerKind,
    root: Path,
    *,
    base: str = "",
    strip: str = "",
    overlay: bool = False,
    where: str = "tar layer",
) -> Extracted:
    """Extract ``blob`` below ``root/base``; raises :class:`InvalidModel` for a hostile or
    broken layer (the caller throws the half-built directory away)."""
    files = written = 0
    target_root = root / base if base else root
    try:
        with open_layer(blob, kind) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                action = check_tar_member(member.name, _member_type(member), strip, where)
                if action is None:
                    continue
                dest = target_root / action.path
                if action.whiteout:
                    if not overlay:
                        raise InvalidModel(f"{where} member {member.name[:80]!r} is a whiteout")
                    remove_path(root, dest)
                    continue
                ensure_parent(root, dest, where)
                if action.kind is MemberType.DIR:
                    if dest.exists() and not dest.is_dir():
                        if not overlay:
                            raise InvalidModel(
                                f"{where}: {action.path!r} is a file and a directory"
                            )
                        remove_path(root, dest)
                    dest.mkdir(exist_ok=True)
                    continue
                if dest.exists() or dest.is_symlink():
                    if not overlay:
                        raise InvalidModel(
                            f"two layers (or members) write the file {action.path!r}"
                        )
                    remove_path(root, dest)
                source = tar.extractfile(member)
                if source is None:
                    raise InvalidModel(f"{where} member {action.path!r} has no data")
                written += _copy(source, dest, member.size, where)
                files += 1
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error, zstandard.ZstdError) as e:
        raise InvalidModel(f"{where} is not a readable tar archive: {e}") from None
    return Extracted(files, written)


def _copy(source: IO[bytes], dest: Path, size: int, where: str) -> int:
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    copied = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(CHUNK):
            out.write(chunk)
            copied += len(chunk)
    if copied != size:
        raise InvalidModel(f"{where}: {dest.name!r} ended after {copied} of {size} bytes")
    return copied


__all__ = ["Extracted", "extract_layer", "open_layer"]
