from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from tests.unit.store.helpers import MemorySource, MiB, blob
from warmstart.store import ContentStore, StoreError, blobs
from warmstart.store.blobs import BlobWriter, hash_file, write_file_atomic


@pytest.mark.parametrize("threaded", [True, False])
@pytest.mark.parametrize("chunk", [1, 1000, 100_000, MiB, 3 * MiB])
async def test_writer_hashes_and_writes(tmp_path: Path, threaded: bool, chunk: int) -> None:
    data, digest = blob(4 * MiB + 7 if chunk > 1 else 5000)
    seen: list[int] = []
    w = BlobWriter(tmp_path / "p", hashlib.sha256(), on_written=seen.append, threaded=threaded)
    for i in range(0, len(data), chunk):
        await w.write(data[i : i + chunk])
    assert w.accepted == len(data)
    assert await w.finish() == digest.hex
    assert (tmp_path / "p").read_bytes() == data
    assert w.written == len(data)
    assert seen == sorted(seen) and seen[-1] == len(data)


async def test_abort_removes_the_file(tmp_path: Path) -> None:
    w = BlobWriter(tmp_path / "p", hashlib.sha256())
    await w.write(b"x" * MiB)
    w.abort()
    w.abort()
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("threaded", [True, False])
async def test_write_error_surfaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threaded: bool
) -> None:
    def no_space(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(blobs, "write_all", no_space)
    w = BlobWriter(tmp_path / "p", hashlib.sha256(), threaded=threaded)
    with pytest.raises(OSError, match="No space"):
        for _ in range(20):
            await w.write(b"x" * MiB)
        await w.finish()
    w.abort()
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("threaded", [True, False])
async def test_nothing_is_written_after_a_failed_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threaded: bool
) -> None:
    """A chunk written in part (the disk filled up) and later chunks that would fit again
    (another write freed space meanwhile): the file must stay a prefix of the blob, since
    clients streaming the transfer read it as it grows. (Found by ``bench chaos``: containerd
    got bodies that did not hash to their digest from an agent whose store ran out of space.)"""
    calls: list[int] = []
    real = blobs.write_all

    def flaky(fd: int, data: bytes) -> None:
        calls.append(len(data))
        if len(calls) == 2:
            os.write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(blobs, "write_all", flaky)
    data, _ = blob(8 * MiB)
    w = BlobWriter(tmp_path / "p", hashlib.sha256(), threaded=threaded)
    with pytest.raises(OSError, match="No space"):
        for i in range(0, len(data), MiB):
            await w.write(data[i : i + MiB])
        await w.finish()
    written = (tmp_path / "p").read_bytes()
    assert len(written) == MiB + MiB // 2
    assert data.startswith(written)
    w.abort()


async def test_store_reports_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    data, digest = blob(4 * MiB)
    async with ContentStore(tmp_path / "s") as store:
        monkeypatch.setattr(blobs, "write_all", no_space)
        with pytest.raises(StoreError, match="No space left on device; free disk space"):
            await store.fetch(digest, len(data), MemorySource(data))
        assert not store.has(digest)
        assert list(store.layout.ingest_dir.iterdir()) == []


def test_hash_file_and_atomic_write(tmp_path: Path) -> None:
    data, digest = blob(MiB + 3)
    write_file_atomic(tmp_path / "t", tmp_path / "sub" / "f", data)
    assert not (tmp_path / "t").exists()
    assert hash_file(tmp_path / "sub" / "f", "sha256") == (digest.hex, len(data))
