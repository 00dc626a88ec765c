"""The eviction choice as tables: snapshot + need -> images dropped, blobs deleted, shortfall."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from warmstart.oci import Digest
from warmstart.store.eviction import (
    EvictionPlan,
    ImageUsage,
    StoreSnapshot,
    orphans,
    plan_eviction,
    plan_removal,
    unfreeable_bytes,
)


def d(name: str) -> Digest:
    return Digest.of(name.encode())


def img(ref: str, last_used: float, *blobs: str, pinned: bool = False) -> ImageUsage:
    return ImageUsage(ref, last_used, frozenset(d(b) for b in blobs), pinned)


def snap(images: list[ImageUsage], sizes: dict[str, int], protected: str = "") -> StoreSnapshot:
    return StoreSnapshot(
        tuple(images),
        {d(k): v for k, v in sizes.items()},
        frozenset(d(p) for p in protected.split()),
    )


@dataclass(frozen=True)
class Case:
    name: str
    images: list[ImageUsage]
    sizes: dict[str, int]
    need: int
    want_images: tuple[str, ...]
    want_blobs: tuple[str, ...]
    want_shortfall: int = 0
    protected: str = ""


CASES = [
    Case("nothing needed", [img("a", 1, "x")], {"x": 10}, 0, (), ()),
    Case(
        "orphans first, largest first, only as many as needed",
        [img("a", 1, "x")],
        {"x": 10, "o1": 5, "o2": 7},
        6,
        (),
        ("o2",),
    ),
    Case(
        "all orphans then the LRU image",
        [img("a", 1, "x"), img("b", 2, "y")],
        {"x": 10, "y": 10, "o": 5},
        12,
        ("a",),
        ("o", "x"),
    ),
    Case(
        "least recently used first",
        [img("new", 30, "n"), img("old", 10, "o"), img("mid", 20, "m")],
        {"n": 10, "o": 10, "m": 10},
        15,
        ("old", "mid"),
        ("o", "m"),
    ),
    Case(
        "pinned image is never evicted even if oldest",
        [img("old", 1, "o", pinned=True), img("new", 2, "n")],
        {"o": 10, "n": 10},
        10,
        ("new",),
        ("n",),
    ),
    Case(
        "only pinned left: shortfall, plan must not be applied",
        [img("a", 1, "x", pinned=True), img("b", 2, "y")],
        {"x": 10, "y": 10},
        15,
        ("b",),
        ("y",),
        want_shortfall=5,
    ),
    Case(
        "blob shared with a kept image is kept",
        [img("a", 1, "base", "la"), img("b", 2, "base", "lb")],
        {"base": 100, "la": 10, "lb": 10},
        10,
        ("a",),
        ("la",),
    ),
    Case(
        "shared blob freed once every image using it is evicted",
        [img("a", 1, "base", "la"), img("b", 2, "base", "lb")],
        {"base": 100, "la": 10, "lb": 10},
        50,
        ("a", "b"),
        ("la", "base", "lb"),
    ),
    Case(
        "blob shared with a pinned image is kept",
        [img("a", 1, "base", "la"), img("p", 2, "base", "lp", pinned=True)],
        {"base": 100, "la": 10, "lp": 10},
        50,
        ("a",),
        ("la",),
        want_shortfall=40,
    ),
    Case(
        "protected (pinned or in-flight) blob is never deleted",
        [img("a", 1, "x", "y")],
        {"x": 10, "y": 10, "o": 3},
        20,
        ("a",),
        ("o", "y"),
        want_shortfall=7,
        protected="x",
    ),
    Case(
        "protected orphan is not an orphan to delete",
        [],
        {"o": 10},
        5,
        (),
        (),
        want_shortfall=5,
        protected="o",
    ),
    Case(
        "an image that frees nothing keeps its record",
        [img("a", 1, "x"), img("b", 2, "y")],
        {"y": 10},  # a's blob is not in the store
        10,
        ("b",),
        ("y",),
    ),
    Case(
        "ties in last use broken by reference",
        [img("b", 5, "y"), img("a", 5, "x")],
        {"x": 10, "y": 10},
        10,
        ("a",),
        ("x",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_plan_eviction(case: Case) -> None:
    plan = plan_eviction(snap(case.images, case.sizes, case.protected), case.need)
    assert plan.images == case.want_images
    assert plan.blobs == tuple(d(b) for b in case.want_blobs)
    assert plan.shortfall == case.want_shortfall
    assert plan.ok == (case.want_shortfall == 0)
    assert plan.freed == sum(case.sizes[b] for b in case.want_blobs)


def test_empty_plan_is_ok() -> None:
    assert plan_eviction(snap([], {}), 0) == EvictionPlan()
    assert plan_eviction(snap([], {}), 1).shortfall == 1


def test_plan_is_pure() -> None:
    s = snap([img("a", 1, "x"), img("b", 2, "y")], {"x": 1, "y": 1})
    assert plan_eviction(s, 1) == plan_eviction(s, 1)
    assert s.images[0].reference == "a"


def test_orphans() -> None:
    s = snap([img("a", 1, "x")], {"x": 1, "o1": 2, "o2": 3, "p": 9}, protected="p")
    assert orphans(s) == (d("o2"), d("o1"))


@pytest.mark.parametrize(
    ("images", "protected", "remove", "want"),
    [
        ([img("a", 1, "x", "s"), img("b", 1, "s")], "", "a", ("x",)),
        ([img("a", 1, "x", "s")], "x", "a", ("s",)),
        ([img("a", 1, "x")], "", "missing", ()),
    ],
)
def test_plan_removal(
    images: list[ImageUsage], protected: str, remove: str, want: tuple[str, ...]
) -> None:
    s = snap(images, {"x": 1, "s": 1}, protected)
    assert set(plan_removal(s, remove)) == {d(w) for w in want}


def test_unfreeable_bytes() -> None:
    s = snap(
        [img("p", 1, "x", "s", pinned=True), img("a", 1, "s", "y")],
        {"x": 10, "s": 5, "y": 7, "z": 3},
        protected="z",
    )
    assert unfreeable_bytes(s) == 18


def test_shared_blobs_are_never_deleted_to_make_room() -> None:
    s = StoreSnapshot(
        (img("old", 1, "x", "y"), img("new", 2, "z")),
        {d("x"): 50, d("y"): 10, d("z"): 40},
        shared=frozenset({d("x")}),
    )
    plan = plan_eviction(s, 30)
    # "old" goes first but frees only y (x is linked by containerd); then "new" frees z.
    assert plan.blobs == (d("y"), d("z")) and plan.freed == 50 and plan.ok
    assert plan_eviction(s, 60).shortfall == 10
    assert unfreeable_bytes(s) == 0  # shared bytes are not counted at all


def test_a_shared_orphan_is_not_deleted_to_make_room() -> None:
    s = StoreSnapshot((), {d("o"): 100}, shared=frozenset({d("o")}))
    assert plan_eviction(s, 10).blobs == () and plan_eviction(s, 10).shortfall == 10
