"""open_reader: complete blobs, and following a write in progress to its end (or failure)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.unit.store.helpers import MemorySource, MiB, blob, corrupt, wait_for_file
from warmstart.oci import Digest
from warmstart.store import BlobNotFound, ContentStore, StoreDigestMismatch


async def read_all(store: ContentStore, digest: Digest, start: int = 0) -> bytes:
    out = bytearray()
    async for chunk in store.open_reader(digest, start):
        out += chunk
    return bytes(out)


async def wait_for_partial(store: ContentStore, digest: Digest, at_least: int = 1) -> None:
    await wait_for_file(store.layout.partial_path(digest), at_least)


async def test_reads_a_complete_blob(store: ContentStore) -> None:
    data, digest = blob(3 * MiB + 5)
    await store.fetch(digest, len(data), MemorySource(data))
    assert await read_all(store, digest) == data
    assert await read_all(store, digest, 2 * MiB + 1) == data[2 * MiB + 1 :]
    assert await read_all(store, digest, len(data)) == b""


async def test_absent_blob_raises(store: ContentStore) -> None:
    _, digest = blob(10)
    with pytest.raises(BlobNotFound, match="no transfer of it is running"):
        await read_all(store, digest)


async def test_follows_a_write_in_progress(store: ContentStore) -> None:
    data, digest = blob(6 * MiB + 11)
    gate = asyncio.Event()
    source = MemorySource(data, chunk=256 * 1024, gate=gate)
    fetch = asyncio.create_task(store.fetch(digest, len(data), source))
    await wait_for_partial(store, digest)
    readers = [asyncio.create_task(read_all(store, digest, start)) for start in (0, 100, MiB)]
    await asyncio.sleep(0.02)
    assert not any(r.done() for r in readers)  # they wait for more bytes
    gate.set()
    await fetch
    got = await asyncio.gather(*readers)
    assert got == [data, data[100:], data[MiB:]]


async def test_reader_started_with_the_fetch_sees_all_bytes(store: ContentStore) -> None:
    data, digest = blob(4 * MiB)
    fetch = asyncio.create_task(store.fetch(digest, len(data), MemorySource(data, delay=0.002)))
    await asyncio.sleep(0)  # the transfer is registered: the reader follows it
    reader = asyncio.create_task(read_all(store, digest))
    await fetch
    assert await reader == data


async def test_reader_right_after_creating_the_fetch_task(store: ContentStore) -> None:
    data, digest = blob(2 * MiB)
    fetch = asyncio.create_task(store.fetch(digest, len(data), MemorySource(data)))
    assert await read_all(store, digest) == data  # no await between the two
    await fetch


async def test_reader_sees_the_writers_failure(store: ContentStore) -> None:
    data, digest = blob(3 * MiB)
    gate = asyncio.Event()
    fetch = asyncio.create_task(
        store.fetch(digest, len(data), MemorySource(corrupt(data), gate=gate))
    )
    await wait_for_partial(store, digest)
    reader = asyncio.create_task(read_all(store, digest))
    await asyncio.sleep(0.01)
    gate.set()
    with pytest.raises(StoreDigestMismatch):
        await fetch
    with pytest.raises(StoreDigestMismatch):
        await reader


async def test_reader_in_another_store_follows_the_write(root: Path) -> None:
    """A second ContentStore on the root knows nothing of the first one's transfer: it follows
    the temp file and the lock, as another process would."""
    data, digest = blob(3 * MiB + 1)
    writer = ContentStore(root, poll_interval=0.005)
    other = ContentStore(root, poll_interval=0.005)
    try:
        gate = asyncio.Event()
        fetch = asyncio.create_task(
            writer.fetch(digest, len(data), MemorySource(data, chunk=512 * 1024, gate=gate))
        )
        await wait_for_partial(writer, digest)
        reader = asyncio.create_task(read_all(other, digest, 7))
        await asyncio.sleep(0.02)
        assert not reader.done()
        gate.set()
        await fetch
        assert await reader == data[7:]
    finally:
        await writer.aclose()
        await other.aclose()


async def test_reader_in_another_store_sees_a_failed_write(root: Path) -> None:
    data, digest = blob(3 * MiB)
    writer = ContentStore(root, poll_interval=0.005)
    other = ContentStore(root, poll_interval=0.005)
    try:
        gate = asyncio.Event()
        fetch = asyncio.create_task(
            writer.fetch(digest, len(data), MemorySource(corrupt(data), gate=gate))
        )
        await wait_for_partial(writer, digest)
        reader = asyncio.create_task(read_all(other, digest))
        await asyncio.sleep(0.02)
        gate.set()
        with pytest.raises(StoreDigestMismatch):
            await fetch
        with pytest.raises(BlobNotFound, match="no transfer"):
            await reader
    finally:
        await writer.aclose()
        await other.aclose()


async def test_negative_start(store: ContentStore) -> None:
    _, digest = blob(10)
    with pytest.raises(ValueError):
        await read_all(store, digest, -1)
