from __future__ import annotations

import pytest

from tests.unit.fetch.helpers import FakeClock
from warmstart.fetch.cache import LRUMap, TTLCache


def test_ttl_fresh_then_stale_then_gone() -> None:
    clock = FakeClock()
    cache: TTLCache[str, int] = TTLCache(10, keep_stale=100, clock=clock)
    cache.put("a", 1)
    table = [(0, True), (10, True), (10.5, False), (110, False), (110.5, None)]
    start = clock.now
    for at, fresh in table:
        clock.now = start + at
        hit = cache.get("a")
        if fresh is None:
            assert hit is None and "a" not in cache
        else:
            assert hit is not None and hit.value == 1 and hit.fresh is fresh
            assert hit.age == at


def test_ttl_per_entry_and_get_fresh() -> None:
    clock = FakeClock()
    cache: TTLCache[str, bool] = TTLCache(60, clock=clock)
    cache.put("long", True)
    cache.put("short", False, ttl=5)
    clock.tick(6)
    assert cache.get_fresh("long") is True
    assert cache.get_fresh("short") is None
    assert cache.get("short") is None  # no keep_stale: dropped


def test_ttl_lru_bound() -> None:
    cache: TTLCache[int, int] = TTLCache(10, max_entries=3, clock=FakeClock())
    for i in range(3):
        cache.put(i, i)
    cache.get(0)  # 0 is now the most recent
    cache.put(3, 3)
    assert [k in cache for k in range(4)] == [True, False, True, True]
    cache.pop(0)
    assert len(cache) == 2


def test_lru_map() -> None:
    m: LRUMap[str, int] = LRUMap(2)
    m.put("a", 1)
    m.put("b", 2)
    assert m.get("a") == 1
    m.put("c", 3)
    assert ("a" in m, "b" in m, "c" in m) == (True, False, True)
    assert m.pop("a") == 1 and m.values() == [3]


@pytest.mark.parametrize(
    "kwargs", [{"ttl": -1}, {"ttl": 1, "keep_stale": -1}, {"ttl": 1, "max_entries": 0}]
)
def test_ttl_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TTLCache(**kwargs)  # type: ignore[arg-type]
