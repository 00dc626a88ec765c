"""The piece list and holders a tracker keeps, and the wire format of ``POST /pieces``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from warmstart.fetch.pieces import Holder, encode_bits
from warmstart.fetch.tracker import PiecesAnswer, PiecesInvalid, PiecesRequest, Tracker
from warmstart.store.piece_geometry import Pieces

P = Pieces(10 * 1024, 4 * 1024)  # 3 pieces
H0, H1, H2 = "0" * 64, "1" * 64, "2" * 64


def request(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "repository": "team/app",
        "size": P.size,
        "piece_size": P.piece_size,
        "url": "HTTP://Node-B:5050/",
        "have": encode_bits({1}, 3),
        "served": 2,
        "hashes": [H0, None, None],
        "gone": ["http://dead:5050"],
        "version": 7,
        "wait": 60,
    }
    body.update(kw)
    return body


def test_a_request_round_trips_and_is_normalised() -> None:
    req = PiecesRequest.parse(request())
    assert req.url == "http://node-b:5050"  # the form peers hash with
    assert req.have == frozenset({1}) and req.served == 2
    assert req.hashes == (H0, None, None)
    assert req.wait == 5.0  # capped
    assert PiecesRequest.parse(req.to_json()) == req


@pytest.mark.parametrize(
    "bad",
    [
        {"size": 0},
        {"piece_size": "4096"},
        {"repository": ""},
        {"url": "node-b:5050"},
        {"have": encode_bits({1}, 16)},  # another number of pieces
        {"hashes": [H0, None]},  # too few
        {"hashes": ["ABC", None, None]},  # not a hash
        {"gone": "http://x"},
        {"wait": -1},
        {"served": True},
    ],
)
def test_bad_requests_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(PiecesInvalid):
        PiecesRequest.parse(request(**bad))
    with pytest.raises(PiecesInvalid):
        PiecesRequest.parse([1, 2])


def test_the_tracker_learns_and_answers() -> None:
    t = Tracker(P)
    assert t.hashes == [None, None, None] and t.hashed == frozenset()
    v = t.version
    t.set_hash(0, H0)
    t.learn_hashes([H1, H1, None])  # piece 0 is known already: the first one stays
    assert t.hashes == [H0, H1, None] and t.version > v
    t.announce("http://b", frozenset({0}), 1)
    t.announce("http://b", frozenset({1}), 3)  # what a holder announced stays announced
    assert t.holders["http://b"] == Holder(frozenset({0, 1}), 3)
    t.drop_piece("http://b", 0)  # it said 404 for piece 0
    assert t.holders["http://b"].have == frozenset({1})
    t.set_hash(1, H2)  # this node's own bytes win over what it heard
    assert t.hashes[1] == H2
    answer = t.answer("http://me", frozenset({0}), 5)
    assert answer.holders["http://me"] == Holder(frozenset({0}), 5)
    again = PiecesAnswer.parse(answer.to_json())
    assert again == answer
    t.forget(["http://b", "http://unknown"])
    assert "http://b" not in t.holders
    version = t.version
    t.learn_holders(
        {"http://c": Holder(frozenset({2})), "http://me": Holder(frozenset())}, "http://me"
    )
    assert set(t.holders) == {"http://c"} and t.version == version + 1


def test_a_bad_answer_is_not_used() -> None:
    good = Tracker(P).answer("http://me", frozenset(), 0).to_json()
    with pytest.raises(PiecesInvalid):
        PiecesAnswer.parse({**good, "holders": {"http://x": {"have": "??"}}})
    with pytest.raises(PiecesInvalid):
        PiecesAnswer.parse({**good, "hashes": []})


async def test_a_poll_waits_until_something_changes() -> None:
    t = Tracker(P)
    start = asyncio.get_running_loop().time()
    await t.wait(t.version - 1, 5.0)  # already newer: at once
    await t.wait(t.version, 0.05)  # nothing changes: the wait runs out
    assert asyncio.get_running_loop().time() - start >= 0.04
    waiter = asyncio.create_task(t.wait(t.version, 5.0))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    t.announce("http://b", frozenset({2}), 0)
    await asyncio.wait_for(waiter, 1.0)
