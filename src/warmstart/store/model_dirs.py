"""Materialised models: read-only directories derived from a model's verified blobs.

A model is materialised once per manifest digest at ``models/sha256/<hex>/``: raw layers are
hard links to the store's blobs (one copy on disk), tar layers are extracted. A directory is
built under ``models/tmp/`` by whoever materialises it (``warmstart.model.materialise``), made
read-only, and renamed into place; only then is it recorded in the index. A crash at any point
leaves either no directory (the temp one is swept by :func:`clean_model_temp`) or a complete
one; a directory without its row (a crash between the rename and the row) is removed at start.

Accounting, so the budget counts every byte once: a blob's hard links from model directories
are not "shared" links (:meth:`ModelDirs.links`), and extracted bytes are added to the store's
usage. A model directory goes when no image record names its manifest and nobody pins it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from warmstart.oci import Digest
from warmstart.store.index import Index
from warmstart.store.layout import Layout, dir_entries
from warmstart.store.locks import Session, session_alive

log = logging.getLogger(__name__)

READ_ONLY_FILE = 0o444
READ_ONLY_DIR = 0o555


@dataclass(frozen=True)
class ModelDirStats:
    """What a build put into a model directory."""

    links: dict[Digest, int]  # blob -> hard links made to it
    extracted_bytes: int
    files: int


def make_read_only(root: Path) -> None:
    """Clear every write bit under ``root`` (files 0444, directories 0555), deepest first."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), READ_ONLY_FILE)
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), READ_ONLY_DIR)
    os.chmod(root, READ_ONLY_DIR)


def remove_tree(path: Path) -> None:
    """Delete a (read-only) model tree: directories made writable first. Files keep their mode:
    a raw file is the store's blob too, and unlinking a name needs no write bit on the file."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    for dirpath, _dirnames, _filenames in os.walk(path):
        with contextlib.suppress(OSError):
            os.chmod(dirpath, stat.S_IRWXU)
    shutil.rmtree(path, ignore_errors=True)


@dataclass(eq=False)
class ModelDirs:
    """The ``models/`` tree and its index rows."""

    index: Index
    layout: Layout
    session: Session
    clock: Callable[[], float] = time.time

    def path(self, manifest_digest: Digest) -> Path | None:
        """The materialised directory, if it is complete and recorded."""
        path = self.layout.model_dir(manifest_digest)
        if not path.is_dir():
            return None
        if not any(r.manifest_digest == manifest_digest for r in self.index.model_dirs()):
            return None
        return path

    def temp_path(self, manifest_digest: Digest) -> Path:
        path = self.layout.model_temp_path(manifest_digest, self.session.id)
        path.mkdir(parents=True)
        return path

    def commit(self, manifest_digest: Digest, built: Path, stats: ModelDirStats) -> Path:
        """Make ``built`` read-only and rename it into place; recorded once it is there. If
        another builder got there first, its directory stays and ``built`` is removed."""
        final = self.layout.model_dir(manifest_digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        make_read_only(built)
        try:
            os.rename(built, final)
        except OSError:
            if not final.is_dir():
                remove_tree(built)
                raise
            remove_tree(built)  # built twice at once: the first one stands
            if self.path(manifest_digest) is not None:
                return final
        with contextlib.suppress(OSError):
            fd = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self.index.add_model_dir(
            manifest_digest, stats.links, stats.extracted_bytes, stats.files, self.clock()
        )
        return final

    def link_reference(self, reference: str, manifest_digest: Digest) -> Path:
        """Point ``models/by-ref/<reference>`` at the model's directory (a relative symlink,
        replaced atomically): the stable per-reference path a pod's hostPath volume names."""
        link = self.layout.models_by_ref_dir / reference_path(reference)
        target = self.layout.model_dir(manifest_digest)
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.{os.urandom(4).hex()}.tmp")
        os.symlink(os.path.relpath(target, link.parent), tmp)
        try:
            os.replace(tmp, link)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        return link

    def links(self) -> dict[Digest, int]:
        return self.index.model_links()

    def extracted_usage(self) -> int:
        return self.index.extracted_usage()

    def orphans(self, protected: Iterable[Digest]) -> list[Digest]:
        """Recorded directories whose manifest no image record names and nobody protects."""
        named = {row.manifest_digest for row in self.index.images()}
        keep = named | set(protected)
        return [r.manifest_digest for r in self.index.model_dirs() if r.manifest_digest not in keep]

    def drop(self, manifest_digests: Iterable[Digest]) -> int:
        """Forget and delete these directories (the rows first, so no one is handed a path
        that is going away)."""
        doomed = list(manifest_digests)
        if not doomed:
            return 0
        self.index.remove_model_dirs(doomed)
        for digest in doomed:
            final = self.layout.model_dir(digest)
            if not final.exists():
                continue
            trash = self.layout.model_temp_path(digest, "gone")
            try:
                os.rename(final, trash)
            except OSError:
                trash = final
            remove_tree(trash)
        self._unlink_references({self.layout.model_dir(d) for d in doomed})
        return len(doomed)

    def _unlink_references(self, targets: set[Path]) -> None:
        root = self.layout.models_by_ref_dir
        if not root.is_dir():
            return
        for dirpath, _dirnames, filenames in os.walk(root):
            for name in filenames:
                link = Path(dirpath) / name
                if not link.is_symlink():
                    continue
                with contextlib.suppress(OSError):
                    if (link.parent / os.readlink(link)).resolve() in targets:
                        link.unlink()

    def recover(self) -> int:
        """At start: sweep temp directories of dead stores, directories without a row and rows
        without a directory. Returns what was removed."""
        removed = clean_model_temp(self.layout, self.session.id)
        rows = {r.manifest_digest for r in self.index.model_dirs()}
        algo_root = self.layout.models_root / "sha256"
        on_disk: set[Digest] = set()
        if algo_root.is_dir():
            for entry in os.scandir(algo_root):
                try:
                    digest = Digest.parse(f"sha256:{entry.name}")
                except ValueError:
                    continue
                if digest in rows:
                    on_disk.add(digest)
                    continue
                remove_tree(Path(entry.path))
                removed += 1
        gone = rows - on_disk
        if gone:
            self.index.remove_model_dirs(gone)
            removed += len(gone)
        return removed


def reference_path(reference: str) -> str:
    """``registry/repo:tag`` -> the same text as a relative path below ``models/by-ref`` (the
    registry and each repository component a directory; ``:tag`` / ``@digest`` stay in the last
    name, so no reference's link is another's directory). Refuses what is not a clean path."""
    parts = reference.split("/")
    if not reference or any(p in ("", ".", "..") for p in parts) or "\x00" in reference:
        raise ValueError(f"{reference!r} cannot name a model path")
    return reference


def clean_model_temp(layout: Layout, own_session: str) -> int:
    """Remove model directories that a store which is no longer running was building."""
    removed = 0
    for entry in dir_entries(layout.models_temp_dir):
        parts = entry.name.split(".")
        session = parts[1] if len(parts) == 3 else ""
        if session == own_session:
            continue
        if session and session != "gone" and session_alive(layout.sessions_dir, session):
            continue
        remove_tree(Path(entry.path))
        removed += 1
    return removed


__all__ = [
    "READ_ONLY_DIR",
    "READ_ONLY_FILE",
    "ModelDirStats",
    "ModelDirs",
    "clean_model_temp",
    "make_read_only",
    "reference_path",
    "remove_tree",
]
