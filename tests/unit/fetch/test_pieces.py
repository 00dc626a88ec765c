"""The pure piece rules: size, geometry, bitfields, the planner, upload slots."""

from __future__ import annotations

import pytest

from warmstart.fetch.pieces import (
    Fetch,
    Holder,
    Pieces,
    UploadSlots,
    decode_bits,
    encode_bits,
    orphans,
    piece_size_for,
    plan_pieces,
    runs,
    use_pieces,
)

MiB = 1 << 20


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, 8 * MiB),
        (1, 8 * MiB),
        (64 * MiB, 8 * MiB),
        (512 * MiB, 8 * MiB),
        (1024 * MiB + 1536, 8 * MiB),  # a 1 GiB file in a tar layer: 129 pieces
        (2048 * MiB, 8 * MiB),
        (2048 * MiB + 1, 16 * MiB),
        (8192 * MiB + 1, 64 * MiB),
        (16 * 1024 * MiB, 64 * MiB),
        (100 * 1024 * MiB, 64 * MiB),
    ],
)
def test_piece_size_scales_with_the_blob_within_bounds(size: int, expected: int) -> None:
    assert piece_size_for(size) == expected


def test_piece_size_with_small_bounds_for_tests() -> None:
    assert piece_size_for(80 * MiB, smallest=MiB, largest=4 * MiB, target=64) == 2 * MiB
    assert piece_size_for(80 * MiB, smallest=MiB, largest=MiB) == MiB
    with pytest.raises(ValueError):
        piece_size_for(10, smallest=4, largest=2)


@pytest.mark.parametrize(
    ("size", "nodes", "expected"),
    [
        (None, 8, False),  # size unknown: the whole-blob path
        (64 * MiB, 3, True),
        (64 * MiB - 1, 8, False),  # below the threshold
        (512 * MiB, 2, False),  # two nodes: the home streams to the other, as before
        (512 * MiB, 1, False),
        (512 * MiB, 16, True),
    ],
)
def test_use_pieces(size: int | None, nodes: int, expected: bool) -> None:
    assert use_pieces(size, nodes, threshold=64 * MiB) is expected


def test_geometry() -> None:
    p = Pieces(10 * MiB + 5, 4 * MiB)
    assert p.count == 3
    assert p.span(0) == (0, 4 * MiB)
    assert p.span(2) == (8 * MiB, 10 * MiB + 5)
    assert p.length(2) == 2 * MiB + 5
    assert p.index_of(4 * MiB, 8 * MiB) == 1
    assert p.index_of(8 * MiB, 10 * MiB + 5) == 2
    assert p.index_of(4 * MiB, 5 * MiB) is None  # not a whole piece
    assert p.index_of(1, 4 * MiB) is None
    assert p.prefix({0, 2}) == 4 * MiB
    assert p.prefix({0, 1, 2}) == 10 * MiB + 5
    assert p.prefix(set()) == 0
    with pytest.raises(IndexError):
        p.span(3)


def test_bitfield_round_trip_and_refusals() -> None:
    have = {0, 3, 8, 9}
    text = encode_bits(have, 10)
    assert decode_bits(text, 10) == frozenset(have)
    assert decode_bits(encode_bits((), 10), 10) == frozenset()
    with pytest.raises(ValueError):
        decode_bits(text, 20)  # wrong length
    with pytest.raises(ValueError):
        decode_bits("!!", 10)  # not base64
    with pytest.raises(ValueError):
        decode_bits(encode_bits({12}, 16), 10)  # a bit past the last piece
    with pytest.raises(ValueError):
        encode_bits({10}, 10)


def H(*have: int, served: int = 0) -> Holder:
    return Holder(frozenset(have), served)


ME = "http://me"
A, B, C = "http://a", "http://b", "http://c"


def plan(**kw: object) -> tuple[Fetch, ...]:
    args: dict[str, object] = {
        "count": 4,
        "hashed": range(4),
        "have": (),
        "in_flight": (),
        "holders": {},
        "me": ME,
        "slots": 4,
    }
    args.update(kw)
    return plan_pieces(**args).fetches  # type: ignore[arg-type]


# (holders, other arguments, expected fetches)
PLANS = [
    pytest.param(
        {A: H(0, 1, 2, 3), B: H(0, 1, 3)},
        {"slots": 1},
        (Fetch(2, A),),  # piece 2 has one holder, the others two
        id="rarest first (one slot: the piece with one holder)",
    ),
    pytest.param(
        {A: H(0, 1), B: H(0, 1, 2), C: H(0, 1, 2, served=1)},
        {"count": 3, "hashed": range(3), "slots": 1},
        (Fetch(2, B),),
        id="rarest: piece 2 (two holders) before 0 and 1 (three)",
    ),
    pytest.param(
        {A: H(0, served=9), B: H(0, served=2), C: H(0, served=5)},
        {"count": 1, "hashed": [0]},
        (Fetch(0, B),),
        id="least-served holder",
    ),
    pytest.param(
        {A: H(0, 1, served=0), B: H(0, 1, served=5)},
        {"count": 2, "hashed": range(2)},
        (Fetch(0, A), Fetch(1, B)),
        id="one piece per peer at a time: the second goes to the other holder",
    ),
    pytest.param(
        {A: H(0, 1)},
        {"count": 2, "hashed": range(2)},
        (Fetch(0, A),),
        id="one holder, one piece at a time from it",
    ),
    pytest.param(
        {A: H(0, 1)},
        {"count": 2, "hashed": range(2), "per_peer": 2},
        (Fetch(0, A), Fetch(1, A)),
        id="per_peer 2",
    ),
    pytest.param(
        {A: H(0, 1, 2, 3)},
        {"have": [0, 1], "in_flight": [2]},
        (Fetch(3, A),),
        id="neither what it has nor what it fetches",
    ),
    pytest.param(
        {A: H(0, 1, 2, 3)},
        {"hashed": [0, 1]},
        (Fetch(0, A),),
        id="only pieces whose hash is known",
    ),
    pytest.param(
        {A: H(0, served=0), B: H(0, served=9)},
        {"count": 1, "hashed": [0], "excluded": [A]},
        (Fetch(0, B),),
        id="a peer that sent a bad piece is not asked again",
    ),
    pytest.param(
        {A: H(0, served=0), B: H(0, served=9)},
        {"count": 1, "hashed": [0], "unusable": [A]},
        (Fetch(0, B),),
        id="busy (503) or down: another holder",
    ),
    pytest.param(
        {A: H(0, 1, 2, 3), B: H(0, 1, 2, 3), C: H(0, 1, 2, 3)},
        {"slots": 2},
        None,  # two fetches, from two different peers
        id="slots bound the fetches",
    ),
    pytest.param(
        {A: H(0), B: H(0)},
        {"count": 1, "hashed": [0], "loads": {A: 1}, "per_peer": 2},
        (Fetch(0, B),),
        id="the holder with fewer of my fetches running",
    ),
    pytest.param(
        {ME: H(0, 1, 2, 3)},
        {},
        (),
        id="never from itself",
    ),
]


@pytest.mark.parametrize(("holders", "kw", "expected"), PLANS)
def test_plan_table(
    holders: dict[str, Holder], kw: dict[str, object], expected: tuple[Fetch, ...] | None
) -> None:
    got = plan(holders=holders, **kw)
    if expected is None:
        assert len(got) == 2 and len({f.peer for f in got}) == 2
    else:
        assert got == expected


def test_stranded_and_unhashed() -> None:
    result = plan_pieces(
        count=5,
        hashed=[0, 1, 2],
        have=[],
        in_flight=[],
        holders={A: H(0), B: H(1)},
        me=ME,
        slots=4,
        excluded=[B],
        unusable=[A],
    )
    assert result.fetches == ()
    # 0: its one holder is busy: wait, not stranded; 1: its one holder sent a bad piece;
    # 2: hashed, nobody holds it
    assert result.stranded == (1, 2)
    assert result.unhashed == (3, 4)


def test_nodes_with_the_same_view_ask_for_different_pieces() -> None:
    holders = {A: H(*range(16)), B: H(*range(16)), C: H(*range(16))}
    firsts = {
        plan_pieces(
            count=16, hashed=range(16), have=(), in_flight=(), holders=holders, me=m, slots=1
        ).fetches[0]
        for m in (f"http://n{i}" for i in range(6))
    }
    assert len({f.piece for f in firsts}) > 1
    assert len({f.peer for f in firsts}) > 1


def test_orphans_and_runs() -> None:
    got = orphans(count=8, have=[0], in_flight=[5], holders={A: H(1, 2), B: H(2)})
    assert got == (3, 4, 6, 7)
    assert runs(got) == [(3, 5), (6, 8)]
    assert runs([]) == []
    assert orphans(count=2, have=[], in_flight=[], holders={}) == (0, 1)


def test_upload_slots() -> None:
    slots = UploadSlots(2)
    assert slots.take() and slots.take()
    assert not slots.take()
    assert slots.refused == 1
    slots.give()
    assert slots.take()
    with pytest.raises(ValueError):
        UploadSlots(0)
    empty = UploadSlots(1)
    with pytest.raises(RuntimeError):
        empty.give()


@pytest.mark.parametrize(
    ("sent", "others", "since", "expected"),
    [
        (0, 0, 0.0, True),  # the first copy always
        (0, 3, 0.0, True),
        (1, 1, 0.1, False),  # another node holds it: ask there
        (1, 1, 60.0, False),
        (1, 0, 0.5, False),  # the first copy is still on its way
        (1, 0, 2.0, True),  # nobody holds it after a while: the first recipient died
        (3, 0, 5.0, True),
    ],
)
def test_the_home_sends_a_piece_again_only_when_nobody_else_has_it(
    sent: int, others: int, since: float, expected: bool
) -> None:
    from warmstart.fetch.pieces import serve_again

    assert serve_again(sent, others, since) is expected
