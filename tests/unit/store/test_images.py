"""The index side of the store: images, last use, pins, remove_image, small blobs."""

from __future__ import annotations

import pytest

from tests.unit.store.conftest import FakeClock
from tests.unit.store.helpers import MemorySource, blob
from warmstart.oci import Digest
from warmstart.store import (
    BlobNotFound,
    BlobTooLarge,
    ContentStore,
    ImageRecord,
    StoreDigestMismatch,
)

LAYER = "application/vnd.oci.image.layer.v1.tar"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


async def test_record_and_list_images(store: ContentStore, clock: FakeClock) -> None:
    layer, ldigest = blob(5000)
    manifest = b'{"schemaVersion": 2}'
    mdigest = Digest.of(manifest)
    store.put_bytes(mdigest, manifest, MANIFEST)
    store.record_image(
        "docker.io/library/a:1",
        mdigest,
        [(mdigest, len(manifest), MANIFEST), (ldigest, len(layer), LAYER)],
        platform="linux/amd64",
    )
    [record] = store.images()
    assert record == ImageRecord(
        reference="docker.io/library/a:1",
        manifest_digest=mdigest,
        size=len(layer) + len(manifest),
        last_used=clock.now,
        pinned=False,
        complete=False,  # the layer is not in the store yet
        platform="linux/amd64",
    )
    await store.fetch(ldigest, len(layer), MemorySource(layer))
    assert store.images()[0].complete


async def test_manifest_is_added_to_the_blobs_when_present(store: ContentStore) -> None:
    manifest = b"{}"
    mdigest = Digest.of(manifest)
    store.put_bytes(mdigest, manifest)
    store.record_image("a", mdigest, [])
    assert store.images()[0].size == 2
    assert store.images()[0].complete


async def test_record_replaces_and_touch_updates_last_use(
    store: ContentStore, clock: FakeClock
) -> None:
    m1 = Digest.of(b"1")
    m2 = Digest.of(b"2")
    store.record_image("a", m1, [])
    clock.tick(10)
    store.record_image("b", m1, [])
    clock.tick(10)
    store.record_image("a", m2, [])
    assert [(i.reference, i.manifest_digest, i.last_used) for i in store.images()] == [
        ("a", m2, clock.now),
        ("b", m1, clock.now - 10),
    ]
    clock.tick(5)
    store.touch("b")
    store.touch("missing")  # ignored
    assert store.images()[1].last_used == clock.now


async def test_pins_mark_images(store: ContentStore) -> None:
    m1 = Digest.of(b"1")
    m2 = Digest.of(b"2")
    store.record_image("a", m1, [])
    store.record_image("b", m2, [])
    with store.pin("replica", [], reference="a"):
        with store.pin("prewarm", [m2]):
            assert [i.pinned for i in store.images()] == [True, True]
        assert [i.pinned for i in store.images()] == [True, False]
    assert [i.pinned for i in store.images()] == [False, False]


async def test_remove_image_keeps_shared_and_pinned_blobs(store: ContentStore) -> None:
    base, shared, own, pinned = (blob(1000) for _ in range(4))
    for data, digest in (base, shared, own, pinned):
        await store.fetch(digest, len(data), MemorySource(data))
    ma, mb = Digest.of(b"a"), Digest.of(b"b")
    store.record_image("a", ma, [(d, len(b), LAYER) for b, d in (base, shared, own, pinned)])
    store.record_image("b", mb, [(shared[1], 1000, LAYER)])
    with store.pin("x", [pinned[1]]):
        assert store.remove_image("a")
    assert not store.remove_image("a")
    assert [i.reference for i in store.images()] == ["b"]
    assert not store.has(base[1]) and not store.has(own[1])
    assert store.has(shared[1]) and store.has(pinned[1])
    assert store.usage() == 2000


async def test_put_and_read_bytes(store: ContentStore) -> None:
    data = b'{"hello": "world"}'
    digest = Digest.of(data)
    store.put_bytes(digest, data, "application/json")
    store.put_bytes(digest, data)  # again: harmless
    assert store.read_bytes(digest, 1000) == data
    assert store.blob_size(digest) == len(data)
    assert store._index.blob(digest).media_type == "application/json"  # type: ignore[union-attr]
    with pytest.raises(BlobTooLarge, match="over the 5 byte limit"):
        store.read_bytes(digest, 5)


async def test_put_bytes_rejects_wrong_digest(store: ContentStore) -> None:
    with pytest.raises(StoreDigestMismatch, match="refusing"):
        store.put_bytes(Digest.of(b"a"), b"b")
    assert store.usage() == 0
    assert not store.has(Digest.of(b"a"))


async def test_read_bytes_missing_and_corrupt(store: ContentStore) -> None:
    digest = Digest.of(b"abc")
    with pytest.raises(BlobNotFound, match="not in the store"):
        store.read_bytes(digest, 100)
    store.put_bytes(digest, b"abc")
    store.blob_path(digest).write_bytes(b"abd")
    with pytest.raises(BlobNotFound, match="corrupt"):
        store.read_bytes(digest, 100)
    assert not store.has(digest)
    assert store.usage() == 0


async def test_closed_store_refuses(store: ContentStore) -> None:
    store.close()
    with pytest.raises(Exception, match="closed"):
        store.usage()


async def test_remove_image_pinned_by_reference_keeps_its_blobs(store: ContentStore) -> None:
    data, digest = blob(1000)
    await store.fetch(digest, len(data), MemorySource(data))
    store.record_image("a", Digest.of(b"m"), [(digest, 1000, LAYER)])
    with store.pin("replica", [], reference="a"):
        assert store.remove_image("a")
        assert store.images() == []
        assert store.has(digest)
    assert store.gc().removed == (digest,)
