"""The memory store against the store contract, plus what is particular to it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clustercore.clock import FakeClock
from clustercore.errors import Compacted
from clustercore.state import Informer
from clustercore.store.base import EventType, Put
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



KEYS = [f"{segment}{name}" for segment in ("hosts/", "heartbeats/", "events/", "config", "") for name in "abc"]
PREFIXES = ["", "hosts/", "heartbeats/", "heartbeats/a", "config", "con", "h", "events/"]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["put", "delete", "txn", "watch"]), st.sampled_from(KEYS),
                          st.sampled_from(PREFIXES)), max_size=40))
def test_each_watch_gets_exactly_the_history_under_its_prefix(steps: list[tuple[str, str, str]]) -> None:
    """Watches are filed by their prefix's first segment; whatever the filing, a watch
    started at revision r delivers every change under its prefix from r on, in order, and
    nothing else (the model: the full history filtered)."""
    store = MemoryStore(clock=FakeClock())
    history: list[tuple[int, str, bool]] = []  # (revision, key, deleted)
    watches: list[tuple[str, int, object]] = []
    for op, key, prefix in steps:
        if op == "put":
            history.append((store.put(key, b"v"), key, False))
        elif op == "delete" and store.get(key) is not None:
            history.append((store.delete(key), key, True))
        elif op == "txn":
            other = key[:-1] + ("b" if key[-1] != "b" else "c")
            revision = store.txn([], [Put(key, b"t"), Put(other, b"t")])
            history += [(revision, key, False), (revision, other, False)]
        elif op == "watch":
            start = store.revision + 1 if prefix == "heartbeats/a" else max(1, store.revision - 3)
            watches.append((prefix, start, store.watch(prefix, start)))
    for prefix, start, watch in watches:
        got = [(e.kv.mod_revision, e.kv.key, e.type is EventType.DELETE) for e in watch.get()]  # type: ignore[attr-defined]
        assert got == [h for h in history if h[0] >= start and h[1].startswith(prefix)]


def test_a_write_reaches_only_the_watches_of_its_segment() -> None:
    store = MemoryStore(clock=FakeClock())
    beats, hosts, everything, config = (store.watch(p) for p in ("heartbeats/", "hosts/", "", "config"))
    for i in range(1000):
        store.put(f"heartbeats/h{i}", b"beat")
    store.put("config", b"{}")
    assert len(beats.queue) == 1000 and not hosts.queue and len(config.queue) == 1
    assert len(everything.get()) == 1001
    hosts.cancel()
    store.put("hosts/h1", b"{}")
    assert hosts.get() == [] and not hosts.queue, "a cancelled watch is no longer filed"


def test_a_watch_left_unread_past_the_history_is_compacted_and_an_informer_lists_again() -> None:
    store = MemoryStore(clock=FakeClock(), history=50)
    watch = store.watch("hosts/")
    informer = Informer(store, "hosts/")
    informer.sync()
    for i in range(60):
        store.put(f"hosts/h{i:02d}", b"x")
    assert len(watch.queue) <= 50, "an unread watch holds no more than the history"
    with pytest.raises(Compacted) as caught:
        watch.get()
    assert (caught.value.requested, caught.value.oldest) == (1, 11), "from the first revision it lost"
    changed, deleted = informer.sync()
    assert len(changed) == 60 and not deleted and len(informer.items) == 60
    store.put("hosts/h00", b"y")
    assert informer.sync() == ({"h00"}, set())
