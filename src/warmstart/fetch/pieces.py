"""Pieces: how a big blob travels between nodes, decided without I/O and without a clock.

A blob of at least ``threshold`` bytes, in a cluster of three nodes or more, travels between
nodes as *pieces*: byte ranges of the blob, ``piece_size`` bytes each (the last may be
shorter), fetched with the ordinary blob route and a ``Range`` header. The digest's home node
fetches the blob from the upstream once, hashes every piece while it streams and publishes the
list (SHA-256 per piece); every node checks each piece it receives against that list, and the
whole blob against its digest before it keeps it.

Here: the piece size rule (:func:`piece_size_for`), the geometry of a blob's pieces
(:class:`Pieces`), the have-bitfields nodes exchange (:func:`encode_bits`,
:func:`decode_bits`), the planner that decides which piece to fetch from whom
(:func:`plan_pieces`), and the bound on a node's concurrent uploads (:class:`UploadSlots`).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from warmstart.store.piece_geometry import Pieces

MiB = 1 << 20
PIECE_MIN = 8 * MiB
PIECE_MAX = 64 * MiB
# A blob is cut into about this many pieces, within PIECE_MIN..PIECE_MAX. Measured (issue 17,
# 4 and 16 nodes, a 1 GiB layer at 100 Mbit/s): 32 MiB pieces (blob / 64) left each relaying
# node's uplink idle a third of the time and every node done at 1.5-1.7x one node's transfer;
# 8 MiB pieces with 4 upload slots, 1.2x.
TARGET_PIECES = 256
PIECE_THRESHOLD = 64 * MiB  # smaller blobs travel whole, as before
MIN_NODES = 3  # with one or two nodes the whole-blob path is as good: the home streams to one


def piece_size_for(
    size: int, *, smallest: int = PIECE_MIN, largest: int = PIECE_MAX, target: int = TARGET_PIECES
) -> int:
    """The piece size of a blob of ``size`` bytes: the power of two nearest above
    ``size / target``, kept within ``smallest..largest`` (up to 2 GiB -> 8 MiB pieces, 4 GiB ->
    16 MiB, 16 GiB -> 64 MiB, so 256 pieces). Every node computes the same from the same
    settings; a tracker's answer with another size is not used."""
    if size < 0:
        raise ValueError(f"blob size must be >= 0, not {size}")
    if smallest < 1 or largest < smallest or target < 1:
        raise ValueError(f"bad piece size bounds {smallest}..{largest} / {target}")
    want = max(1, -(-size // target))
    piece = 1 << (want - 1).bit_length()
    return max(smallest, min(largest, piece))


def use_pieces(size: int | None, nodes: int, *, threshold: int = PIECE_THRESHOLD) -> bool:
    """Whether a blob of ``size`` bytes (None: not known yet) travels as pieces in a cluster of
    ``nodes`` nodes (this one included)."""
    return size is not None and size >= threshold and size > 0 and nodes >= MIN_NODES


def encode_bits(have: Iterable[int], count: int) -> str:
    """A set of piece indexes as a base64 bitfield (piece 0 = the high bit of byte 0)."""
    buf = bytearray(-(-count // 8))
    for i in have:
        if not 0 <= i < count:
            raise ValueError(f"piece {i} is not one of {count}")
        buf[i >> 3] |= 0x80 >> (i & 7)
    return base64.b64encode(bytes(buf)).decode("ascii")


def decode_bits(text: str, count: int) -> frozenset[int]:
    """The piece indexes of a base64 bitfield of ``count`` pieces; ValueError if it is not
    one (wrong length, bits past the last piece)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise ValueError("bitfield is not base64") from None
    if len(raw) != -(-count // 8):
        raise ValueError(f"bitfield of {len(raw)} bytes for {count} pieces")
    out = [i for i in range(count) if raw[i >> 3] & (0x80 >> (i & 7))]
    spare = len(raw) * 8 - count
    if spare and raw[-1] & ((1 << spare) - 1):
        raise ValueError("bitfield has bits past the last piece")
    return frozenset(out)


def _spread(seed: str, item: str) -> int:
    """A stable pseudo-random order per node: nodes that see the same choices pick apart."""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{item}".encode()).digest()[:8], "big")


@dataclass(frozen=True)
class Holder:
    """What a node holds of a blob, as the tracker last heard: its verified pieces and how
    many pieces it has uploaded to others so far."""

    have: frozenset[int]
    served: int = 0


@dataclass(frozen=True)
class Fetch:
    """Fetch ``piece`` from the peer ``peer``."""

    piece: int
    peer: str


@dataclass(frozen=True)
class PiecePlan:
    """What to do next: ``fetches`` to start now; ``stranded`` pieces whose hash is known but
    that no usable holder has (for the home, or after a while, the upstream); ``unhashed``
    pieces nobody has published a hash for yet (only the home fills those)."""

    fetches: tuple[Fetch, ...] = ()
    stranded: tuple[int, ...] = ()
    unhashed: tuple[int, ...] = ()


def plan_pieces(
    *,
    count: int,
    hashed: Iterable[int],
    have: Iterable[int],
    in_flight: Iterable[int],
    holders: Mapping[str, Holder],
    me: str,
    slots: int,
    loads: Mapping[str, int] | None = None,
    per_peer: int = 1,
    excluded: Iterable[str] = (),
    unusable: Iterable[str] = (),
) -> PiecePlan:
    """Which pieces to fetch from whom, best first.

    Wanted: pieces with a known hash (``hashed``) that this node (``me``) neither has nor is
    fetching. Rarest first: fewest usable holders, ties in an order of this node's own (so
    nodes that see the same table ask for different pieces). From the usable holder with the
    fewest of this node's fetches running (``loads``), then the fewest pieces served, then this
    node's own order. A holder is usable unless ``excluded`` for this blob (it sent a bad
    piece), ``unusable`` for now (down, or busy: it answered 503), or already serving this node
    ``per_peer`` pieces. At most ``slots`` fetches are started."""
    hashed_set = set(hashed)
    mine = set(have) | set(in_flight)
    skip = set(excluded) | {me}
    not_now = set(unusable)
    load = dict(loads or {})
    wanted = [i for i in range(count) if i in hashed_set and i not in mine]
    candidates: dict[int, list[str]] = {}
    stranded: list[int] = []
    for piece in wanted:
        peers = [p for p, h in holders.items() if p not in skip and piece in h.have]
        usable = [p for p in peers if p not in not_now]
        if usable:
            candidates[piece] = usable
        elif not peers:
            stranded.append(piece)
    order = sorted(candidates, key=lambda i: (len(candidates[i]), _spread(me, str(i))))
    fetches: list[Fetch] = []
    for piece in order:
        if len(fetches) >= slots:
            break
        free = [p for p in candidates[piece] if load.get(p, 0) < per_peer]
        if not free:
            continue
        best = min(free, key=lambda p: (load.get(p, 0), holders[p].served, _spread(me, p)))
        load[best] = load.get(best, 0) + 1
        fetches.append(Fetch(piece, best))
    unhashed = tuple(i for i in range(count) if i not in hashed_set and i not in mine)
    return PiecePlan(tuple(fetches), tuple(stranded), unhashed)


def orphans(
    *, count: int, have: Iterable[int], in_flight: Iterable[int], holders: Mapping[str, Holder]
) -> tuple[int, ...]:
    """Pieces that neither this node nor any holder in ``holders`` has, and that nobody here
    is fetching: what the home fills from the upstream (hashing them as they arrive)."""
    held = set(have) | set(in_flight)
    for h in holders.values():
        held |= h.have
    return tuple(i for i in range(count) if i not in held)


def runs(pieces: Iterable[int]) -> list[tuple[int, int]]:
    """Consecutive pieces as (first, one past the last) runs: one upstream request each."""
    out: list[tuple[int, int]] = []
    for i in sorted(set(pieces)):
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


HOLD_OFF = 2.0  # seconds the home waits for a piece's first copy to be held elsewhere


def serve_again(
    sent: int, others_holding: int, since_first: float, *, hold_off: float = HOLD_OFF
) -> bool:
    """Whether the home sends a piece once more (like BitTorrent's super-seeding). It has sent
    it ``sent`` times, the first ``since_first`` seconds ago, and ``others_holding`` other nodes
    hold it now. The first copy always; later ones only when nobody else holds the piece
    ``hold_off`` seconds after the first went out (the node that got it may have died). So the
    home's link carries new pieces, and the copies travel between the other nodes."""
    if sent == 0:
        return True
    if others_holding > 0:
        return False
    return since_first >= hold_off


class UploadSlots:
    """At most ``limit`` piece uploads at once on this node; more are refused (503 with
    ``Retry-After``), so the asker picks another holder and a node that is still downloading
    keeps most of its own link."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"upload slots must be >= 1, not {limit}")
        self.limit = limit
        self.busy = 0
        self.refused = 0

    def take(self) -> bool:
        if self.busy >= self.limit:
            self.refused += 1
            return False
        self.busy += 1
        return True

    def give(self) -> None:
        if self.busy <= 0:
            raise RuntimeError("an upload slot was given back that was never taken")
        self.busy -= 1


__all__ = [
    "MIN_NODES",
    "PIECE_MAX",
    "PIECE_MIN",
    "PIECE_THRESHOLD",
    "TARGET_PIECES",
    "Fetch",
    "Holder",
    "PiecePlan",
    "Pieces",
    "UploadSlots",
    "decode_bits",
    "encode_bits",
    "orphans",
    "piece_size_for",
    "plan_pieces",
    "runs",
    "serve_again",
    "use_pieces",
]
