"""Host and workload statistics (issue 20, item 1): rates from counters, the smoothed mean,
and the leader measuring every Up host each interval into the store on a lease."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clustercore import Cluster, ClusterConfig, FakeClock, HostState, Plugins, Resources, Workload
from clustercore.errors import ValidationError
from clustercore.model import Host
from clustercore.plugins import hookimpl
from clustercore.reconcile.stats import STATS
from clustercore.statistics import Counters, Load, Sample, StatsPolicy, Usage, rates, smooth
from clustercore.store.base import Check, Delete, Put
from clustercore.store.memory import MemoryStore
from clustercore.testing import FakeFlavor

counters = st.builds(Counters, st.integers(0, 10**15), st.floats(0, 1e6), st.floats(0, 1e6),
                     *[st.integers(0, 10**15)] * 4)


def sample(at: float, busy: int, idle: int, **workloads: Counters) -> Sample:
    return Sample(at, 4, busy, idle, 8192.0, 6144.0, workloads=workloads)


@given(st.floats(0.1, 1e4), st.integers(0, 10**15), st.integers(0, 10**15), counters, counters)
def test_rates_are_never_negative_and_shares_stay_within_one(seconds: float, busy: int, idle: int, a: Counters,
                                                             b: Counters) -> None:
    load = rates(sample(0, 10**12, 10**12, w=a), sample(seconds, 10**12 + busy, 10**12 + idle, w=b))
    if busy + idle == 0:
        assert load is None
        return
    assert load is not None and 0 <= load.cpu <= 1 and 0 <= load.steal <= 1
    backwards = any(getattr(b, f) < getattr(a, f) for f in ("cpu_ns", "disk_read", "disk_write", "net_rx",
                                                              "net_tx"))
    assert ("w" in load.workloads) is not backwards  # a restarted workload gives no rate, never a negative one
    for usage in load.workloads.values():
        assert all(getattr(usage, f) >= 0 for f in ("cpu", "disk_read", "disk_write", "net_rx", "net_tx"))


def test_rates_of_a_busy_host_and_a_restart() -> None:
    before = sample(100, 10 * 10**9, 30 * 10**9, w=Counters(cpu_ns=5 * 10**9, net_rx=1000))
    after = sample(110, 30 * 10**9, 50 * 10**9, w=Counters(cpu_ns=20 * 10**9, memory=512, net_rx=11_000),
                   new=Counters(cpu_ns=1))
    load = rates(before, after)
    assert load is not None and load.cpu == 0.5 and load.memory_used == 2048 and load.memory_available == 6144
    assert load.workloads == {"w": Usage(cpu=1.5, memory=512, net_rx=1000.0)}  # "new" has no rate yet
    assert rates(after, before) is None  # the host rebooted: its counters went back
    assert rates(before, before) is None  # no time passed


@given(st.floats(0, 1), st.floats(0, 1), st.floats(0.01, 1))
def test_the_smoothed_mean_lies_between_the_history_and_the_new_interval(old: float, new: float,
                                                                         alpha: float) -> None:
    mean = smooth(Load(cpu=old, workloads={"w": Usage(cpu=old)}), Load(cpu=new, workloads={"w": Usage(cpu=new),
                                                                                           "x": Usage(cpu=new)}),
                  alpha)
    low, high = min(old, new), max(old, new)
    assert low - 1e-12 <= mean.cpu <= high + 1e-12 and low - 1e-12 <= mean.workloads["w"].cpu <= high + 1e-12
    assert mean.workloads["x"].cpu == new  # first seen: its own measure
    assert smooth(None, Load(cpu=new), alpha).cpu == new and smooth(Load(cpu=old), Load(cpu=new), 1).cpu == new


def test_loads_and_the_policy_read_back_and_refuse_nonsense() -> None:
    load = Load(0.25, 0.0, 100.0, 900.0, 0.0, {"w": Usage(cpu=0.5, memory=64)})
    assert Load.from_dict(json.loads(json.dumps(load.to_dict()))) == load
    for bad in ({"cpu": 2}, {"memory_used": -1}, {"workloads": {"w": {"cpu": -0.5}}}, {"cpu": 0.1, "x": 1}):
        with pytest.raises(ValidationError):
            Load.from_dict(bad)
    assert ClusterConfig().merged({"statistics": {"interval": 5}}).statistics == StatsPolicy(interval=5)
    with pytest.raises(ValidationError, match="alpha"):
        ClusterConfig().merged({"statistics": {"alpha": 0}})


class Hanging:
    """A flavor whose measure of ``h3`` never returns (a host that hangs) and of ``h4`` fails."""

    name = "hanging"

    def __init__(self) -> None:
        self.release = threading.Event()

    @hookimpl
    def clustercore_sample_host(self, host: Host) -> Sample | None:
        if host.name == "h3":
            self.release.wait(30)
        if host.name == "h4":
            raise RuntimeError("no stats today")
        return None


def test_the_leader_measures_every_up_host_each_interval_and_a_bad_host_stops_no_other() -> None:
    clock = FakeClock()
    flavor, hanging = FakeFlavor("fake", clock=clock.now), Hanging()
    config = ClusterConfig(statistics=StatsPolicy(interval=10, alpha=0.5), call_timeout=1, call_wait=0.5)
    cluster = Cluster(plugins=Plugins([flavor, hanging], entry_points=False), clock=clock, config=config)
    for name in ("h1", "h2", "h3", "h4"):
        cluster.register_host({"name": name, "capacity": {"cpu": 4, "memory": 8192},
                               "schedulable": name in ("h1", "h2")})
    for _ in range(3):
        for name in ("h1", "h2", "h3", "h4"):
            cluster.heartbeat(name)
        cluster.step()
    cluster.submit(Workload("busy", "fake", requests=Resources(2, 1024)))
    where = cluster.placements()["busy"].host
    flavor.usage["busy"] = 2.0
    try:
        for _ in range(12):
            for name in ("h1", "h2", "h3", "h4"):
                cluster.heartbeat(name)
            cluster.step()
            clock.advance(5)
        loads = cluster.controller.stats.loads  # each round replaces it whole
        assert cluster.host(where).state is HostState.UP
        assert loads[where].workloads["busy"].cpu == pytest.approx(2.0)
        assert loads[where].cpu == pytest.approx(0.5) and loads[where].memory_used == 1024
        idle = "h2" if where == "h1" else "h1"
        assert loads[idle].cpu == 0 and "h3" not in loads and "h4" not in loads  # h3 hangs, h4 fails
        stored = Load.from_dict(json.loads(cluster.store.get(STATS + where).value))  # type: ignore[union-attr]
        assert stored == loads[where]
        flavor.usage["busy"] = 0.0  # it calms down: the mean follows, halving each interval
        for _ in range(6):
            for name in ("h1", "h2"):
                cluster.heartbeat(name)
            cluster.step()
            clock.advance(5)
        loads = cluster.controller.stats.loads
        assert 0 < loads[where].workloads["busy"].cpu < 0.5
        assert len(cluster.controller.stats.series[where]) >= 7
        from clustercore.metrics import Metrics  # the api extra

        metrics = Metrics(cluster.store)
        shown = metrics.render().decode()
        assert f'clustercore_workload_cpu{{host="{where}",workload="busy"}}' in shown
        assert f'clustercore_host_cpu_load{{host="{idle}"}} 0.0' in shown
        cluster.controller.depose()  # no leader measures: the stored loads vanish with their lease
        clock.advance(31)
        assert cluster.store.get(STATS + where) is None
        assert "clustercore_workload_cpu{" not in metrics.render().decode()  # gone with the measure
        metrics.close()
    finally:
        hanging.release.set()


class StatsGate(MemoryStore):
    """A memory store whose writes of measures (``stats/``) block while ``open`` is clear."""

    def __init__(self) -> None:
        super().__init__()
        self.open = threading.Event()
        self.open.set()

    def txn(self, checks: Sequence[Check], ops: Sequence[Put | Delete]) -> int:
        if any(op.key.startswith(STATS) for op in ops):
            self.open.wait(30)
        return super().txn(checks, ops)


def _beat_and_step(cluster: Cluster, names: Sequence[str], clock: FakeClock, seconds: float) -> None:
    for name in names:
        cluster.heartbeat(name)
    cluster.step()
    clock.advance(seconds)


def test_a_store_that_stalls_the_measures_stalls_no_pass_and_the_hosts_due_meanwhile_wait() -> None:
    clock, store = FakeClock(), StatsGate()
    names = ("h1", "h2", "h3")
    config = ClusterConfig(statistics=StatsPolicy(interval=10), call_timeout=0.3, call_wait=0.1)
    cluster = Cluster(store=store, plugins=Plugins([FakeFlavor("fake", clock=clock.now)], entry_points=False),
                      clock=clock, config=config)
    for name in names:
        cluster.register_host({"name": name, "capacity": {"cpu": 4, "memory": 8192}})
    for _ in range(8):
        _beat_and_step(cluster, names, clock, 5)
    stats = cluster.controller.stats
    assert set(stats.loads) == set(names)
    series = {n: len(stats.series[n]) for n in names}
    store.open.clear()  # the store takes no measure now
    try:
        stepping = threading.Thread(target=lambda: [_beat_and_step(cluster, names, clock, 5) for _ in range(6)])
        stepping.start()
        stepping.join(10)
        assert not stepping.is_alive(), "the passes waited for the stalled statistics"
        time.sleep(0.4)  # past the round's call timeout
        report = cluster.step()
        assert any("statistics: a round has run for more than" in e for e in report.errors)
        assert all(len(stats.series[n]) <= series[n] + 1 for n in names)  # at most the stalled round's
    finally:
        store.open.set()
    for _ in range(8):
        _beat_and_step(cluster, names, clock, 5)
    now = {n: len(stats.series[n]) for n in names}
    assert all(now[n] >= series[n] + 3 for n in names), (series, now)  # measured again, every host
    for name in names:
        stored = store.get(STATS + name)
        assert stored is not None and Load.from_dict(json.loads(stored.value)) == stats.loads[name]


class Counting(FakeFlavor):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__("fake", clock=clock.now)
        self.sampled: list[str] = []

    @hookimpl
    def clustercore_sample_host(self, host: Host, workloads: Sequence[Workload]) -> Sample | None:
        self.sampled.append(host.name)
        return super().clustercore_sample_host(host, workloads)


def test_a_manager_measures_between_its_passes_and_a_removed_host_is_forgotten() -> None:
    from clustercore.manager import Manager

    clock, store = FakeClock(), MemoryStore()
    flavor = Counting(clock)
    manager = Manager(store, "m1", plugins=Plugins([flavor], entry_points=False), clock=clock)
    operator, stats = manager.operator, manager.cluster.controller.stats
    operator.configure({"statistics": {"interval": 10}})

    def passes(count: int, names: Sequence[str] = ("h1", "h2"), between: bool = True) -> None:
        for _ in range(count):
            for name in names:
                operator.heartbeat(name)
            assert manager.step()
            if between:
                manager.between_passes()
                assert stats.settle(5), "a round did not end"  # a manager's pass waits for none
            clock.advance(10)  # every host due each pass

    for name in ("h1", "h2"):
        operator.register_host({"name": name, "capacity": {"cpu": 4, "memory": 8192}})
    passes(4, between=False)
    assert manager.cluster.host("h1").state is HostState.UP and not flavor.sampled  # no pass measures
    passes(6)
    assert {"h1", "h2"} <= set(flavor.sampled) and set(stats.loads) == {"h1", "h2"}
    assert manager.store.get(STATS + "h2") is not None
    operator.start_maintenance("h2")
    passes(4, ("h1",))
    operator.remove_host("h2")
    passes(4, ("h1",))
    assert set(stats.loads) == set(stats.series) == {"h1"}  # its measures forgotten, h1's go on


def test_a_managers_pass_waits_for_no_round_even_one_the_store_stalls() -> None:
    """A bare cluster's pass waits (at most its call wait) for the round its last pass
    started; a manager's never does: its round started between passes is taken once over."""
    from clustercore.manager import Manager

    clock, store = FakeClock(), StatsGate()
    manager = Manager(store, "m1", ttl=60, plugins=Plugins([FakeFlavor("fake", clock=clock.now)], entry_points=False),
                      clock=clock)
    operator, stats = manager.operator, manager.cluster.controller.stats
    operator.configure({"statistics": {"interval": 10}, "call_wait": 3.0, "call_timeout": 30.0})
    for name in ("h1", "h2"):
        operator.register_host({"name": name, "capacity": {"cpu": 4, "memory": 8192}})

    def passes(count: int) -> None:
        for _ in range(count):
            for name in ("h1", "h2"):
                operator.heartbeat(name)
            assert manager.step()
            manager.between_passes()
            clock.advance(10)

    passes(4)
    assert stats.settle(5)
    store.open.clear()  # the next round blocks writing its measures
    try:
        passes(2)
        stepping = threading.Thread(target=passes, args=(4,))  # waiting, these would take 4 x 3 s
        stepping.start()
        stepping.join(6)
        assert not stepping.is_alive(), "a manager's pass waited for the stalled round"
        assert not stats.settle(0), "the round should still be blocked"
    finally:
        store.open.set()
    assert stats.settle(5)
    passes(2)
    assert stats.settle(5) and set(stats.loads) == {"h1", "h2"}


def test_a_measure_that_hangs_holds_up_none_of_its_hosts_other_calls() -> None:
    clock, hanging = FakeClock(), Hanging()
    config = ClusterConfig(statistics=StatsPolicy(interval=10), call_timeout=30, call_wait=0.2)
    cluster = Cluster(plugins=Plugins([FakeFlavor("fake", clock=clock.now), hanging], entry_points=False),
                      clock=clock, config=config)
    cluster.register_host({"name": "h3", "capacity": {"cpu": 4, "memory": 8192}})
    try:
        for _ in range(4):
            _beat_and_step(cluster, ("h3",), clock, 10)  # its measure asked, and hanging
        measure = cluster.controller.calls.get(("stats", "h3"))
        assert measure is not None and not measure.future.done()
        cluster.start_maintenance("h3")  # asks the flavors on the host's own lane
        for _ in range(6):
            _beat_and_step(cluster, ("h3",), clock, 1)
        assert cluster.host("h3").state is HostState.MAINTENANCE
    finally:
        hanging.release.set()
