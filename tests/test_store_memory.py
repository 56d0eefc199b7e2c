"""The memory store against the store contract, plus what is particular to it."""

from __future__ import annotations

import timeit
from collections.abc import Callable

import pytest

from clustercore.clock import FakeClock
from clustercore.store.memory import MemoryStore

from .store_contract import StoreContract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    def store(self, clock: FakeClock) -> MemoryStore:
        return MemoryStore(clock=clock)

    @pytest.fixture
    def small_history_store(self, clock: FakeClock) -> MemoryStore:
        return MemoryStore(clock=clock, history=5)

    @pytest.fixture
    def fresh_store(self) -> Callable[[], MemoryStore]:
        return lambda: MemoryStore(clock=FakeClock())


def test_the_sorted_index_survives_deletes_and_reinserts() -> None:
    store = MemoryStore(clock=FakeClock())
    for i in range(200):
        store.put(f"k/{i:03d}", b"")
    for i in range(0, 200, 3):
        store.delete(f"k/{i:03d}")
    store.put("k/000", b"again")
    listed = [kv.key for kv in store.list("k/")]
    assert listed == sorted(listed)
    assert len(listed) == 200 - len(range(0, 200, 3)) + 1


def test_prefix_listing_does_not_scan_everything() -> None:
    """Listing a small prefix among many keys costs about the same as in a small store."""
    big, small = MemoryStore(clock=FakeClock()), MemoryStore(clock=FakeClock())
    for i in range(20_000):
        big.put(f"z/{i}", b"")
    for store in (big, small):
        for i in range(10):
            store.put(f"a/{i}", b"")
    t_big = min(timeit.repeat(lambda: big.list("a/"), number=200, repeat=3))
    t_small = min(timeit.repeat(lambda: small.list("a/"), number=200, repeat=3))
    assert t_big < t_small * 5, (t_big, t_small)
