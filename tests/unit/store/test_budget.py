"""The disk budget: LRU eviction of whole images before a fetch writes, never pinned content."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.unit.store.conftest import FakeClock
from tests.unit.store.helpers import MemorySource, blob, wait_for_file
from warmstart.oci import Digest
from warmstart.store import BudgetExceeded, ContentStore

KB = 1000
LAYER = "application/vnd.oci.image.layer.v1.tar"


async def add_image(store: ContentStore, reference: str, *layers: tuple[bytes, Digest]) -> Digest:
    for data, digest in layers:
        await store.fetch(digest, len(data), MemorySource(data))
    manifest = f"manifest of {reference}".encode()
    mdigest = Digest.of(manifest)
    store.put_bytes(mdigest, manifest)
    store.record_image(
        reference,
        mdigest,
        [(mdigest, len(manifest), "m"), *((d, len(b), LAYER) for b, d in layers)],
    )
    return mdigest


@pytest.fixture
async def small(root: Path, clock: FakeClock) -> ContentStore:
    store = ContentStore(root, budget=100 * KB, clock=clock, poll_interval=0.005)
    yield store  # type: ignore[misc]
    await store.aclose()


async def test_evicts_least_recently_used_image(small: ContentStore, clock: FakeClock) -> None:
    a = blob(40 * KB)
    b = blob(40 * KB)
    await add_image(small, "a", a)
    clock.tick()
    await add_image(small, "b", b)
    clock.tick()
    small.touch("a")  # now b is the least recently used
    c = blob(30 * KB)
    await small.fetch(c[1], len(c[0]), MemorySource(c[0]))
    assert [i.reference for i in small.images()] == ["a"]
    assert small.has(a[1]) and not small.has(b[1]) and small.has(c[1])
    assert small.usage() <= 100 * KB


async def test_orphans_go_first(small: ContentStore) -> None:
    a = blob(40 * KB)
    await add_image(small, "a", a)
    orphan = blob(40 * KB)
    await small.fetch(orphan[1], len(orphan[0]), MemorySource(orphan[0]))
    c = blob(30 * KB)
    await small.fetch(c[1], len(c[0]), MemorySource(c[0]))
    assert not small.has(orphan[1])
    assert small.has(a[1])
    assert [i.reference for i in small.images()] == ["a"]


async def test_shared_blobs_are_kept(small: ContentStore, clock: FakeClock) -> None:
    base = blob(30 * KB)
    la = blob(20 * KB)
    lb = blob(20 * KB)
    await add_image(small, "a", base, la)
    clock.tick()
    await add_image(small, "b", base, lb)
    c = blob(35 * KB)
    await small.fetch(c[1], len(c[0]), MemorySource(c[0]))
    assert [i.reference for i in small.images()] == ["b"]
    assert small.has(base[1]) and small.has(lb[1]) and not small.has(la[1])


async def test_pinned_image_is_never_evicted(small: ContentStore, clock: FakeClock) -> None:
    a = blob(40 * KB)
    b = blob(40 * KB)
    ma = await add_image(small, "a", a)
    clock.tick()
    await add_image(small, "b", b)
    with small.pin("replica-1", [ma, a[1]], reference="a"):
        assert [i.pinned for i in small.images()] == [True, False]
        c = blob(30 * KB)
        await small.fetch(c[1], len(c[0]), MemorySource(c[0]))
        assert small.has(a[1]) and not small.has(b[1])
        d = blob(60 * KB)
        source = MemorySource(d[0])
        with pytest.raises(BudgetExceeded) as e:
            await small.fetch(d[1], len(d[0]), source)
        message = str(e.value)
        assert "\n" not in message
        assert "pinned" in message and "raise the budget" in message
        assert source.calls == []
        assert small.has(a[1]) and small.has(c[1])  # a failed plan deletes nothing
    assert [i.pinned for i in small.images()] == [False]


async def test_pinned_blobs_without_an_image_are_kept(small: ContentStore) -> None:
    orphan = blob(80 * KB)
    await small.fetch(orphan[1], len(orphan[0]), MemorySource(orphan[0]))
    pin = small.pin("prewarm", [orphan[1]])
    c = blob(30 * KB)
    with pytest.raises(BudgetExceeded):
        await small.fetch(c[1], len(c[0]), MemorySource(c[0]))
    pin.release()
    await small.fetch(c[1], len(c[0]), MemorySource(c[0]))
    assert not small.has(orphan[1])


async def test_async_with_pin(small: ContentStore) -> None:
    orphan = blob(10 * KB)
    await small.fetch(orphan[1], len(orphan[0]), MemorySource(orphan[0]))
    async with small.pin("x", [orphan[1]]) as pin:
        assert small.gc().blobs_removed == 0
        assert not pin.released
    assert pin.released
    assert small.gc().blobs_removed == 1


async def test_blob_larger_than_budget(small: ContentStore) -> None:
    big = blob(101 * KB)
    with pytest.raises(BudgetExceeded, match="more than the whole store budget"):
        await small.fetch(big[1], len(big[0]), MemorySource(big[0]))


async def test_writes_in_flight_count_against_the_budget(small: ContentStore) -> None:
    x = blob(60 * KB)
    y = blob(60 * KB)
    gate = asyncio.Event()
    first = asyncio.create_task(small.fetch(x[1], len(x[0]), MemorySource(x[0], gate=gate)))
    await wait_for_file(small.layout.partial_path(x[1]))
    with pytest.raises(BudgetExceeded, match="reserved by writes in progress"):
        await small.fetch(y[1], len(y[0]), MemorySource(y[0]))
    gate.set()
    await first


async def test_no_budget_means_no_eviction(store: ContentStore) -> None:
    a = blob(40 * KB)
    await add_image(store, "a", a)
    for _ in range(3):
        x = blob(50 * KB)
        await store.fetch(x[1], len(x[0]), MemorySource(x[0]))
    assert store.has(a[1])


def link_elsewhere(store: ContentStore, digest: Digest, where: Path) -> Path:
    """What the agent does for containerd: a second hard link to the stored file."""
    where.mkdir(parents=True, exist_ok=True)
    target = where / digest.hex
    os.link(store.blob_path(digest), target)
    return target


async def test_linked_blobs_are_not_counted_nor_evicted(
    small: ContentStore, clock: FakeClock, root: Path
) -> None:
    a = blob(60 * KB)
    b = blob(30 * KB)
    await add_image(small, "a", a)
    clock.tick()
    await add_image(small, "b", b)
    linked = link_elsewhere(small, a[1], root.parent / "containerd")
    assert small.shared_blobs() == {a[1]: 60 * KB}
    assert small.exclusive_usage() == small.usage() - 60 * KB
    # 50 KB more: only b's 30 KB (and manifests) count against the 100 KB budget, so nothing
    # has to go, although 60 + 30 + 50 > 100 are stored.
    c = blob(50 * KB)
    await small.fetch(c[1], len(c[0]), MemorySource(c[0]))
    assert small.has(a[1]) and small.has(b[1]) and small.has(c[1])
    # 40 KB more: room must be made from bytes that deleting really frees; a is the least
    # recently used image, but its layer is linked: deleting it would free nothing.
    e = blob(40 * KB)
    await small.fetch(e[1], len(e[0]), MemorySource(e[0]))
    assert small.has(a[1]) and os.stat(linked).st_nlink == 2
    assert small.exclusive_usage() <= 100 * KB
    assert small.has(e[1])


async def test_a_link_removed_by_containerd_counts_again(small: ContentStore, root: Path) -> None:
    a = blob(60 * KB)
    await add_image(small, "a", a)
    linked = link_elsewhere(small, a[1], root.parent / "containerd")
    before = small.exclusive_usage()
    os.unlink(linked)  # containerd's GC
    assert small.exclusive_usage() == before + 60 * KB
    assert small.has(a[1])


async def test_verified_path_checks_size_and_rehashes_small_blobs(small: ContentStore) -> None:
    a = blob(20 * KB)
    await small.fetch(a[1], len(a[0]), MemorySource(a[0]))
    assert small.verified_path(a[1], 20 * KB) == small.blob_path(a[1])
    assert small.verified_path(a[1], 20 * KB + 1) is None  # the descriptor disagrees
    assert small.has(a[1])
    damaged = bytearray(a[0])
    damaged[5] ^= 1
    small.blob_path(a[1]).write_bytes(bytes(damaged))  # same size, other bytes
    assert small.verified_path(a[1], 20 * KB) is None
    assert not small.has(a[1])  # removed: the next fetch replaces it
    b = blob(20 * KB)
    await small.fetch(b[1], len(b[0]), MemorySource(b[0]))
    small.blob_path(b[1]).write_bytes(b[0][:100])  # truncated on disk
    assert small.verified_path(b[1], 20 * KB) is None
    assert not small.has(b[1])
    assert small.verified_path(blob(10)[1], 10) is None  # never stored
