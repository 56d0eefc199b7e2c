"""The store conformance suite: every Store implementation must pass it.

Subclass ``StoreContract`` and provide the fixtures ``store`` (an empty store) and
``clock`` (a FakeClock that drives the store's lease expiry). Implementations whose
leases run on real time override the lease tests that advance ``clock``. Revisions are
checked relative to the store's revision when a test starts: etcd's begin at 1 and are
shared by every key of the etcd cluster, the memory store's begin at 0.
"""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustercore.clock import FakeClock
from clustercore.errors import Compacted, Conflict, KeyNotFound, LeaseNotFound
from clustercore.events import Event, EventLog
from clustercore.state import Informer
from clustercore.store.base import Check, Delete, EventType, Put, Store

keys = st.sampled_from(["a", "a/1", "a/2", "ab", "b/1"])
values = st.binary(min_size=0, max_size=8)


class StoreContract:
    # -------------------------------------------------------------- revisions and reads

    def test_a_new_store_is_empty(self, store: Store) -> None:
        assert store.get("x") is None
        assert store.list("") == []

    def test_every_write_bumps_the_revision_by_one(self, store: Store) -> None:
        r0 = store.revision
        assert store.put("k", b"1") == r0 + 1
        assert store.put("k", b"2") == r0 + 2
        assert store.txn([], [Put("a", b""), Put("b", b""), Delete("k")]) == r0 + 3
        assert store.delete("a") == r0 + 4
        assert store.revision == r0 + 4

    def test_key_metadata_follows_etcd(self, store: Store) -> None:
        r0 = store.revision
        store.put("k", b"1")
        store.put("other", b"x")
        store.put("k", b"2")
        kv = store.get("k")
        assert kv is not None
        assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"2", r0 + 1, r0 + 3, 2)
        store.delete("k")
        store.put("k", b"3")
        kv = store.get("k")
        assert kv is not None and (kv.create_revision, kv.version) == (r0 + 5, 1)

    def test_list_is_sorted_and_respects_prefix_boundaries(self, store: Store) -> None:
        for key in ["a/2", "ab", "a/1", "b", "a/10", "a"]:
            store.put(key, key.encode())
        assert [kv.key for kv in store.list("a/")] == ["a/1", "a/10", "a/2"]
        assert [kv.key for kv in store.list("a")] == ["a", "a/1", "a/10", "a/2", "ab"]
        assert [kv.key for kv in store.list("")] == ["a", "a/1", "a/10", "a/2", "ab", "b"]
        assert store.list("c") == []

    # -------------------------------------------------------------- compare-and-swap

    def test_cas_succeeds_on_the_read_revision_and_conflicts_otherwise(self, store: Store) -> None:
        rev = store.put("k", b"1")
        store.put("k", b"2", expect=rev)
        with pytest.raises(Conflict) as info:
            store.put("k", b"3", expect=rev)
        assert (info.value.key, info.value.expected, info.value.actual) == ("k", rev, rev + 1)
        kv = store.get("k")
        assert kv is not None and kv.value == b"2", "a lost CAS must not write"

    def test_expect_zero_creates_only(self, store: Store) -> None:
        rev = store.put("k", b"1", expect=0)
        with pytest.raises(Conflict) as info:
            store.put("k", b"2", expect=0)
        assert info.value.expected == 0 and info.value.actual == rev

    def test_cas_on_an_absent_key_reports_zero(self, store: Store) -> None:
        with pytest.raises(Conflict) as info:
            store.put("k", b"1", expect=store.revision + 7)
        assert info.value.actual == 0

    def test_delete_semantics(self, store: Store) -> None:
        with pytest.raises(KeyNotFound):
            store.delete("nope")
        rev = store.put("k", b"1")
        with pytest.raises(Conflict):
            store.delete("k", expect=rev + 5)
        store.delete("k", expect=rev)
        assert store.get("k") is None

    def test_a_failing_check_changes_nothing(self, store: Store) -> None:
        rev = store.put("k", b"1")
        with pytest.raises(Conflict) as info:
            store.txn([Check("k", rev), Check("other", rev)], [Put("k", b"2"), Put("new", b"x")])
        assert info.value.key == "other"
        assert store.revision == rev
        assert store.get("new") is None
        kv = store.get("k")
        assert kv is not None and kv.value == b"1"

    def test_a_transaction_is_one_revision(self, store: Store) -> None:
        old = store.put("old", b"")
        rev = store.txn([Check("old", old), Check("x", 0)], [Put("x", b"1"), Put("y", b"2"), Delete("old")])
        x, y = store.get("x"), store.get("y")
        assert x is not None and y is not None
        assert x.mod_revision == y.mod_revision == rev == old + 1
        assert store.get("old") is None

    # -------------------------------------------------------------- watches

    def test_watch_from_now_sees_only_future_changes_under_its_prefix(self, store: Store) -> None:
        r0 = store.put("a/old", b"") - 1
        watch = store.watch("a/")
        assert watch.get() == []
        store.put("a/1", b"x")
        store.put("b/1", b"y")
        store.delete("a/old")
        events = watch.get(timeout=1.0)
        while len(events) < 2 and (more := watch.get(timeout=1.0)):  # a remote store may deliver in parts
            events += more
        assert [(e.type, e.kv.key) for e in events] == [(EventType.PUT, "a/1"), (EventType.DELETE, "a/old")]
        assert events[1].kv.value == b"" and events[1].kv.mod_revision == r0 + 4
        assert watch.get() == []
        watch.cancel()

    def test_watch_resumes_from_a_past_revision(self, store: Store) -> None:
        r0 = store.revision
        for i in range(5):
            store.put(f"k/{i}", str(i).encode())
        watch = store.watch("k/", start_revision=r0 + 3)
        assert [e.kv.key for e in watch.get(timeout=2.0)] == ["k/2", "k/3", "k/4"]
        watch.cancel()

    def test_an_informer_lists_then_follows_from_the_next_revision(self, store: Store) -> None:
        store.put("h/a", b"1")
        informer = Informer(store, "h/")  # lists, then watches from revision + 1 (not yet written)
        assert informer.sync() == ({"a"}, set())
        store.put("h/b", b"2")
        store.delete("h/a")
        changed: set[str] = set()
        deleted: set[str] = set()
        deadline = time.monotonic() + 5
        while (changed, deleted) != ({"b"}, {"a"}) and time.monotonic() < deadline:
            c, d = informer.sync()
            changed, deleted = (changed | c) - d, (deleted | d) - c
            time.sleep(0.01)
        assert (changed, deleted) == ({"b"}, {"a"})
        assert {k: kv.value for k, kv in informer.items.items()} == {"b": b"2"}
        informer.close()

    def test_the_event_log_keeps_the_newest_events_and_prunes_in_batches(self, store: Store) -> None:
        log = EventLog(store, retain=50)
        for i in range(300):  # written unpruned (as inside other transactions)
            op = log.put_op(Event(float(i), "host/h", "e", str(i)))
            store.put(op.key, op.value)
        log.record(Event(300.0, "host/h", "e", "300"))  # prunes 251 at once: etcd allows 128 ops per txn
        assert [e.reason for e in log.query()] == [str(i) for i in range(251, 301)]

    def test_a_transaction_is_delivered_whole(self, store: Store) -> None:
        watch = store.watch("")
        rev = store.txn([], [Put("a", b"1"), Put("b", b"2")])
        events = watch.get(timeout=1.0)
        assert {e.kv.key for e in events} == {"a", "b"}
        assert {e.kv.mod_revision for e in events} == {rev}
        watch.cancel()

    def test_blocking_get_times_out_and_wakes_on_a_put(self, store: Store) -> None:
        watch = store.watch("w/")
        started = time.monotonic()
        assert watch.get(timeout=0.2) == []
        assert 0.15 <= time.monotonic() - started < 2.0
        timer = threading.Timer(0.1, lambda: store.put("w/1", b"x"))
        timer.start()
        started = time.monotonic()
        events = watch.get(timeout=5.0)
        timer.join()
        assert [e.kv.key for e in events] == ["w/1"]
        assert time.monotonic() - started < 4.0
        watch.cancel()
        assert watch.get(timeout=0.1) == []

    def test_resuming_from_compacted_history_raises(self, small_history_store: Store | None) -> None:
        if small_history_store is None:
            pytest.skip("this store has no small-history variant")
        store = small_history_store
        first = store.revision + 1
        for i in range(20):
            store.put("k", str(i).encode())
        compact = getattr(store, "compact", None)
        if compact is not None:  # etcd keeps history until compacted
            compact(store.revision)
        with pytest.raises(Compacted) as info:
            store.watch("k", start_revision=first)
        assert info.value.requested == first and info.value.oldest > first

    # -------------------------------------------------------------- leases

    def test_keys_of_an_expired_lease_vanish(self, store: Store, clock: FakeClock) -> None:
        lease = store.grant(10)
        store.put("hb/h1", b"1", lease=lease)
        store.put("keep", b"1")
        watch = store.watch("hb/")
        clock.advance(9)
        assert store.get("hb/h1") is not None
        clock.advance(2)
        assert store.get("hb/h1") is None
        assert [kv.key for kv in store.list("")] == ["keep"]
        assert [(e.type, e.kv.key) for e in watch.get()] == [(EventType.DELETE, "hb/h1")]
        with pytest.raises(LeaseNotFound):
            store.keepalive(lease)
        watch.cancel()

    def test_keepalive_extends_and_revoke_ends(self, store: Store, clock: FakeClock) -> None:
        lease = store.grant(10)
        store.put("k", b"1", lease=lease)
        for _ in range(5):
            clock.advance(8)
            store.keepalive(lease)
        assert store.get("k") is not None
        store.revoke(lease)
        assert store.get("k") is None
        store.revoke(lease)  # idempotent

    def test_writing_with_an_unknown_lease_fails_and_rewriting_detaches(self, store: Store, clock: FakeClock) -> None:
        with pytest.raises(LeaseNotFound):
            store.put("k", b"1", lease=424242)
        assert store.get("k") is None
        lease = store.grant(5)
        store.put("k", b"1", lease=lease)
        store.put("k", b"2")
        clock.advance(6)
        kv = store.get("k")
        assert kv is not None and kv.value == b"2" and kv.lease == 0

    # -------------------------------------------------------------- against a model

    # fresh_store is a factory: every example builds its own store, so reusing the fixture is safe.
    # Run by every store's test class (hence differing executors), a fresh store per example.
    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors])
    @given(st.lists(st.tuples(st.sampled_from(["put", "cas", "create", "delete", "txn"]), keys, values,
                              st.integers(-1, 12)), max_size=30))
    def test_behaves_like_a_dict_with_revisions(
        self, fresh_store: object, ops: list[tuple[str, str, bytes, int]]
    ) -> None:
        assert callable(fresh_store)
        store: Store = fresh_store()
        model: dict[str, tuple[bytes, int]] = {}
        revision = r0 = store.revision
        for op, key, value, guess in ops:
            actual = model[key][1] if key in model else 0
            expect = actual if guess < 0 else 0 if guess == 0 else r0 + guess
            try:
                if op == "put":
                    store.put(key, value)
                elif op == "cas":
                    store.put(key, value, expect=expect)
                elif op == "create":
                    store.put(key, value, expect=0)
                elif op == "delete":
                    store.delete(key, expect=expect)
                else:
                    store.txn([Check(key, expect)], [Put(key + "/t", value), Delete(key)])
            except Conflict as err:
                assert op != "put"
                assert err.actual == actual
                continue
            except KeyNotFound:
                assert op == "delete" and key not in model
                continue
            if op == "cas":
                assert expect == actual
            if op == "create":
                assert actual == 0
            if op == "delete":
                assert key in model and expect == actual
            revision += 1
            if op == "delete":
                del model[key]
            elif op == "txn":
                assert expect == actual
                model.pop(key, None)
                model[key + "/t"] = (value, revision)
            else:
                model[key] = (value, revision)
            assert store.revision == revision
        listed = {kv.key: (kv.value, kv.mod_revision) for kv in store.list("")}
        assert listed == model
