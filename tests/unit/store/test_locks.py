from __future__ import annotations

import asyncio
import os
from pathlib import Path

from warmstart.store.locks import FileLock, Session, is_locked, session_alive


def test_lock_excludes_a_second_holder_in_the_same_process(tmp_path: Path) -> None:
    a = FileLock(tmp_path / "x.lock")
    b = FileLock(tmp_path / "x.lock")
    assert a.try_acquire()
    assert not b.try_acquire()
    assert is_locked(a.path)
    a.release()
    assert not is_locked(a.path)
    assert b.try_acquire()
    b.release()


def test_unlinking_holder_hands_over_safely(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    a = FileLock(path)
    assert a.try_acquire()
    # b opened the old file before a removed it: after a's release it must not "hold" a lock
    # on the removed file while c holds the new one.
    old_fd = os.open(path, os.O_RDWR)
    a.release(unlink=True)
    assert not path.exists()
    c = FileLock(path)
    assert c.try_acquire()
    b = FileLock(path)
    assert not b.try_acquire()
    os.close(old_fd)
    c.release(unlink=True)
    assert b.try_acquire()
    b.release()


def test_probe_does_not_create_the_file(tmp_path: Path) -> None:
    assert not is_locked(tmp_path / "none.lock")
    assert not (tmp_path / "none.lock").exists()


async def test_async_acquire_waits_without_blocking(tmp_path: Path) -> None:
    a = FileLock(tmp_path / "x.lock")
    b = FileLock(tmp_path / "x.lock")
    assert a.try_acquire()
    waiter = asyncio.create_task(b.acquire())
    await asyncio.sleep(0.02)
    assert not waiter.done()
    a.release()
    await asyncio.wait_for(waiter, 1)
    assert b.held
    b.release()


def test_session_liveness(tmp_path: Path) -> None:
    s = Session.start(tmp_path)
    assert session_alive(tmp_path, s.id)
    assert not session_alive(tmp_path, "1-nonexistent")
    s.close()
    assert not session_alive(tmp_path, s.id)
    assert os.listdir(tmp_path) == []
