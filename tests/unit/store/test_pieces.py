"""A blob written as pieces in any order: each piece hashed while written and accepted only
with its hash, the whole blob hashed along the prefix, readers following the prefix in
order, a bad piece list leaving nothing, a dead writer's pieces adopted only if they verify."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.unit.store.helpers import blob
from warmstart.oci import Digest
from warmstart.store import ContentStore, StoreDigestMismatch
from warmstart.store.piece_geometry import Pieces
from warmstart.store.pieces import PieceCorrupt, PieceFile, PieceShort

KiB = 1 << 10


def piece_hashes(data: bytes, pieces: Pieces) -> list[str]:
    return [hashlib.sha256(data[slice(*pieces.span(i))]).hexdigest() for i in range(pieces.count)]


async def write_piece(pf: PieceFile, data: bytes, index: int, expected: str | None) -> str:
    sink = pf.sink(index, expected)
    start, end = pf.pieces.span(index)
    for pos in range(start, end, 7 * KiB):  # in uneven chunks
        await sink.write(data[pos : min(end, pos + 7 * KiB)])
    got = sink.close()
    await pf.verified(index)
    return got


async def read_all(store: ContentStore, digest: Digest, start: int = 0) -> bytes:
    out = bytearray()
    async for chunk in store.open_reader(digest, start):
        out += chunk
    return bytes(out)


async def test_pieces_out_of_order_make_the_blob(store: ContentStore) -> None:
    data, digest = blob(100 * KiB + 3)
    pieces = Pieces(len(data), 16 * KiB)
    hashes = piece_hashes(data, pieces)
    prefixes: list[int] = []

    async def run(pf: PieceFile) -> None:
        for i in [3, 1, 6, 0, 2, 5, 4]:
            assert await write_piece(pf, data, i, hashes[i]) == hashes[i]
            prefixes.append(pf.prefix)
        assert pf.complete

    path = await store.fetch_pieces(digest, pieces, run)
    assert path.read_bytes() == data
    assert store.has(digest) and store.blob_size(digest) == len(data)
    # the prefix grows only over consecutive accepted pieces
    assert prefixes == [0, 0, 0, 32 * KiB, 64 * KiB, 64 * KiB, len(data)]
    assert not store.layout.pieces_path(digest).exists()
    assert store.verify().ok


async def test_a_bad_piece_is_refused_and_can_be_written_again(store: ContentStore) -> None:
    data, digest = blob(64 * KiB)
    pieces = Pieces(len(data), 16 * KiB)
    hashes = piece_hashes(data, pieces)

    async def run(pf: PieceFile) -> None:
        bad = bytearray(data)
        bad[20 * KiB] ^= 0xFF
        sink = pf.sink(1, hashes[1])
        await sink.write(bytes(bad[16 * KiB : 32 * KiB]))
        with pytest.raises(PieceCorrupt):
            sink.close()
        assert 1 not in pf.have and pf.prefix == 0
        short = pf.sink(2, hashes[2])
        await short.write(data[32 * KiB : 40 * KiB])
        with pytest.raises(PieceShort):
            short.close()
        too_long = pf.sink(3, hashes[3])
        with pytest.raises(PieceShort):
            await too_long.write(data[48 * KiB :] + b"x")
        for i in range(4):
            await write_piece(pf, data, i, hashes[i])

    await store.fetch_pieces(digest, pieces, run)
    assert store.blob_path(digest).read_bytes() == data


async def test_a_wrong_piece_list_keeps_nothing(store: ContentStore) -> None:
    data, digest = blob(48 * KiB)
    other = bytes(len(data))  # every piece "verifies" against a list made from other bytes
    pieces = Pieces(len(data), 16 * KiB)

    async def run(pf: PieceFile) -> None:
        for i in range(pieces.count):
            await write_piece(pf, other, i, None)

    with pytest.raises(StoreDigestMismatch):
        await store.fetch_pieces(digest, pieces, run)
    assert not store.has(digest)
    assert not store.layout.pieces_path(digest).exists()
    assert store.usage() == 0


async def test_readers_follow_the_prefix_in_order(store: ContentStore) -> None:
    data, digest = blob(80 * KiB)
    pieces = Pieces(len(data), 16 * KiB)
    hashes = piece_hashes(data, pieces)
    gate = asyncio.Event()
    written = asyncio.Event()

    async def run(pf: PieceFile) -> None:
        for i in (4, 2, 1):  # nothing contiguous from 0 yet: readers must wait
            await write_piece(pf, data, i, hashes[i])
        written.set()
        await gate.wait()
        await write_piece(pf, data, 0, hashes[0])
        await asyncio.sleep(0.05)
        await write_piece(pf, data, 3, hashes[3])

    fetch = asyncio.create_task(store.fetch_pieces(digest, pieces, run))
    await written.wait()
    assert store.piece_file(digest) is not None
    reader = asyncio.create_task(read_all(store, digest))
    late = asyncio.create_task(read_all(store, digest, 40 * KiB))
    await asyncio.sleep(0.05)
    assert not reader.done()  # holes are never read as data
    gate.set()
    assert await reader == data
    assert await late == data[40 * KiB :]
    await fetch
    assert store.piece_file(digest) is None
    assert await read_all(store, digest, 10) == data[10:]


async def test_a_reader_gets_the_writers_error(store: ContentStore) -> None:
    data, digest = blob(32 * KiB)
    pieces = Pieces(len(data), 16 * KiB)
    started = asyncio.Event()

    async def run(pf: PieceFile) -> None:
        await write_piece(pf, data, 1, None)
        started.set()
        await asyncio.sleep(0.05)
        raise RuntimeError("every source failed")

    fetch = asyncio.create_task(store.fetch_pieces(digest, pieces, run))
    await started.wait()
    with pytest.raises(Exception, match="every source failed"):
        await read_all(store, digest)
    with pytest.raises(RuntimeError):
        await fetch
    assert not store.has(digest)


async def test_a_dead_writers_pieces_are_adopted_only_if_they_verify(
    root: Path, store: ContentStore
) -> None:
    data, digest = blob(64 * KiB)
    pieces = Pieces(len(data), 16 * KiB)
    hashes = piece_hashes(data, pieces)
    # What a writer that died leaves: pieces 0 and 2 written, piece 1 half, piece 3 a hole.
    path = store.layout.pieces_path(digest)
    left = bytearray(len(data))
    left[0 : 16 * KiB] = data[0 : 16 * KiB]
    left[32 * KiB : 48 * KiB] = data[32 * KiB : 48 * KiB]
    left[16 * KiB : 24 * KiB] = data[16 * KiB : 24 * KiB]
    path.write_bytes(bytes(left))
    adopted: list[int] = []

    async def run(pf: PieceFile) -> None:
        for i in range(pieces.count):
            if await pf.adopt(i, hashes[i]):
                adopted.append(i)
        for i in range(pieces.count):
            if i not in pf.have:
                await write_piece(pf, data, i, hashes[i])

    await store.fetch_pieces(digest, pieces, run)
    assert adopted == [0, 2]
    assert store.blob_path(digest).read_bytes() == data


async def test_a_whole_blob_write_removes_a_piece_files_leftover(store: ContentStore) -> None:
    from tests.unit.store.helpers import MemorySource

    data, digest = blob(32 * KiB)
    path = store.layout.pieces_path(digest)
    path.write_bytes(b"x" * 100)
    await store.fetch(digest, len(data), MemorySource(data))
    assert not path.exists()
    assert store.blob_path(digest).read_bytes() == data


async def test_a_cancelled_acceptance_still_hashes_the_prefix_once(store: ContentStore) -> None:
    """A task cancelled while the whole-blob hash catches up (the transfer ends as soon as the
    last piece is accepted) must leave the hash right: the pass runs to its end, once."""
    data, digest = blob(4 << 20)
    pieces = Pieces(len(data), 1 << 20)
    hashes = piece_hashes(data, pieces)

    async def run(pf: PieceFile) -> None:
        for i in range(pieces.count):
            sink = pf.sink(i, hashes[i])
            await sink.write(data[slice(*pieces.span(i))])
            sink.close()
            accept = asyncio.create_task(pf.verified(i))
            await asyncio.sleep(0)  # it has started hashing
            accept.cancel()
            with pytest.raises(asyncio.CancelledError):
                await accept

    path = await store.fetch_pieces(digest, pieces, run)
    assert path.read_bytes() == data


async def test_small_chunks_are_hashed_and_written_a_megabyte_at_a_time(
    store: ContentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A socket hands a piece over a few KiB at a time; a thread hop for each would cost more
    than the hashing (a 16-node fan-out spent most of its CPU there)."""
    import warmstart.store.pieces as pieces_mod

    hand_offs: list[int] = []
    real = pieces_mod._hash_and_write

    def counted(fd: int, hasher: Any, data: bytes, offset: int) -> None:
        hand_offs.append(len(data))
        real(fd, hasher, data, offset)

    monkeypatch.setattr(pieces_mod, "_hash_and_write", counted)
    size = 4 * pieces_mod.HAND_OFF + 5 * KiB
    data, digest = blob(size)
    pieces = Pieces(len(data), 2 * pieces_mod.HAND_OFF)
    hashes = piece_hashes(data, pieces)

    async def run(pf: PieceFile) -> None:
        for i in (2, 0, 1):  # 7 KiB chunks: about 600 a piece
            assert await write_piece(pf, data, i, hashes[i]) == hashes[i]

    path = await store.fetch_pieces(digest, pieces, run)
    assert path.read_bytes() == data
    assert sum(hand_offs) == size
    assert len(hand_offs) <= 2 + 2 + 1 + 3  # a megabyte at a time, and each piece's tail
