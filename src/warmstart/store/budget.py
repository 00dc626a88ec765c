"""Room under the store's budget: what eviction may take, and taking it.

:class:`SpaceKeeper` reserves room for a write in flight (evicting first when the budget needs
it), builds the eviction snapshot (pins and in-flight writes of live stores protect their
blobs; those of stores that died are dropped), locks and deletes what goes, and removes a
corrupt blob. Used by :class:`warmstart.store.store.ContentStore`; the choice of what goes is
:mod:`warmstart.store.eviction` (pure).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from warmstart.oci import Digest
from warmstart.store.errors import BudgetExceeded, format_bytes
from warmstart.store.eviction import (
    ImageUsage,
    StoreSnapshot,
    plan_eviction,
    unfreeable_bytes,
)
from warmstart.store.index import Index, InflightRow, PinRow
from warmstart.store.layout import Layout
from warmstart.store.locks import FileLock, Session, session_alive
from warmstart.store.model_dirs import ModelDirs
from warmstart.store.singleflight import SingleFlight

Doomed = list[tuple[Digest, FileLock]]  # blobs whose rows are gone; files to unlink, locks held


@dataclass(eq=False)
class SpaceKeeper:
    """The store's budget and eviction over its index, layout and session (no state of its own)."""

    index: Index
    layout: Layout
    session: Session
    flights: SingleFlight[Digest, Path]
    models: ModelDirs
    clock: Callable[[], float] = time.time

    def shared_blobs(self) -> dict[Digest, int]:
        """Blobs whose file has other hard links (containerd's content store links them):
        deleting the store's name frees no disk space. Links from the store's own materialised
        models do not count: those go with the model."""
        out: dict[Digest, int] = {}
        own_links = self.index.model_links()  # materialised models: this store's own names
        for digest, size in self.index.blob_sizes().items():
            try:
                if self.layout.blob_path(digest).stat().st_nlink > 1 + own_links.get(digest, 0):
                    out[digest] = size
            except FileNotFoundError:
                continue
        return out

    def reserve(self, digest: Digest, size: int, budget: int | None) -> None:
        """Record a write in flight, evicting first if the budget needs room for ``size``."""
        doomed: Doomed = []
        try:
            with self.index.transaction():
                if budget is not None:
                    doomed = self.make_room(digest, size, budget)
                self.index.add_inflight(digest, size, self.session.id, os.getpid(), self.clock())
        except BaseException:
            for _, lock in doomed:
                lock.release()
            raise
        if doomed:  # evicted models' directories hold links to the blobs: they go too
            self.models.drop(self.models.orphans(self.snapshot().protected))
        self.delete_files(doomed)

    def make_room(self, digest: Digest, size: int, budget: int) -> Doomed:
        """Inside a transaction: drop the rows of what must go; returns the files to delete."""
        self.prune_sessions()
        shared = self.shared_blobs()  # linked by containerd: deleting them frees nothing
        usage = self.index.usage() + self.index.extracted_usage() - sum(shared.values())
        reserved = sum(r.size for r in self.index.inflight() if r.digest != digest)
        need = usage + reserved + size - budget
        if need <= 0:
            return []
        if size > budget:
            raise BudgetExceeded(
                f"blob {digest} is {format_bytes(size)}, more than the whole store budget of "
                f"{format_bytes(budget)}: raise the budget"
            )
        snap = replace(self.snapshot(), shared=frozenset(shared))
        while True:
            plan = plan_eviction(snap, need)
            if not plan.ok:
                blocked = unfreeable_bytes(snap)
                pinned_images = sum(1 for i in snap.images if i.pinned)
                raise BudgetExceeded(
                    f"no room for {format_bytes(size)} ({digest.short}) in the store budget of "
                    f"{format_bytes(budget)}: {format_bytes(usage)} is stored, "
                    f"{format_bytes(blocked)} of it pinned or in use ({pinned_images} pinned "
                    f"images), {format_bytes(reserved)} reserved by writes in progress; raise "
                    "the budget or unpin images"
                )
            locked, busy = self.lock_all(plan.blobs)
            if not busy:
                break
            for _, lock in locked:
                lock.release()
            snap = replace(snap, protected=snap.protected | busy)
        self.index.remove_images(plan.images)
        self.index.remove_blobs(d for d, _ in locked)
        return locked

    def lock_all(self, digests: Iterable[Digest]) -> tuple[Doomed, frozenset[Digest]]:
        """Take the per-digest locks that are free; report the busy ones."""
        locked: Doomed = []
        busy: set[Digest] = set()
        for digest in digests:
            lock = FileLock(self.layout.lock_path(digest))
            if lock.try_acquire():
                locked.append((digest, lock))
            else:
                busy.add(digest)
        return locked, frozenset(busy)

    def delete_files(self, doomed: Doomed) -> None:
        for digest, lock in doomed:
            try:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.layout.blob_path(digest))
            finally:
                lock.release(unlink=True)

    def remove_corrupt(self, digest: Digest) -> bool:
        locked, _ = self.lock_all([digest])
        if not locked:
            return False
        try:
            self.index.remove_blobs([digest])
        except BaseException:
            locked[0][1].release()
            raise
        self.delete_files(locked)
        return True

    def alive(self, session: str) -> bool:
        return session == self.session.id or session_alive(self.layout.sessions_dir, session)

    def prune_sessions(self) -> int:
        """Drop pins and in-flight rows of stores that died; returns the pins dropped."""
        dead = {s for s in self.index.sessions() if not self.alive(s)}
        return self.index.drop_sessions(dead) if dead else 0

    def alive_map(self, sessions: Iterable[str]) -> dict[str, bool]:
        return {s: self.alive(s) for s in set(sessions)}

    def live_pins(self) -> list[PinRow]:
        pins = self.index.pins()
        alive = self.alive_map(p.session for p in pins)
        return [p for p in pins if alive[p.session]]

    def live_inflight(self) -> list[InflightRow]:
        rows = self.index.inflight()
        alive = self.alive_map(r.session for r in rows)
        return [r for r in rows if alive[r.session]]

    def snapshot(self) -> StoreSnapshot:
        pins = self.live_pins()
        pinned_refs = {p.reference for p in pins if p.reference is not None}
        pinned: set[Digest] = set()
        for p in pins:
            pinned.update(p.digests)
        protected = pinned | {r.digest for r in self.live_inflight()} | self.flights.keys()
        image_blobs = self.index.image_blobs()
        images = tuple(
            ImageUsage(
                row.reference,
                row.last_used,
                frozenset(b.digest for b in image_blobs.get(row.reference, ()))
                | {row.manifest_digest},
                pinned=row.reference in pinned_refs or row.manifest_digest in pinned,
            )
            for row in self.index.images()
        )
        return StoreSnapshot(images, self.index.blob_sizes(), frozenset(protected))


__all__ = ["Doomed", "SpaceKeeper"]
