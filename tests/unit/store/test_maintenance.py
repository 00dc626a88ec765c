"""Crash recovery on open, gc and verify."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.unit.store.helpers import MemorySource, MiB, blob, flip_byte
from warmstart.oci import Digest
from warmstart.store import ContentStore
from warmstart.store.recovery import PARTIAL_MAX_AGE


def make_store(root: Path) -> ContentStore:
    return ContentStore(root, poll_interval=0.005)


async def test_recovery_removes_leftover_temp_files(root: Path) -> None:
    store = make_store(root)
    _, digest = blob(10)
    store.close()
    partial = store.layout.partial_path(digest)
    partial.write_bytes(b"half a blob")
    old = time.time() - PARTIAL_MAX_AGE - 60  # too old to resume
    os.utime(partial, (old, old))
    dead_put = store.layout.ingest_dir / f"put-999999999-abcd-{digest.hex}.tmp"
    dead_put.write_bytes(b"x")
    (store.layout.locks_dir / f"{digest.hex}.lock").touch()
    store = make_store(root)
    try:
        assert store.recovery.temp_files_removed == 2
        assert os.listdir(store.layout.ingest_dir) == []
        assert os.listdir(store.layout.locks_dir) == []
    finally:
        store.close()


async def test_recovery_keeps_a_recent_partial_of_a_dead_writer_for_a_resume(root: Path) -> None:
    store = make_store(root)
    data, digest = blob(1000)
    empty = blob(20)[1]
    store.close()
    store.layout.partial_path(digest).write_bytes(data[:400])
    store.layout.partial_path(empty).write_bytes(b"")  # nothing to resume
    store = make_store(root)
    try:
        assert store.recovery.temp_files_removed == 1
        assert os.listdir(store.layout.ingest_dir) == [f"{digest.hex}.partial"]
        assert os.listdir(store.layout.locks_dir) == []
    finally:
        store.close()


async def test_recovery_keeps_a_temp_file_whose_writer_lives(root: Path) -> None:
    from warmstart.store.locks import FileLock

    _, digest = blob(10)
    store = make_store(root)
    lock = FileLock(store.layout.lock_path(digest))
    assert lock.try_acquire()
    store.layout.partial_path(digest).write_bytes(b"busy")
    other = make_store(root)
    try:
        assert other.recovery.temp_files_removed == 0
        assert store.layout.partial_path(digest).exists()
    finally:
        lock.release(unlink=True)
        other.close()
        store.close()


async def test_recovery_reconciles_index_and_files(root: Path) -> None:
    store = make_store(root)
    kept, gone, unknown, wrong = (blob(1000 + i) for i in range(4))
    for data, digest in (kept, gone, wrong):
        await store.fetch(digest, len(data), MemorySource(data))
    store.record_image("img", Digest.of(b"m"), [(unknown[1], len(unknown[0]) + 1, "x")])
    store.close()
    store.blob_path(gone[1]).unlink()  # a blob vanished
    store.blob_path(unknown[1]).write_bytes(unknown[0])  # a file the index does not know
    store.blob_path(wrong[1]).write_bytes(b"truncated")  # a file of the wrong size
    store = make_store(root)
    try:
        assert store.recovery.rows_dropped == 1
        assert store.recovery.rows_added == 0  # unknown's size contradicts the image record
        assert store.recovery.bad_files_removed == 2
        assert store.has(kept[1])
        assert not store.has(gone[1]) and not store.has(wrong[1]) and not store.has(unknown[1])
        assert store.usage() == len(kept[0])
    finally:
        store.close()


async def test_recovery_adds_unknown_files_by_size(root: Path) -> None:
    store = make_store(root)
    data, digest = blob(1234)
    store.close()
    store.blob_path(digest).write_bytes(data)
    store = make_store(root)
    try:
        assert store.recovery.rows_added == 1
        assert store.usage() == 1234
        assert store.blob_size(digest) == 1234
    finally:
        store.close()


async def test_recovery_drops_pins_of_dead_stores(root: Path) -> None:
    store = make_store(root)
    store._index.add_pin("ghost", "img", [Digest.of(b"x")], "424242-deadbeef", 424242, 0.0)
    store._index.add_inflight(Digest.of(b"y"), 10, "424242-deadbeef", 424242, 0.0)
    live = store.pin("me", [Digest.of(b"z")])
    other = make_store(root)
    try:
        assert other.recovery.stale_pins_removed == 1
        assert [p.holder for p in other._index.pins()] == ["me"]
        assert other._index.inflight() == []
    finally:
        live.release()
        other.close()
        store.close()


async def test_pins_of_a_closed_store_lapse(root: Path) -> None:
    a = make_store(root)
    a.pin("gone soon", [Digest.of(b"x")])
    a.close()
    b = make_store(root)
    try:
        assert b.recovery.stale_pins_removed == 1
    finally:
        b.close()


async def test_gc_removes_orphans_and_keeps_the_rest(root: Path) -> None:
    store = make_store(root)
    try:
        used, orphan, pinned = (blob(1000 + i) for i in range(3))
        for data, digest in (used, orphan, pinned):
            await store.fetch(digest, len(data), MemorySource(data))
        store.record_image("img", Digest.of(b"m"), [(used[1], 1000, "x")])
        with store.pin("p", [pinned[1]]):
            report = store.gc()
        assert report.blobs_removed == 1
        assert report.bytes_freed == len(orphan[0])
        assert report.removed == (orphan[1],)
        assert store.has(used[1]) and store.has(pinned[1]) and not store.has(orphan[1])
        assert store.gc().removed == (pinned[1],)
    finally:
        store.close()


async def test_verify_finds_and_removes_a_corrupted_blob(root: Path) -> None:
    store = make_store(root)
    try:
        good, bad = blob(2 * MiB), blob(MiB)
        for data, digest in (good, bad):
            await store.fetch(digest, len(data), MemorySource(data))
        missing = Digest.of(b"never fetched")
        mdigest = Digest.of(b"manifest")
        store.put_bytes(mdigest, b"manifest")
        store.record_image(
            "img", mdigest, [(good[1], MiB * 2, "x"), (bad[1], MiB, "x"), (missing, 5, "x")]
        )
        flip_byte(store.blob_path(bad[1]), 1000)  # same size, other content
        report = store.verify()
        assert report.checked == 3
        assert report.bytes_checked == 3 * MiB + len(b"manifest")
        assert report.corrupt == (bad[1],)
        assert set(report.missing) == {("img", bad[1]), ("img", missing)}
        assert not report.ok
        assert not store.has(bad[1]) and store.has(good[1])
        assert store.usage() == 2 * MiB + len(b"manifest")
    finally:
        store.close()


async def test_verify_says_when_a_corrupt_blob_is_also_linked_elsewhere(
    root: Path, tmp_path: Path
) -> None:
    """The agent hard-links blobs into containerd's content store: corrupting the file
    corrupts both names. verify removes the store's name and says the other holds it too.
    (Found by ``bench chaos``, disk-corrupt on a linked blob.)"""
    store = make_store(root)
    try:
        shared, alone = blob(MiB), blob(MiB + 1)
        for data, digest in (shared, alone):
            await store.fetch(digest, len(data), MemorySource(data))
        other = tmp_path / "containerd-blob"
        os.link(store.blob_path(shared[1]), other)
        flip_byte(store.blob_path(shared[1]), 10)
        flip_byte(store.blob_path(alone[1]), 10)
        report = store.verify()
        assert set(report.corrupt) == {shared[1], alone[1]}
        assert report.linked == (shared[1],)
        assert other.exists()  # not ours to remove
        assert "1 of them also hard-linked into another store" in str(report)
        assert "ctr -n NAMESPACE content rm DIGEST" in str(report)
    finally:
        store.close()


async def test_verify_of_a_healthy_store(root: Path) -> None:
    store = make_store(root)
    try:
        data, digest = blob(1000)
        await store.fetch(digest, len(data), MemorySource(data))
        assert store.verify().ok
    finally:
        store.close()


def test_reports_read_as_one_line() -> None:
    from warmstart.store import GCReport, VerifyReport

    d = Digest.of(b"x")
    assert str(GCReport(2, 3 << 20, 1, 0, (d, d))) == (
        "removed 2 unreferenced blobs (3.0 MiB), 1 temporary files, 0 stale pins"
    )
    assert str(VerifyReport(1, 10)) == "checked 1 blobs (10 B): all good"
    text = str(VerifyReport(2, 20, (d,), (("img", d),)))
    assert "\n" not in text
    assert f"1 corrupt and removed ({d})" in text and "missing for 1 images (img)" in text


async def test_recovery_removes_session_files_of_dead_stores(root: Path) -> None:
    store = make_store(root)
    store.close()
    (store.layout.sessions_dir / "999999999-abc.lock").touch()
    (store.layout.sessions_dir / ".999999999-abc.tmp").touch()
    store = make_store(root)
    try:
        assert os.listdir(store.layout.sessions_dir) == [f"{store._session.id}.lock"]
    finally:
        store.close()
