"""What this node holds and tells of blobs that travel as pieces (see
:mod:`warmstart.fetch.pieces`).

:class:`PieceBook` keeps the trackers of the blobs this node takes part in (its own as a home,
or one learnt from the home), the pieces it has uploaded (and whether it sends a piece again,
:func:`~warmstart.fetch.pieces.serve_again`), the answers its tracker route gives, and the
requests this node sends to a home's tracker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from warmstart.fetch.cache import LRUMap
from warmstart.fetch.peer_ring import PeerHealth, PeerRing
from warmstart.fetch.pieces import serve_again
from warmstart.fetch.run import Transfer
from warmstart.fetch.tracker import PiecesAnswer, PiecesRequest, Tracker
from warmstart.oci import Digest
from warmstart.store import ContentStore
from warmstart.store.piece_geometry import Pieces
from warmstart.store.pieces import PIECE_HASH
from warmstart.store.singleflight import SingleFlight


@dataclass
class _Counts:
    served: int = 0  # pieces this node uploaded
    pieces: dict[int, tuple[int, float]] = field(default_factory=dict)  # index: (sent, first)


class PieceBook:
    """The piece side of one node's store: trackers and upload counts, per digest."""

    def __init__(
        self,
        store: ContentStore,
        ring: PeerRing,
        health: PeerHealth,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_trackers: int = 1024,
    ) -> None:
        self.store = store
        self.ring = ring
        self.health = health
        self.clock = clock
        self.trackers: LRUMap[Digest, Tracker] = LRUMap(max_trackers)
        self._counts: LRUMap[Digest, _Counts] = LRUMap(max_trackers)
        self._hashing: SingleFlight[Digest, Tracker] = SingleFlight()

    def have(self, digest: Digest, pieces: Pieces) -> frozenset[int]:
        if self.store.has(digest):
            return frozenset(range(pieces.count))
        pf = self.store.piece_file(digest)
        if pf is not None and pf.pieces == pieces:
            return frozenset(pf.have)
        return frozenset()

    def served(self, digest: Digest) -> int:
        counts = self._counts.get(digest)
        return counts.served if counts is not None else 0

    def _counts_of(self, digest: Digest) -> _Counts:
        counts = self._counts.get(digest)
        if counts is None:
            counts = _Counts()
            self._counts.put(digest, counts)
        return counts

    def piece_sent(self, digest: Digest, start: int) -> None:
        """The piece of ``digest`` at byte ``start`` went out to a peer."""
        self._counts_of(digest).served += 1

    def may_send(self, digest: Digest, start: int) -> bool:
        """Whether this node sends the piece at ``start`` now (:func:`serve_again`), and if so
        count the copy from now (a copy on its way counts: a second asker meanwhile goes to
        whoever holds it first). Only the node that keeps the blob's tracker while its own
        transfer runs holds back; a node that merely holds pieces serves what it has."""
        tracker = self.trackers.get(digest)
        if tracker is None or self.store.piece_file(digest) is None:
            return True
        if not self.ring.is_home(digest) or start % tracker.pieces.piece_size:
            return True
        index = start // tracker.pieces.piece_size
        counts = self._counts_of(digest)
        sent, first = counts.pieces.get(index, (0, 0.0))
        others = sum(
            1
            for url, h in tracker.holders.items()
            if url != self.ring.self_url and index in h.have and not self.health.is_down(url)
        )
        now = self.clock()
        if not serve_again(sent, others, now - first):
            return False
        counts.pieces[index] = (sent + 1, now if sent == 0 else first)
        return True

    def tracker(self, digest: Digest, pieces: Pieces) -> Tracker:
        """This node's tracker of the blob (a new one if it had none, or one of other pieces)."""
        t = self.trackers.get(digest)
        if t is None or t.pieces != pieces:
            t = Tracker(pieces)
            self.trackers.put(digest, t)
        return t

    async def tracker_of_file(self, digest: Digest, pieces: Pieces) -> Tracker:
        """The tracker of a blob this node holds whole: its piece list read from the file
        (once, in a thread)."""
        t = self.trackers.get(digest)
        if t is not None and t.pieces == pieces and None not in t.hashes:
            return t

        async def compute(_flight: object) -> Tracker:
            path = self.store.blob_path(digest)
            hashes = await asyncio.to_thread(_piece_hashes, path, pieces)
            tracker = self.tracker(digest, pieces)
            tracker.learn_hashes(hashes)
            return tracker

        return await self._hashing.do(digest, compute)

    def answer(self, digest: Digest, tracker: Tracker) -> PiecesAnswer:
        return tracker.answer(
            self.ring.self_url, self.have(digest, tracker.pieces), self.served(digest)
        )

    def request(
        self,
        t: Transfer,
        pieces: Pieces,
        tracker: Tracker,
        wait: float,
        *,
        gone: Iterable[str] = (),
        version: int = -1,
    ) -> PiecesRequest:
        return PiecesRequest(
            t.repository,
            pieces,
            self.ring.self_url,
            self.have(t.digest, pieces),
            self.served(t.digest),
            tuple(tracker.hashes),
            tuple(gone),
            version,
            wait,
        )


def _piece_hashes(path: Any, pieces: Pieces) -> list[str]:
    import hashlib

    out = []
    with open(path, "rb", buffering=0) as f:
        for i in range(pieces.count):
            start, end = pieces.span(i)
            hasher = hashlib.new(PIECE_HASH)
            f.seek(start)
            left = end - start
            while left:
                data = f.read(min(1 << 20, left))
                if not data:
                    raise OSError(f"{path} is shorter than {pieces.size} bytes")
                hasher.update(data)
                left -= len(data)
            out.append(hasher.hexdigest())
    return out


__all__ = ["PieceBook"]
