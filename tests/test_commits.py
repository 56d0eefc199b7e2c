"""A pass's cost follows what changed: heartbeats taken by the manager's listener as they
arrive, and the hosts' own transitions committed together (clustercore.reconcile.commits)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import pytest

from clustercore import Cluster, FakeClock, HostState
from clustercore.errors import StoreError
from clustercore.model import Placement, PlacementState, Workload
from clustercore.reconcile.writer import TXN_OPS
from clustercore.resources import Resources
from clustercore.state import encode
from clustercore.store.base import Check, Delete, Put
from clustercore.testing import FakeDriver
from tests.cluster_support import REPORT, up_cluster


def _cluster(hosts: int) -> tuple[Cluster, FakeClock]:
    return up_cluster([f"h{i:03d}" for i in range(hosts)], statistics=False)


class Transactions:
    """The store's transactions, counted (the real store underneath); ``fail`` makes the
    next one that checks a host key raise, ``before`` runs a second writer first."""

    def __init__(self, cluster: Cluster) -> None:
        self.store = cluster.store
        self.real = self.store.txn
        self.sizes: list[int] = []
        self.fail: Exception | None = None
        self.before: Any = None
        self.store.txn = self  # type: ignore[method-assign]

    def __call__(self, checks: Sequence[Check], ops: Sequence[Put | Delete]) -> int:
        if any(c.key.startswith("hosts/") for c in checks):
            if self.before is not None:
                before, self.before = self.before, None
                before()
            if self.fail is not None:
                fail, self.fail = self.fail, None
                raise fail
            self.sizes.append(len(checks) + len(ops))
        return self.real(checks, ops)


def _silence(cluster: Cluster, clock: FakeClock, silent: set[str], seconds: int) -> None:
    others = [n for n in cluster.hosts() if n not in silent]
    for _ in range(seconds):
        clock.advance(1.0)
        for name in others:
            cluster.heartbeat(name, REPORT)


def test_a_hundred_hosts_going_connecting_take_a_few_transactions_each_within_etcds_limit() -> None:
    cluster, clock = _cluster(300)
    silent = {f"h{i:03d}" for i in range(0, 300, 3)}
    txns = Transactions(cluster)
    _silence(cluster, clock, silent, 31)
    report = cluster.step()
    assert {e.subject for e in report.events} == {f"host/{n}" for n in silent}
    assert all(e.kind == "heartbeat-missed" for e in report.events)
    states = cluster.hosts()
    assert all(states[n].state is (HostState.CONNECTING if n in silent else HostState.UP) for n in states)
    assert len(txns.sizes) == 3 and max(txns.sizes) <= TXN_OPS, txns.sizes  # 100 x (check, host, event)
    stored = {e.subject for e in cluster.query_events(kind="heartbeat-missed")}
    assert stored == {f"host/{n}" for n in silent}, "every transition stored with its event"


def test_a_host_rewritten_by_a_second_writer_costs_only_its_own_transition() -> None:
    cluster, clock = _cluster(30)
    silent = {f"h{i:03d}" for i in range(10)}
    txns = Transactions(cluster)
    victim = "h004"

    def second_writer() -> None:
        kv = cluster.store.get("hosts/" + victim)
        assert kv is not None
        cluster.store.put("hosts/" + victim, kv.value)

    txns.before = second_writer
    _silence(cluster, clock, silent, 31)
    first = cluster.step()
    assert len(first.conflicts) == 1 and victim in first.conflicts[0]
    assert {e.subject for e in first.events} == {f"host/{n}" for n in silent - {victim}}
    assert cluster.host(victim).state is HostState.UP
    assert cluster.controller.observer.hosts[victim].value.state is HostState.UP, "taken back"
    clock.advance(1.0)
    second = cluster.step()
    assert [e.subject for e in second.events] == [f"host/{victim}"] and not second.conflicts
    assert all(cluster.host(n).state is HostState.CONNECTING for n in silent)


def test_staged_transitions_the_store_never_took_are_taken_back_and_decided_again() -> None:
    cluster, clock = _cluster(20)
    silent = {f"h{i:03d}" for i in range(5)}
    txns = Transactions(cluster)
    txns.fail = StoreError("etcd: connection refused")
    _silence(cluster, clock, silent, 31)
    first = cluster.step()
    assert first.store_error is not None and not first.events
    observer = cluster.controller.observer
    assert all(observer.hosts[n].value.state is HostState.UP for n in silent), "nothing shown that is not stored"
    assert all(cluster.host(n).state is HostState.UP for n in silent)
    clock.advance(1.0)
    second = cluster.step()
    assert {e.subject for e in second.events} == {f"host/{n}" for n in silent}
    assert all(cluster.host(n).state is HostState.CONNECTING for n in silent)


@pytest.fixture
def listening() -> Iterator[tuple[Cluster, FakeClock]]:
    cluster, clock = _cluster(4)
    stop = threading.Event()
    thread = threading.Thread(target=cluster.controller.observer.listen, args=(clock.now, stop, 0.001))
    thread.start()
    yield cluster, clock
    stop.set()
    thread.join()


def _taken(cluster: Cluster, count: int) -> None:
    deadline = time.monotonic() + 10
    while cluster.controller.observer.beats_taken < count:
        assert time.monotonic() < deadline, "the listener took nothing"
        time.sleep(0.001)


def test_the_listener_notes_a_known_report_and_leaves_the_rest_to_the_pass(
        listening: tuple[Cluster, FakeClock]) -> None:
    cluster, clock = listening
    observer = cluster.controller.observer
    clock.advance(5.0)
    taken = observer.beats_taken
    cluster.heartbeat("h000", REPORT)
    _taken(cluster, taken + 1)
    assert observer.last_seen["h000"] == clock.now(), "heard without a pass"
    clock.advance(1.0)
    wider = attrs.evolve(REPORT, storage=frozenset({"nfs"}))
    cluster.heartbeat("h001", wider)
    cluster.store.delete("heartbeats/h002")
    _taken(cluster, taken + 3)
    assert observer.last_seen["h001"] < clock.now() and observer.reports["h001"].storage == frozenset()
    assert "h002" not in observer.lease_gone, "judging is the pass's"
    clock.advance(1.0)
    cluster.step()
    assert observer.last_seen["h001"] == clock.now() - 1.0, "heard when the listener took it"
    assert observer.reports["h001"].storage == frozenset({"nfs"})
    assert observer.lease_gone["h002"] == clock.now() - 1.0


def test_with_the_listener_a_silent_host_goes_connecting_and_beating_ones_stay_up(
        listening: tuple[Cluster, FakeClock]) -> None:
    cluster, clock = listening
    observer = cluster.controller.observer
    for _ in range(40):
        clock.advance(1.0)
        taken = observer.beats_taken
        for name in ("h000", "h001", "h002"):
            cluster.heartbeat(name, REPORT)
        _taken(cluster, taken + 3)
        cluster.step()
    states = cluster.hosts()
    assert states["h003"].state is HostState.CONNECTING
    assert all(states[n].state is HostState.UP for n in ("h000", "h001", "h002"))
    assert observer.listen_seconds > 0


def test_a_heartbeat_without_the_credential_is_never_heard_by_the_listener(
        listening: tuple[Cluster, FakeClock]) -> None:
    cluster, clock = listening
    observer = cluster.controller.observer
    before = observer.last_seen["h000"]
    taken = observer.beats_taken
    for _ in range(3):
        clock.advance(1.0)
        cluster.writer.heartbeat("h000", attrs.evolve(REPORT, credential="stolen"))
        taken += 1
        _taken(cluster, taken)
        cluster.step()
    assert observer.last_seen["h000"] == before
    refused = cluster.query_events(kind="heartbeat-refused")
    assert len(refused) == 1, "one event, however often it comes"


class Reads:
    """The store's reads by key or prefix, counted (the real store underneath)."""

    def __init__(self, cluster: Cluster) -> None:
        store = cluster.store
        self.keys: list[str] = []
        get, listing = store.get, store.list

        def counted_get(key: str) -> Any:
            self.keys.append(key)
            return get(key)

        def counted_list(prefix: str) -> Any:
            self.keys.append(prefix + "*")
            return listing(prefix)

        store.get, store.list = counted_get, counted_list  # type: ignore[method-assign]

    def of(self, prefix: str) -> list[str]:
        return [k for k in self.keys if k.startswith(prefix)]


def _pass(cluster: Cluster, clock: FakeClock) -> Any:
    clock.advance(1.0)
    for name in cluster.hosts():
        cluster.heartbeat(name, REPORT)
    return cluster.step()


def test_an_orphan_is_settled_when_its_time_comes_and_no_pass_lists_the_placements() -> None:
    cluster, clock = _cluster(3)
    after = cluster.config.orphan_after
    cluster.store.put("workloads/w", encode(Workload("w", "fake", requests=Resources(1, 256))))
    cluster.store.put("placements/w", encode(Placement("w", "h001", PlacementState.STARTING, clock.now())))
    driver = cluster.plugins.driver("fake")
    assert isinstance(driver, FakeDriver)
    driver.running.setdefault("h001", set()).add("w")  # it started; its manager died before saying so
    reads = Reads(cluster)
    _pass(cluster, clock)
    seen = clock.now()
    flying = cluster.controller.observer.in_flight
    while clock.now() - seen < after - 1:
        _pass(cluster, clock)
        assert flying["w"].value.state is PlacementState.STARTING, "not before orphan_after"
    for _ in range(3):
        _pass(cluster, clock)
    assert "w" not in flying
    assert reads.of("placements/") == [] and reads.of("workloads/") == ["workloads/w"], \
        "the passes read only the workload they settled"
    assert cluster.placements()["w"].state is PlacementState.RUNNING
    assert [e.kind for e in cluster.query_events(subject="workload/w")] == ["started"]


def test_an_ha_restart_waiting_out_its_backoff_costs_no_reads_until_its_next_try() -> None:
    cluster, clock = _cluster(3)
    huge = Workload("w", "fake", requests=Resources(64, 256), ha=True)  # no host has 64 CPUs
    cluster.store.put("workloads/w", encode(huge))
    cluster.store.put("placements/w", encode(Placement("w", "h001", PlacementState.FAILED, clock.now())))
    first = _pass(cluster, clock)
    assert any("HA restart of w" in e and "retry in 10 s" in e for e in first.errors)
    reads = Reads(cluster)
    for _ in range(9):
        report = _pass(cluster, clock)
        assert not any("HA restart" in e for e in report.errors)
    assert reads.of("placements/") == [] and reads.of("workloads/") == [], "waiting costs nothing"
    again = _pass(cluster, clock)
    assert any("HA restart of w" in e and "retry in 20 s" in e for e in again.errors)
    assert reads.of("placements/w") and reads.of("workloads/w")


def test_a_connecting_host_rests_until_its_grace_can_end_and_a_heartbeat_wakes_it() -> None:
    cluster, clock = _cluster(6)
    silent = {"h000", "h001", "h002"}
    _silence(cluster, clock, silent, 31)
    cluster.step()
    went = cluster.host("h000").since
    assert all(cluster.host(n).state is HostState.CONNECTING for n in silent)
    _silence(cluster, clock, silent, 1)
    cluster.step()  # looked at once as Connecting: nothing to decide yet, so it rests
    looked: list[str] = []
    controller = cluster.controller
    decide = controller._deciders[0]

    def counted(current: Any, view: Any, workloads: int) -> Any:
        looked.append(current.value.name)
        return decide(current, view, workloads)

    controller._deciders = (counted, *controller._deciders[1:])
    grace = cluster.config.liveness.non_responsive_grace  # 60 s, and no workloads to add to it
    _silence(cluster, clock, silent, 1)
    cluster.step()
    assert not looked, "a resting host is not looked at"
    cluster.heartbeat("h002", REPORT)  # it beats again: woken, and Up again
    cluster.step()
    assert looked == ["h002"] and cluster.host("h002").state is HostState.UP
    looked.clear()
    silent = {"h000", "h001"}
    while clock.now() < went + grace:
        _silence(cluster, clock, silent, 1)
        cluster.step()
        assert cluster.host("h000").state is HostState.CONNECTING
    assert set(looked) <= silent and len(looked) <= 2, "looked at once its grace could end"
    _silence(cluster, clock, silent, 1)
    cluster.step()
    assert all(cluster.host(n).state is HostState.NON_RESPONSIVE for n in ("h000", "h001")), \
        "NonResponsive on the first pass past the grace, as without resting"


def test_a_manager_process_freezes_what_its_first_pass_read_and_holds_the_collector_off_in_its_passes() -> None:
    """The collector is the whole process's: only a manager told so (the CLI's) freezes it,
    between passes, and runs its passes with the collector held off."""
    script = (
        "import gc, threading\n"
        "from clustercore import Plugins\n"
        "from clustercore.manager import Manager\n"
        "from clustercore.store.memory import MemoryStore\n"
        "from clustercore.testing import FakeFlavor\n"
        "plugins = Plugins([FakeFlavor('fake')], entry_points=False)\n"
        "for freeze in (False, True):\n"
        "    stop = threading.Event()\n"
        "    m = Manager(MemoryStore(), 'm', plugins=plugins, freeze_memory=freeze)\n"
        "    during = []\n"
        "    sync = m.cluster.controller.observer.sync\n"
        "    m.cluster.controller.observer.sync = lambda *a: during.append(gc.isenabled()) or sync(*a)\n"
        "    m.on_pass.append(lambda took, leading: stop.set())\n"
        "    m.run(0.01, stop)\n"
        "    print(gc.get_freeze_count() > 0, during[-1], gc.isenabled())\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    # the library's manager: nothing frozen, the collector on in its pass; the CLI's:
    # frozen, the collector held off in its pass and on again after it
    assert [line.split() for line in out.stdout.splitlines()] == [["False", "True", "True"],
                                                                   ["True", "False", "True"]], out.stderr
