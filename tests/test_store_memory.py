"""The memory store against the store contract, plus what is particular to it."""

from __future__ import annotations

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


def test_a_new_memory_store_is_at_revision_zero() -> None:
    assert MemoryStore(clock=FakeClock()).revision == 0


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

