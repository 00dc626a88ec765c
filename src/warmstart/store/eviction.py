"""Which images and blobs to delete to make room: pure functions over a snapshot (no I/O, no clock).

Rules:
- unreferenced (orphan) blobs go first, largest first;
- then whole images, least recently used first; a pinned image is never evicted;
- a blob is deleted only if no remaining image references it and it is neither pinned nor in
  flight (``protected``);
- a blob that another store also links (``shared``: containerd's content store holds a hard
  link) is never deleted to make room: that frees no disk space, and the budget does not count
  it;
- a plan that cannot free enough is returned with ``shortfall > 0`` and must not be applied.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from warmstart.oci import Digest


@dataclass(frozen=True)
class ImageUsage:
    reference: str
    last_used: float
    blobs: frozenset[Digest]
    pinned: bool = False


@dataclass(frozen=True)
class StoreSnapshot:
    images: tuple[ImageUsage, ...]
    blob_sizes: Mapping[Digest, int]  # complete blobs in the store -> size
    protected: frozenset[Digest] = field(default_factory=frozenset)  # pinned or in flight
    shared: frozenset[Digest] = field(default_factory=frozenset)  # linked elsewhere too

    def refcounts(self, excluding: Iterable[str] = ()) -> Counter[Digest]:
        skip = set(excluding)
        counts: Counter[Digest] = Counter()
        for image in self.images:
            if image.reference not in skip:
                counts.update(image.blobs)
        return counts

    def deletable(self, digest: Digest, refcounts: Mapping[Digest, int]) -> bool:
        return (
            digest in self.blob_sizes
            and digest not in self.protected
            and refcounts.get(digest, 0) == 0
        )


@dataclass(frozen=True)
class EvictionPlan:
    images: tuple[str, ...] = ()  # references whose records are dropped, LRU first
    blobs: tuple[Digest, ...] = ()  # blobs to delete
    freed: int = 0
    shortfall: int = 0  # bytes the plan could not free; apply the plan only if 0

    @property
    def ok(self) -> bool:
        return self.shortfall == 0


def orphans(snapshot: StoreSnapshot) -> tuple[Digest, ...]:
    """Complete blobs no image references and nobody protects, largest first."""
    counts = snapshot.refcounts()
    found = [d for d in snapshot.blob_sizes if snapshot.deletable(d, counts)]
    return tuple(sorted(found, key=lambda d: (-snapshot.blob_sizes[d], d)))


def plan_eviction(snapshot: StoreSnapshot, need: int) -> EvictionPlan:
    """The least destructive way to free at least ``need`` bytes."""
    if need <= 0:
        return EvictionPlan()
    sizes = snapshot.blob_sizes
    counts = snapshot.refcounts()
    deleted: list[Digest] = []
    deleted_set: set[Digest] = set()
    freed = 0

    def delete(digest: Digest) -> None:
        nonlocal freed
        deleted.append(digest)
        deleted_set.add(digest)
        freed += sizes[digest]

    for digest in orphans(snapshot):
        if freed >= need:
            break
        if digest not in snapshot.shared:
            delete(digest)

    evicted: list[ImageUsage] = []
    candidates = sorted(
        (i for i in snapshot.images if not i.pinned), key=lambda i: (i.last_used, i.reference)
    )
    for image in candidates:
        if freed >= need:
            break
        evicted.append(image)
        counts.subtract(image.blobs)
        for digest in sorted(image.blobs):
            if (
                digest not in deleted_set
                and digest not in snapshot.shared
                and snapshot.deletable(digest, counts)
            ):
                delete(digest)

    # An evicted image none of whose blobs is deleted frees nothing: keep its record.
    kept = tuple(i.reference for i in evicted if i.blobs & deleted_set)
    return EvictionPlan(kept, tuple(deleted), freed, max(0, need - freed))


def plan_removal(snapshot: StoreSnapshot, reference: str) -> tuple[Digest, ...]:
    """Blobs to delete when the image ``reference`` is removed on purpose."""
    image = next((i for i in snapshot.images if i.reference == reference), None)
    if image is None:
        return ()
    counts = snapshot.refcounts(excluding=[reference])
    return tuple(d for d in sorted(image.blobs) if snapshot.deletable(d, counts))


def unfreeable_bytes(snapshot: StoreSnapshot) -> int:
    """Bytes no eviction may free: protected blobs and blobs of pinned images (shared blobs are
    not counted: the budget does not count them either)."""
    keep: set[Digest] = set(snapshot.protected)
    for image in snapshot.images:
        if image.pinned:
            keep.update(image.blobs)
    return sum(
        size for d, size in snapshot.blob_sizes.items() if d in keep and d not in snapshot.shared
    )
