"""Who holds which pieces of a blob: the tracker a digest's home keeps, and its wire format.

Every node that takes part in a piece transfer keeps a :class:`Tracker` for the blob: its
piece list (SHA-256 per piece, ``None`` where nobody has published one yet) and what each
other node holds. On the home it is the cluster's: downloaders announce what they hold and
ask for news at ``POST /pieces/<digest>?ns=<registry>`` (:class:`PiecesRequest` in,
:meth:`Tracker.answer` out, long-polled: the answer waits until something changed). On the
others it is what the home last said, so when the home dies the next node in the digest's
rendezvous order already knows the list and the holders, and answers in its place.

No aiohttp here; the waiting is an :class:`asyncio.Event`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from warmstart.fetch.pieces import Holder, decode_bits, encode_bits
from warmstart.fetch.rendezvous import node_key
from warmstart.store.piece_geometry import Pieces

MAX_PIECES = 1 << 20
MAX_WAIT = 5.0
_HEX = re.compile(r"^[0-9a-f]{64}$")


class PiecesInvalid(ValueError):
    """A request or answer of the piece protocol that does not parse (a 400, or a tracker
    that is not used)."""


def _int(data: Mapping[str, Any], key: str, low: int = 0) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise PiecesInvalid(f"{key!r} must be an integer >= {low}")
    return value


def _hashes(value: Any, count: int) -> list[str | None]:
    if not isinstance(value, list) or len(value) != count:
        raise PiecesInvalid(f"'hashes' must be a list of {count} entries")
    out: list[str | None] = []
    for h in value:
        if h is not None and (not isinstance(h, str) or not _HEX.match(h)):
            raise PiecesInvalid("a piece hash must be 64 lower-case hex digits or null")
        out.append(h)
    return out


def _pieces(data: Any, what: str) -> Pieces:
    """The blob's pieces a message of the protocol names (``size``, ``piece_size``);
    ``data`` (``what``: the body, the answer) must be a JSON object."""
    if not isinstance(data, Mapping):
        raise PiecesInvalid(f"{what} must be a JSON object")
    size = _int(data, "size", 1)
    piece_size = _int(data, "piece_size", 1)
    pieces = Pieces(size, piece_size)
    if pieces.count > MAX_PIECES:
        raise PiecesInvalid(f"{pieces.count} pieces: at most {MAX_PIECES}")
    return pieces


@dataclass(frozen=True)
class PiecesRequest:
    """What a downloader sends the tracker: the blob, what it holds (and the hashes it knows:
    a node standing in for a home that died learns them so), holders it found gone, and how
    long to wait for news past ``version``."""

    repository: str
    pieces: Pieces
    url: str
    have: frozenset[int]
    served: int = 0
    hashes: tuple[str | None, ...] | None = None
    gone: tuple[str, ...] = ()
    version: int = -1
    wait: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "size": self.pieces.size,
            "piece_size": self.pieces.piece_size,
            "url": self.url,
            "have": encode_bits(self.have, self.pieces.count),
            "served": self.served,
            "hashes": list(self.hashes) if self.hashes is not None else None,
            "gone": list(self.gone),
            "version": self.version,
            "wait": self.wait,
        }

    @classmethod
    def parse(cls, data: Any) -> PiecesRequest:
        pieces = _pieces(data, "the body")
        repository = data.get("repository")
        url = data.get("url")
        if not isinstance(repository, str) or not repository:
            raise PiecesInvalid("'repository' must be a repository name")
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            raise PiecesInvalid("'url' must be the asking agent's URL")
        have = data.get("have")
        if not isinstance(have, str):
            raise PiecesInvalid("'have' must be a base64 bitfield")
        try:
            bits = decode_bits(have, pieces.count)
        except ValueError as e:
            raise PiecesInvalid(f"'have': {e}") from None
        hashes = data.get("hashes")
        gone = data.get("gone") or []
        if not isinstance(gone, list) or not all(isinstance(g, str) for g in gone):
            raise PiecesInvalid("'gone' must be a list of URLs")
        wait = data.get("wait", 0)
        if not isinstance(wait, int | float) or isinstance(wait, bool) or wait < 0:
            raise PiecesInvalid("'wait' must be a number of seconds >= 0")
        version = data.get("version", -1)
        if not isinstance(version, int) or isinstance(version, bool):
            raise PiecesInvalid("'version' must be an integer")
        return cls(
            repository,
            pieces,
            node_key(url),
            bits,
            _int(data, "served"),
            tuple(_hashes(hashes, pieces.count)) if hashes is not None else None,
            tuple(node_key(g) for g in gone[:64]),
            version,
            min(float(wait), MAX_WAIT),
        )


@dataclass(frozen=True)
class PiecesAnswer:
    """The tracker's answer: the piece list so far, every holder (the tracker included) and
    the version of that state."""

    pieces: Pieces
    hashes: tuple[str | None, ...]
    holders: Mapping[str, Holder]
    version: int

    def to_json(self) -> dict[str, Any]:
        count = self.pieces.count
        return {
            "size": self.pieces.size,
            "piece_size": self.pieces.piece_size,
            "hashes": list(self.hashes),
            "holders": {
                url: {"have": encode_bits(h.have, count), "served": h.served}
                for url, h in self.holders.items()
            },
            "version": self.version,
        }

    @classmethod
    def parse(cls, data: Any) -> PiecesAnswer:
        pieces = _pieces(data, "the answer")
        hashes = tuple(_hashes(data.get("hashes"), pieces.count))
        raw = data.get("holders")
        if not isinstance(raw, Mapping) or len(raw) > 4096:
            raise PiecesInvalid("'holders' must be an object")
        holders: dict[str, Holder] = {}
        for url, entry in raw.items():
            if not isinstance(entry, Mapping) or not isinstance(entry.get("have"), str):
                raise PiecesInvalid("a holder must be {'have': bitfield, 'served': n}")
            try:
                have = decode_bits(entry["have"], pieces.count)
            except ValueError as e:
                raise PiecesInvalid(f"holder {url}: {e}") from None
            holders[node_key(str(url))] = Holder(have, _int(entry, "served"))
        return cls(pieces, hashes, holders, _int(data, "version"))


@dataclass(eq=False)
class Tracker:
    """The piece list and the holders of one blob, as this node knows them."""

    pieces: Pieces
    hashes: list[str | None] = field(default_factory=list)
    holders: dict[str, Holder] = field(default_factory=dict)
    version: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if not self.hashes:
            self.hashes = [None] * self.pieces.count

    def _bump(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    @property
    def hashed(self) -> frozenset[int]:
        return frozenset(i for i, h in enumerate(self.hashes) if h is not None)

    def set_hash(self, index: int, hex_: str) -> None:
        """The hash of a piece this node filled itself (its own bytes: it wins)."""
        if self.hashes[index] != hex_:
            self.hashes[index] = hex_
            self._bump()

    def learn_hashes(self, hashes: Sequence[str | None]) -> None:
        """Take the hashes this tracker does not know yet (the first one heard wins: a wrong
        one costs a refused piece or, at worst, a whole blob that does not verify)."""
        changed = False
        for i, h in enumerate(hashes):
            if h is not None and self.hashes[i] is None:
                self.hashes[i] = h
                changed = True
        if changed:
            self._bump()

    def announce(self, url: str, have: frozenset[int], served: int) -> None:
        old = self.holders.get(url)
        new = Holder(have | (old.have if old is not None else frozenset()), served)
        if old != new:
            self.holders[url] = new
            self._bump()

    def learn_holders(self, holders: Mapping[str, Holder], me: str) -> None:
        """What another tracker said (each holder's entry replaced; this node's own left)."""
        changed = False
        for url, h in holders.items():
            if url != me and self.holders.get(url) != h:
                self.holders[url] = h
                changed = True
        if changed:
            self._bump()

    def forget(self, urls: Iterable[str]) -> None:
        gone = [u for u in urls if u in self.holders]
        for url in gone:
            del self.holders[url]
        if gone:
            self._bump()

    def drop_piece(self, url: str, index: int) -> None:
        """``url`` said it does not hold ``index`` after all."""
        h = self.holders.get(url)
        if h is not None and index in h.have:
            self.holders[url] = Holder(h.have - {index}, h.served)
            self._bump()

    def poke(self) -> None:
        """Something this node holds changed: wake those waiting for news."""
        self._bump()

    async def wait(self, version: int, seconds: float) -> None:
        """Until the state is newer than ``version``, at most ``seconds``."""
        if self.version != version or seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._changed.wait()

    def answer(self, me: str, have: frozenset[int], served: int) -> PiecesAnswer:
        holders = dict(self.holders)
        holders[me] = Holder(have, served)
        return PiecesAnswer(self.pieces, tuple(self.hashes), holders, self.version)


__all__ = ["PiecesAnswer", "PiecesInvalid", "PiecesRequest", "Tracker"]
