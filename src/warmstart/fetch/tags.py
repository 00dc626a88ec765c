"""Tags to manifests for the tiered fetcher, and what a tag is when the upstream is down.

A tag is resolved from the tag cache while its entry is fresh, else upstream. When the upstream
fails, the tag is served as this node last saw it (its tag cache however old, or the image the
store recorded under it, which outlives restarts), else as a peer saw it (every live peer asked
at once). A peer's request for a tag is answered only from what this node knows: never from the
upstream (that is down for the peer too, and peers must not loop).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from dataclasses import dataclass
from typing import Protocol

from warmstart.aio import cancel_all
from warmstart.fetch.cache import TTLCache
from warmstart.fetch.interfaces import ManifestResult, NotFoundError, UnavailableError
from warmstart.fetch.local import manifest_media_type
from warmstart.fetch.peer_ring import PeerHealth, PeerView
from warmstart.fetch.run import PlanRunner
from warmstart.fetch.source import (
    Source,
    SourceCorrupt,
    SourceError,
    SourceManifest,
    SourceNotFound,
)
from warmstart.oci import MAX_MANIFEST_BYTES, Digest
from warmstart.store import ContentStore, StoreError
from warmstart.store.singleflight import Flight, SingleFlight

log = logging.getLogger(__name__)

TagKey = tuple[str, str, str, tuple[str, ...]]  # registry, repository, tag, accept


class KeepManifest(Protocol):
    def __call__(self, got: SourceManifest) -> None: ...


class ServeManifest(Protocol):
    def __call__(
        self, registry: str, repository: str, got: SourceManifest, source: str, *, tag: str | None
    ) -> ManifestResult: ...


@dataclass(eq=False)
class TagResolver:
    """Resolves ``registry/repository:tag`` for :class:`warmstart.fetch.tiered.TieredFetcher`.

    ``keep`` stores a manifest that arrived; ``serve`` turns one into the answer (and lets the
    fetcher learn from it); ``flights`` is the fetcher's single-flight of manifest fetches.
    """

    store: ContentStore
    upstream: Source
    runner: PlanRunner
    peers: PeerView
    health: PeerHealth
    cache: TTLCache[TagKey, tuple[Digest, str]]
    flights: SingleFlight[tuple[object, ...], ManifestResult]
    keep: KeepManifest
    serve: ServeManifest

    async def manifest(
        self,
        registry: str,
        repository: str,
        tag: str,
        accept: tuple[str, ...],
        *,
        from_peer: bool = False,
    ) -> ManifestResult:
        key: TagKey = (registry, repository, tag, accept)
        hit = self.cache.get(key)
        if hit is not None and hit.fresh:
            cached = self._cached(key, hit.value)
            if cached is not None:
                return cached
        if from_peer:
            # A peer asks because its upstream failed: answer from what this node knows, never
            # from the upstream (that is down for the peer too, and peers must not loop).
            here = self._known_here(key)
            if here is None:
                raise NotFoundError(f"manifest {repository}:{tag} is not known on this node")
            return here

        async def fetch(_flight: Flight[tuple[object, ...], ManifestResult]) -> ManifestResult:
            upstream = self.upstream
            try:
                got = await upstream.get_manifest(registry, repository, tag, accept)
            except SourceNotFound as e:
                self.runner.failed(upstream, e, registry)
                self.cache.pop(key)
                raise NotFoundError(f"manifest {repository}:{tag} not found: {e}") from None
            except SourceError as e:
                self.runner.failed(upstream, e, registry)
                # The upstream is down: the tag as this node last saw it (its tag cache, or the
                # image recorded in the store, which outlives restarts), else as a peer saw it.
                fallback = self._known_here(key) or await self._from_peers(key)
                if fallback is not None:
                    log.warning(
                        "%s/%s:%s: upstream failed (%s); serving the tag as last known (%s)",
                        registry, repository, tag, e, fallback.source,
                    )  # fmt: skip
                    return fallback
                raise UnavailableError(
                    f"manifest {repository}:{tag}: {e}", retry_after=e.retry_after
                ) from None
            self.keep(got)
            self.cache.put(key, (got.digest, got.media_type))
            return self.serve(registry, repository, got, "upstream", tag=tag)

        return await self.flights.do(("tag", *key), fetch)

    def _known_here(self, key: TagKey) -> ManifestResult | None:
        """The tag from the tag cache (however old) or the store's record of the image."""
        registry, repository, tag, _ = key
        stale = self.cache.get(key)
        if stale is not None:
            cached = self._cached(key, stale.value)
            if cached is not None:
                return cached
        reference = f"{registry}/{repository}:{tag}"
        try:
            record = next((r for r in self.store.images() if r.reference == reference), None)
        except (StoreError, sqlite3.Error):
            return None
        if record is None:
            return None
        try:
            body = self.store.read_bytes(record.manifest_digest, MAX_MANIFEST_BYTES)
        except StoreError:
            return None
        return self._cached(key, (record.manifest_digest, manifest_media_type(body)))

    async def _from_peers(self, key: TagKey) -> ManifestResult | None:
        """Ask every live peer for the tag at once (they answer from what they know); the first
        answer whose body hashes to the digest it names wins."""
        registry, repository, tag, accept = key
        sources = [
            s
            for url in self.peers.others()
            if not self.health.is_down(url) and (s := self.runner.peer(url)) is not None
        ]
        if not sources:
            return None

        async def ask(source: Source) -> SourceManifest:
            got = await source.get_manifest(registry, repository, tag, accept)
            if Digest.of(got.body, got.digest.algorithm) != got.digest:
                raise SourceCorrupt(f"the tag's manifest does not hash to {got.digest}")
            return got

        tasks = [asyncio.create_task(ask(s)) for s in sources]
        try:
            for done in asyncio.as_completed(tasks):
                try:
                    got = await done
                except (SourceError, OSError, TimeoutError):
                    continue
                self.keep(got)
                self.cache.put(key, (got.digest, got.media_type))
                return self.serve(registry, repository, got, "peer", tag=tag)
        finally:
            await cancel_all(tasks)
        return None

    def _cached(self, key: TagKey, value: tuple[Digest, str]) -> ManifestResult | None:
        registry, repository, tag, _ = key
        digest, media_type = value
        try:
            body = self.store.read_bytes(digest, MAX_MANIFEST_BYTES)
        except StoreError:
            return None
        got = SourceManifest(digest, media_type, body)
        return self.serve(registry, repository, got, "cache", tag=tag)


__all__ = ["TagKey", "TagResolver"]
