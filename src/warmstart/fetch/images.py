"""Which images the mirror has served completely, so they can be recorded in the store's index
(``store ls`` and status then list them). Pure: the caller says what the store holds.

An image is pending from the moment its (platform) manifest is served until every blob it
needs is in the store. A tag that resolves to an index is linked to the child manifest the
client picks next, so the record reads ``registry/repo:tag`` with the index as its top digest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from warmstart.fetch.cache import LRUMap
from warmstart.oci import Digest, ImageIndex, ImageManifest

Entry = tuple[Digest, int, str]  # digest, size, media type


@dataclass(frozen=True)
class PendingImage:
    reference: str
    top: Digest  # what the reference resolves to (an index or the manifest itself)
    manifests: tuple[Entry, ...]
    blobs: tuple[Entry, ...]
    platform: str | None = None

    @property
    def entries(self) -> tuple[Entry, ...]:
        return self.manifests + self.blobs

    def needs(self, digest: Digest) -> bool:
        return any(d == digest for d, _, _ in self.entries)


@dataclass(frozen=True)
class _Parent:
    reference: str
    index: Entry
    platform: str | None


class ImageTracker:
    def __init__(self, max_pending: int = 256, max_links: int = 4096) -> None:
        self._pending: LRUMap[Digest, PendingImage] = LRUMap(max_pending)
        self._parents: LRUMap[tuple[str, str, Digest], _Parent] = LRUMap(max_links)

    def saw_index(
        self,
        registry: str,
        repository: str,
        reference: str,
        index: ImageIndex,
        entry: Entry,
    ) -> None:
        """An index was served for ``reference`` (a tag reference)."""
        for child in index.manifests:
            platform = str(child.platform) if child.platform is not None else None
            self._parents.put(
                (registry, repository, child.digest), _Parent(reference, entry, platform)
            )

    def saw_image(
        self,
        registry: str,
        repository: str,
        manifest: ImageManifest,
        entry: Entry,
        tag_reference: str | None = None,
    ) -> PendingImage:
        """An image manifest was served (by tag, or by digest)."""
        digest = entry[0]
        blobs = tuple(dict.fromkeys((d.digest, d.size, d.media_type) for d in manifest.blobs))
        parent = self._parents.get((registry, repository, digest))
        if tag_reference is not None:
            image = PendingImage(tag_reference, digest, (entry,), blobs)
        elif parent is not None:
            image = PendingImage(
                parent.reference, parent.index[0], (parent.index, entry), blobs, parent.platform
            )
        else:
            pending = self._pending.get(digest)
            if pending is not None and pending.reference.startswith(f"{registry}/{repository}:"):
                # containerd resolves the tag (HEAD) and then GETs the manifest by digest: the
                # image keeps the tag it was asked for, as a pull by tag alone would record it.
                return pending
            image = PendingImage(f"{registry}/{repository}@{digest}", digest, (entry,), blobs)
        self._pending.put(digest, image)
        return image

    def complete(
        self, has: Callable[[Digest], bool], blob: Digest | None = None
    ) -> list[PendingImage]:
        """Pending images (needing ``blob``, if given) now wholly in the store; forgotten."""
        done: list[PendingImage] = []
        for image in self._pending.values():
            if blob is not None and not image.needs(blob):
                continue
            if all(has(d) for d, _, _ in image.entries):
                done.append(image)
        for image in done:
            self._pending.pop(image.manifests[-1][0])
        return done

    def __len__(self) -> int:
        return len(self._pending)


__all__ = ["ImageTracker", "PendingImage"]
