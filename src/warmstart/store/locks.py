"""Cross-process file locks (``flock``) that never block the event loop.

Protocol (safe even though lock files are deleted): a holder may unlink its lock file before
releasing it; whoever acquires a lock then checks that the path still names the inode it locked
and starts over if not. So at most one process holds "the" lock of a path at any time.
``flock`` locks belong to an open file description, so two opens in one process exclude each
other too, and a killed process releases its locks.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path

from warmstart.backoff import Backoff

FIRST_POLL = 0.001  # seconds before looking again at a lock another holds; doubling from here
_MAX_POLL = 0.02


def same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` names the file open as ``fd`` (False if nothing is there)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fst = os.fstat(fd)
    return (st.st_ino, st.st_dev) == (fst.st_ino, fst.st_dev)


@dataclass
class FileLock:
    """An exclusive lock on ``path`` (created on demand)."""

    path: Path
    _fd: int | None = field(default=None, repr=False)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; never waits."""
        if self._fd is not None:
            raise RuntimeError(f"lock {self.path} is already held by this object")
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
            if same_file(fd, self.path):
                self._fd = fd
                return True
            os.close(fd)  # the previous holder removed the file: lock the new one

    async def acquire(self) -> None:
        """Wait (with short async sleeps, never blocking the loop) until the lock is ours.
        Bound the wait with ``asyncio.timeout``."""
        for delay in Backoff(FIRST_POLL, _MAX_POLL).delays():
            if self.try_acquire():
                return
            await asyncio.sleep(delay)

    def release(self, *, unlink: bool = False) -> None:
        """Release the lock; with ``unlink`` remove the lock file first (holder only)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if unlink:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        os.close(fd)

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_locked(path: Path) -> bool:
    """Does some process (or another open file in this one) hold the lock of ``path``?

    A probe only: it never creates the file, and holds a shared lock for an instant at most.
    """
    while True:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            if same_file(fd, path):
                return False
        finally:
            os.close(fd)


@dataclass
class Session:
    """Liveness token of one open store: a lock file held until ``close``.

    Rows that must die with their process (pins, in-flight reservations) name the session; a
    session whose lock is free belongs to a dead (or closed) store. Unlike a PID this survives
    PID reuse and PID namespaces.
    """

    id: str
    path: Path
    _fd: int | None = field(default=None, repr=False)

    @classmethod
    def start(cls, sessions_dir: Path) -> Session:
        sessions_dir.mkdir(parents=True, exist_ok=True)
        sid = f"{os.getpid()}-{os.urandom(8).hex()}"
        tmp = sessions_dir / f".{sid}.tmp"
        final = sessions_dir / f"{sid}.lock"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(tmp, final)  # appears under its final name only once locked
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        return cls(sid, final, fd)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(fd)


def session_alive(sessions_dir: Path, session_id: str) -> bool:
    return is_locked(sessions_dir / f"{session_id}.lock")
