"""The etcd store against the store contract, on a real 3-member etcd cluster on loopback
(Debian's etcd-server); each test has its own key prefix. Leases run on etcd's clock, so
the lease tests here wait in real time (etcd's TTLs are whole seconds)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from clustercore.clock import FakeClock
from clustercore.errors import LeaseNotFound
from clustercore.store.base import EventType
from clustercore.store.etcd import EtcdStore, parse_url
from clustercore.testing import EtcdCluster

from .store_contract import StoreContract

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    with EtcdCluster(3, base_port=23790) as cluster:
        yield cluster


def fresh(etcd: EtcdCluster) -> EtcdStore:
    return EtcdStore(etcd.url, prefix=f"/test/{uuid.uuid4().hex[:8]}/")


class TestEtcdStore(StoreContract):
    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()  # unused: etcd's leases run on its own clock

    @pytest.fixture
    def store(self, etcd: EtcdCluster) -> Iterator[EtcdStore]:
        store = fresh(etcd)
        yield store
        store.close()

    @pytest.fixture
    def small_history_store(self, store: EtcdStore) -> EtcdStore:
        return store

    @pytest.fixture
    def fresh_store(self, etcd: EtcdCluster) -> Callable[[], EtcdStore]:
        return lambda: fresh(etcd)

    def test_keys_of_an_expired_lease_vanish(self, store: EtcdStore, clock: FakeClock) -> None:
        lease = store.grant(2)
        store.put("hb/h1", b"1", lease=lease)
        store.put("keep", b"1")
        watch = store.watch("hb/")
        assert store.get("hb/h1") is not None
        deadline = time.monotonic() + 10
        while store.get("hb/h1") is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert store.get("hb/h1") is None
        assert [kv.key for kv in store.list("")] == ["keep"]
        assert [(e.type, e.kv.key) for e in watch.get(timeout=2)] == [(EventType.DELETE, "hb/h1")]
        with pytest.raises(LeaseNotFound):
            store.keepalive(lease)
        watch.cancel()

    def test_keepalive_extends_and_revoke_ends(self, store: EtcdStore, clock: FakeClock) -> None:
        lease = store.grant(2)
        store.put("k", b"1", lease=lease)
        for _ in range(4):
            time.sleep(1)
            store.keepalive(lease)
        assert store.get("k") is not None  # 4 s after a 2 s grant
        store.revoke(lease)
        assert store.get("k") is None
        store.revoke(lease)  # idempotent

    def test_writing_with_an_unknown_lease_fails_and_rewriting_detaches(self, store: EtcdStore,
                                                                        clock: FakeClock) -> None:
        with pytest.raises(LeaseNotFound):
            store.put("k", b"1", lease=424242)
        assert store.get("k") is None
        lease = store.grant(1)
        store.put("k", b"1", lease=lease)
        store.put("k", b"2")
        time.sleep(3)
        kv = store.get("k")
        assert kv is not None and kv.value == b"2" and kv.lease == 0


def test_prefixes_keep_two_clusters_apart(etcd: EtcdCluster) -> None:
    a, b = fresh(etcd), fresh(etcd)
    a.put("hosts/h1", b"a")
    b.put("hosts/h1", b"b")
    assert [kv.value for kv in a.list("")] == [b"a"] and [kv.value for kv in b.list("")] == [b"b"]


def test_urls_name_every_member() -> None:
    assert parse_url("etcd://127.0.0.1:2379, 10.0.0.2:2379") == ["http://127.0.0.1:2379", "http://10.0.0.2:2379"]


def test_writes_go_on_when_a_member_is_killed(etcd: EtcdCluster) -> None:
    store = fresh(etcd)
    store.put("before", b"1")
    etcd.kill(0)  # the member the store talks to first
    try:
        store.put("after", b"2")
        assert [kv.key for kv in store.list("")] == ["after", "before"]
    finally:
        etcd.start(0)
    store.close()
