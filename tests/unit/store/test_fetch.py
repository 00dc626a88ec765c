"""ContentStore.fetch: single flight, verification, size checks, resume, cancellation."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.unit.store.helpers import MemorySource, MiB, SourceFailed, blob, corrupt, wait_for_file
from warmstart.oci import Digest
from warmstart.store import ContentStore, StoreDigestMismatch, StoreSizeMismatch


def assert_nothing_stored(store: ContentStore, digest: Digest) -> None:
    assert not store.has(digest)
    assert not store.blob_path(digest).exists()
    assert os.listdir(store.layout.ingest_dir) == []
    assert not store.layout.lock_path(digest).exists()
    assert store.blob_size(digest) is None
    assert store.usage() == 0
    assert store._index.inflight() == []


async def test_fetch_stores_verified_blob(store: ContentStore) -> None:
    data, digest = blob(3 * MiB + 17)
    source = MemorySource(data)
    path = await store.fetch(digest, len(data), source, media_type="application/x-test")
    assert path == store.blob_path(digest) == store.root / "blobs" / "sha256" / digest.hex
    assert path.read_bytes() == data
    assert store.has(digest)
    assert store.blob_size(digest) == len(data)
    assert store.usage() == len(data)
    assert source.calls == [0]
    assert os.listdir(store.layout.ingest_dir) == []
    assert os.listdir(store.layout.locks_dir) == []


@pytest.mark.parametrize("size", [0, 1, 1000, 300 * 1024, 2 * MiB])
async def test_fetch_sizes_inline_and_threaded(store: ContentStore, size: int) -> None:
    data, digest = blob(size)
    path = await store.fetch(digest, size, MemorySource(data, chunk=64 * 1024))
    assert path.read_bytes() == data


async def test_fetch_with_unknown_size(store: ContentStore) -> None:
    data, digest = blob(2 * MiB + 5)
    path = await store.fetch(digest, None, MemorySource(data))
    assert path.read_bytes() == data


async def test_sixteen_concurrent_fetches_call_the_source_once(store: ContentStore) -> None:
    data, digest = blob(4 * MiB + 3)
    source = MemorySource(data, delay=0.002)
    progress = [0] * 16

    def on_progress(i: int):
        def report(n: int) -> None:
            assert n > 0
            progress[i] += n

        return report

    paths = await asyncio.gather(
        *(store.fetch(digest, len(data), source, on_progress=on_progress(i)) for i in range(16))
    )
    assert source.calls == [0]
    assert len(set(paths)) == 1
    assert paths[0].read_bytes() == data
    assert progress == [len(data)] * 16


async def test_fetch_of_present_blob_does_not_call_source(store: ContentStore) -> None:
    data, digest = blob(1000)
    store.put_bytes(digest, data)
    source = MemorySource(data)
    seen: list[int] = []
    assert await store.fetch(digest, len(data), source, on_progress=seen.append)
    assert source.calls == []
    assert seen == []


async def test_fetch_of_present_blob_with_wrong_size(store: ContentStore) -> None:
    data, digest = blob(1000)
    store.put_bytes(digest, data)
    with pytest.raises(StoreSizeMismatch, match="descriptor"):
        await store.fetch(digest, 999, MemorySource(data))


async def test_corrupt_source_raises_and_stores_nothing(store: ContentStore) -> None:
    data, digest = blob(2 * MiB)
    source = MemorySource(corrupt(data))
    results = await asyncio.gather(
        *(store.fetch(digest, len(data), source) for _ in range(16)), return_exceptions=True
    )
    assert all(isinstance(r, StoreDigestMismatch) for r in results)
    assert "nothing was stored" in str(results[0])
    assert source.calls == [0]
    assert_nothing_stored(store, digest)


async def test_too_many_bytes_aborts_early(store: ContentStore) -> None:
    data, digest = blob(2 * MiB)
    source = MemorySource(data, extra=b"x" * (50 * MiB))
    with pytest.raises(StoreSizeMismatch, match="more than the 2097152 bytes"):
        await store.fetch(digest, len(data), source)
    assert source.yielded <= len(data) + MiB  # stopped at the first chunk over the size
    assert_nothing_stored(store, digest)


async def test_too_few_bytes(store: ContentStore) -> None:
    data, digest = blob(2 * MiB)
    source = MemorySource(data[: MiB + 1])
    with pytest.raises(StoreSizeMismatch, match=f"ended after {MiB + 1} of the"):
        await store.fetch(digest, len(data), source)
    assert source.calls == [0, MiB + 1]  # asked once more for the rest
    assert_nothing_stored(store, digest)


async def test_source_failing_midway_is_resumed_from_offset(store: ContentStore) -> None:
    data, digest = blob(5 * MiB + 123)
    source = MemorySource(data, fail_at=[2 * MiB + 7])
    progress: list[int] = []
    path = await store.fetch(digest, len(data), source, on_progress=progress.append)
    assert source.calls == [0, 2 * MiB + 7]
    assert path.read_bytes() == data
    assert sum(progress) == len(data)


async def test_short_stream_is_resumed_from_offset(store: ContentStore) -> None:
    data, digest = blob(3 * MiB)
    source = MemorySource(data, truncate=MiB + 5)
    path = await store.fetch(digest, len(data), source)
    assert source.calls == [0, MiB + 5]
    assert path.read_bytes() == data


async def test_source_failing_again_gives_up(store: ContentStore) -> None:
    data, digest = blob(3 * MiB)
    source = MemorySource(data, fail_at=[MiB, 10])
    with pytest.raises(SourceFailed):
        await store.fetch(digest, len(data), source)
    assert source.calls == [0, MiB]
    assert_nothing_stored(store, digest)


async def test_more_resume_attempts(root: Path) -> None:
    data, digest = blob(3 * MiB)
    source = MemorySource(data, fail_at=[MiB, 10, 10])
    async with ContentStore(root, resume_attempts=3) as store:
        assert (await store.fetch(digest, len(data), source)).read_bytes() == data
    assert source.calls == [0, MiB, MiB + 10, MiB + 20]


async def test_a_new_fetch_after_a_failure_calls_the_source_again(store: ContentStore) -> None:
    data, digest = blob(MiB)
    bad = MemorySource(corrupt(data))
    with pytest.raises(StoreDigestMismatch):
        await store.fetch(digest, len(data), bad)
    good = MemorySource(data)
    assert (await store.fetch(digest, len(data), good)).read_bytes() == data
    assert good.calls == [0]


async def test_cancelling_every_fetcher_cancels_the_transfer(store: ContentStore) -> None:
    data, digest = blob(4 * MiB)
    gate = asyncio.Event()
    source = MemorySource(data, gate=gate)
    tasks = [asyncio.create_task(store.fetch(digest, len(data), source)) for _ in range(3)]
    await wait_for_file(store.layout.partial_path(digest))
    for t in tasks:
        t.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    for _ in range(100):
        if not store._flights.keys():
            break
        await asyncio.sleep(0.005)
    assert_nothing_stored(store, digest)
    path = await store.fetch(digest, len(data), MemorySource(data))
    assert path.read_bytes() == data


async def test_cancelling_one_fetcher_keeps_the_transfer(store: ContentStore) -> None:
    data, digest = blob(2 * MiB)
    source = MemorySource(data, delay=0.01)
    first = asyncio.create_task(store.fetch(digest, len(data), source))
    second = asyncio.create_task(store.fetch(digest, len(data), source))
    await asyncio.sleep(0.015)
    first.cancel()
    assert (await second).read_bytes() == data
    assert source.calls == [0]


async def test_two_stores_on_one_root_share_one_write(root: Path) -> None:
    """Two ContentStore objects exclude each other through the per-digest file lock, exactly as
    two processes do."""
    data, digest = blob(3 * MiB)
    source = MemorySource(data, delay=0.005)
    a = ContentStore(root, poll_interval=0.005)
    b = ContentStore(root, poll_interval=0.005)
    try:
        progress: list[int] = []
        pa, pb = await asyncio.gather(
            a.fetch(digest, len(data), source),
            b.fetch(digest, len(data), source, on_progress=progress.append),
        )
        assert pa == pb
        assert source.calls == [0]
        assert pa.read_bytes() == data
        assert sum(progress) <= len(data)
    finally:
        await a.aclose()
        await b.aclose()


async def test_waiting_store_takes_over_when_writer_fails(root: Path) -> None:
    data, digest = blob(2 * MiB)
    a = ContentStore(root, poll_interval=0.005)
    b = ContentStore(root, poll_interval=0.005)
    try:
        bad = MemorySource(corrupt(data), delay=0.005)
        good = MemorySource(data)
        ta = asyncio.create_task(a.fetch(digest, len(data), bad))
        await wait_for_file(a.layout.partial_path(digest))
        tb = asyncio.create_task(b.fetch(digest, len(data), good))
        with pytest.raises(StoreDigestMismatch):
            await ta
        assert (await tb).read_bytes() == data
        assert (bad.calls, good.calls) == ([0], [0])
    finally:
        await a.aclose()
        await b.aclose()


async def test_sha512_digest(store: ContentStore) -> None:
    data = os.urandom(MiB + 1)
    digest = Digest.of(data, "sha512")
    path = await store.fetch(digest, len(data), MemorySource(data))
    assert path == store.root / "blobs" / "sha512" / digest.hex
    assert path.read_bytes() == data
