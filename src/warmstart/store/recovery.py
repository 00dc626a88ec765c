"""Bringing a store back to a consistent state after a crash, and sweeping leftovers.

Safe to run while other processes use the store: anything another process may be working on is
protected by a lock that is held (per-digest lock, session lock), and is left alone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass

from warmstart.oci import Digest
from warmstart.store.index import Index
from warmstart.store.layout import (
    LOCK_SUFFIX,
    Layout,
    dir_entries,
    parse_lock_name,
    parse_partial_name,
    parse_put_name,
)
from warmstart.store.locks import FileLock, is_locked

PUT_TEMP_MAX_AGE = 3600.0  # a put_bytes temp file this old is abandoned whatever its PID
# A dead writer's partial blob last written this recently is kept: the next fetch of its
# digest re-hashes it and asks the source only for the rest (see ContentStore._write).
PARTIAL_MAX_AGE = 3600.0
SESSION_TEMP_MAX_AGE = 60.0


@dataclass(frozen=True)
class Reconciled:
    rows_dropped: int = 0
    rows_added: int = 0
    bad_files_removed: int = 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unlink(path: os.PathLike[str] | str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def partial_worth_keeping(
    layout: Layout, digest: Digest, size: int, mtime: float, now: float
) -> bool:
    """A dead writer's partial: keep it for a resume if it has bytes, was written recently and
    its blob is not complete already."""
    return size > 0 and now - mtime <= PARTIAL_MAX_AGE and not layout.blob_path(digest).exists()


def clean_ingest(layout: Layout, now: float) -> int:
    """Remove temp files no live writer owns, except recent partial blobs (kept for a resume:
    :func:`partial_worth_keeping`); returns how many were removed."""
    removed = 0
    for entry in dir_entries(layout.ingest_dir):
        digest = parse_partial_name(entry.name)
        if digest is not None:
            lock = FileLock(layout.lock_path(digest))
            if lock.try_acquire():  # the writer is gone (a live one holds this lock)
                try:
                    try:
                        st = entry.stat()
                    except FileNotFoundError:
                        continue
                    if not partial_worth_keeping(layout, digest, st.st_size, st.st_mtime, now):
                        removed += _unlink(entry.path)
                finally:
                    lock.release(unlink=True)
            continue
        pid = parse_put_name(entry.name)
        if pid is not None:
            if pid == os.getpid():
                continue
            with contextlib.suppress(FileNotFoundError):
                age = now - entry.stat().st_mtime
                if not _pid_alive(pid) or age > PUT_TEMP_MAX_AGE:
                    removed += _unlink(entry.path)
    return removed


def clean_locks(layout: Layout) -> None:
    """Remove lock files nobody holds (the lock protocol makes this safe)."""
    for entry in dir_entries(layout.locks_dir):
        if parse_lock_name(entry.name) is None:
            continue
        lock = FileLock(layout.locks_dir / entry.name)
        if lock.try_acquire():
            lock.release(unlink=True)


def clean_sessions(layout: Layout, own: str, now: float) -> None:
    """Remove session files of stores that are closed or dead."""
    for entry in dir_entries(layout.sessions_dir):
        path = layout.sessions_dir / entry.name
        if entry.name == f"{own}{LOCK_SUFFIX}":
            continue
        if entry.name.endswith(".tmp"):  # ".<pid>-<random>.tmp": a store starting up
            pid_text = entry.name[1:].split("-", 1)[0]
            with contextlib.suppress(FileNotFoundError):
                dead = pid_text.isdigit() and not _pid_alive(int(pid_text))
                old = now - entry.stat().st_mtime > SESSION_TEMP_MAX_AGE
                if (dead or old) and not is_locked(path):
                    _unlink(path)
            continue
        if entry.name.endswith(LOCK_SUFFIX) and not is_locked(path):
            _unlink(path)


def dead_sessions(index: Index, alive: Callable[[str], bool]) -> set[str]:
    return {s for s in index.sessions() if not alive(s)}


def reconcile(layout: Layout, index: Index, now: float) -> Reconciled:
    """Make the index's blob rows match the files under ``blobs/``.

    Rows of missing files are dropped; files without a row are added after a size check against
    what images recorded (a full hash is ``verify``'s job); files whose size contradicts the
    index are removed. A digest whose lock is held (being written or deleted) is skipped.
    """
    rows = index.blob_sizes()
    expected: dict[Digest, int] = {}
    for blobs in index.image_blobs().values():
        for b in blobs:
            expected.setdefault(b.digest, b.size)
    seen: set[Digest] = set()
    bad = added = 0
    for digest, path in layout.iter_blob_files():
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue
        seen.add(digest)
        want = rows.get(digest, expected.get(digest))
        if want is not None and want != size:
            lock = FileLock(layout.lock_path(digest))
            if lock.try_acquire():
                try:
                    index.remove_blobs([digest])
                    bad += _unlink(path)
                finally:
                    lock.release(unlink=True)
            continue
        if digest not in rows:
            lock = FileLock(layout.lock_path(digest))
            if lock.try_acquire():
                try:
                    if path.exists():
                        index.add_blob(digest, size, None, now)
                        added += 1
                finally:
                    lock.release(unlink=True)
    missing = [d for d in rows if d not in seen and not layout.blob_path(d).exists()]
    if missing:
        index.remove_blobs(missing)
    return Reconciled(len(missing), added, bad)
