"""Resolve a reference to its image manifest: the top manifest and, for an index, the entry for
one platform (pure apart from the ``fetch_manifest`` callable it is given).

The caller fetches and parses manifests with its own client (the registry client for
``warmstart pull``, the agent's Fetcher for a pre-warm), so each keeps its own transport, errors
and parsing; the walk from the reference to the platform's image manifest is the same for both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from warmstart.oci.digest import Digest
from warmstart.oci.errors import InvalidManifest
from warmstart.oci.manifest import ImageIndex, ImageManifest, Manifest
from warmstart.oci.platform import Platform
from warmstart.oci.reference import Reference


class ResolvableManifest(Protocol):
    """What the resolver reads of a fetched manifest."""

    @property
    def digest(self) -> Digest: ...

    @property
    def manifest(self) -> Manifest: ...


M = TypeVar("M", bound=ResolvableManifest)


@dataclass(frozen=True)
class ResolvedImage(Generic[M]):
    top: M  # what the reference names: an image manifest or an index
    image: M  # the image manifest: ``top`` itself, or the index's entry for the platform
    platform: Platform | None  # the chosen index entry's platform; None without an index

    @property
    def is_index(self) -> bool:
        return self.image is not self.top


async def resolve_image(
    ref: Reference,
    platform: Platform,
    fetch_manifest: Callable[[Digest | None], Awaitable[M]],
) -> ResolvedImage[M]:
    """``fetch_manifest(None)`` fetches ``ref`` as given; ``fetch_manifest(digest)`` an index
    entry of its repository by digest. ``platform`` is matched as given (no normalization)."""
    top = await fetch_manifest(None)
    if isinstance(top.manifest, ImageManifest):
        return ResolvedImage(top, top, None)
    assert isinstance(top.manifest, ImageIndex)
    chosen = top.manifest.choose(platform)
    child = await fetch_manifest(chosen.digest)
    if not isinstance(child.manifest, ImageManifest):
        raise InvalidManifest(f"{ref}: index entry {chosen.digest} is not an image manifest")
    return ResolvedImage(top, child, chosen.platform)
