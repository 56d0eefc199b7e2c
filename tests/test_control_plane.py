"""Nothing stops the control plane: a hung host costs only itself, no value or operator
call makes a pass raise, a partial configure merges, corrupt entries keep their hosts
protected."""

from __future__ import annotations

import threading
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustercore import Cluster, ClusterConfig, FakeClock, HostReport, HostState, Plugins, hookimpl
from clustercore.errors import ClusterError, StoreError
from clustercore.events import PREFIX as EVENTS
from clustercore.fencing import FencePolicy
from clustercore.leadership import LEADER_KEY
from clustercore.lifecycle import LivenessPolicy
from clustercore.manager import Manager
from clustercore.model import FenceDevice, Host, PlacementState
from clustercore.plugins import HostDescription
from clustercore.store.base import KeyValue, StoreEvent
from clustercore.store.memory import MemoryStore, MemoryWatch
from clustercore.testing import FakeFlavor

S = HostState
LIVENESS = LivenessPolicy(heartbeat_interval=1, missed_beats=2, non_responsive_grace=2, grace_per_workload=0)
FENCING = FencePolicy(startup_grace=0, soft_first=True, soft_wait=3, confirm_timeout=0, retries=0)


class Hanging(FakeFlavor):
    """Every call about a host named hung* blocks until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__("fake")
        self.release = threading.Event()

    def _hang(self, host: Host) -> None:
        if host.name.startswith("hung"):
            self.release.wait(60)

    @hookimpl
    def clustercore_bootstrap_host(self, host: Host) -> str | None:
        self._hang(host)
        return None

    @hookimpl
    def clustercore_describe_host(self, host: Host) -> HostDescription:
        self._hang(host)
        return HostDescription(facts={"simulated": True})

    @hookimpl
    def clustercore_soft_fence(self, host: Host) -> bool:
        self._hang(host)
        return False


class Agent:
    def __init__(self, flavor: FakeFlavor) -> None:
        self.flavor = flavor
        self.off: list[str] = []

    def power(self, device: FenceDevice, action: str, timeout: float) -> str:
        if action == "off":
            self.off.append(device.address)
            self.flavor.driver.running.pop(device.address, None)
        return "off" if device.address in self.off else "on"


def test_a_hung_host_costs_only_itself() -> None:
    clock = FakeClock()
    flavor = Hanging()
    c = Cluster(plugins=Plugins([flavor], entry_points=False), clock=clock, monotonic=clock.now,
                config=ClusterConfig(liveness=LIVENESS, fencing=FENCING, call_timeout=5, call_wait=0.5))
    agent = Agent(flavor)
    c.controller.fencer.agent_for = lambda _: agent
    c.controller.fencer.sleep = lambda _: None
    try:
        for name in ("h1", "h2", "h3", "hung1"):
            c.register_host({"name": name, "capacity": {"cpu": 8, "memory": 8192},
                             "fence_devices": [{"agent": "ipmi", "address": name}]})
        walls = []

        def tick(silent: tuple[str, ...] = ()) -> None:
            for name in ("h1", "h2", "h3", "hung1"):
                if name not in silent:
                    c.heartbeat(name, HostReport())
            clock.advance(1)
            started = time.monotonic()
            report = c.step()
            walls.append(time.monotonic() - started)
            assert report.store_error is None

        for _ in range(3):
            tick()
        assert [c.host(n).state for n in ("h1", "h2", "h3")] == [S.UP] * 3
        assert c.host("hung1").state is S.INSTALLING, "its bootstrap is still running, off the pass"
        for _ in range(5):
            tick()
        hung = c.host("hung1")
        assert hung.state is S.INSTALL_FAILED and "did not answer within 5 s" in hung.reason
        for name in ("web", "db"):
            c.submit({"name": name, "flavor": "fake", "ha": True, "requests": {"cpu": 1, "memory": 512},
                      "pinned": ["h2"]})
            c.update_workload(name, lambda w: w.__class__.from_dict({**w.to_dict(), "pinned": []}))
        # h2 is cut off: the soft fence of a hung host never answers, h2 is fenced on time all the same.
        c.register_host({"name": "hung2", "capacity": {"cpu": 1, "memory": 1}})
        for _ in range(20):
            tick(silent=("h2",))
            if c.host("h2").state is S.DOWN and all(
                    p.state is PlacementState.RUNNING for p in c.placements().values()):
                break
        assert c.host("h2").state is S.DOWN and agent.off == ["h2"]
        placements = c.placements()
        assert {placements[n].host for n in ("web", "db")} <= {"h1", "h3"}
        assert all(flavor.driver.where(n) == [placements[n].host] for n in ("web", "db"))
        assert max(walls) < 1.5, f"a pass waited on a hung host longer than call_wait: {max(walls):.2f} s"
    finally:
        flavor.release.set()


def test_a_partial_configure_merges_and_bad_values_are_refused_before_they_are_written() -> None:
    c = Cluster(plugins=Plugins([FakeFlavor("fake")], entry_points=False), clock=FakeClock())
    c.configure({"fencing": {"enabled": False}, "drain_parallel": 4})
    c.configure({"drain_parallel": 3})
    assert c.config.fencing.enabled is False and c.config.drain_parallel == 3
    for bad in ({"policy": "evenly-distributed"}, {"events_retained": 0}, {"orphan_after": 10**400},
                {"liveness": {"heartbeat_interval": -1}}, {"nonsense": 1}):
        try:
            c.configure(bad)
        except (ClusterError, ValueError):
            pass
        else:
            raise AssertionError(f"accepted {bad}")
    assert c.config.drain_parallel == 3 and c.config.policy == "evenly_distributed"


def test_a_corrupt_config_leaves_the_last_good_one_in_force_with_an_event() -> None:
    c = Cluster(plugins=Plugins([FakeFlavor("fake")], entry_points=False), clock=FakeClock())
    c.configure({"drain_parallel": 5})
    c.step()
    for garbage in (b"{not json", b'{"events_retained": 0}', b"[]"):
        c.store.put("config/cluster", garbage)
        report = c.step()
        assert report.store_error is None
        assert c.config.drain_parallel == 5
    assert len(c.query_events(kind="config-corrupt")) == 3


def test_a_corrupt_host_is_still_judged_fenced_and_its_workloads_restarted() -> None:
    clock = FakeClock()
    flavor = FakeFlavor("fake")
    c = Cluster(plugins=Plugins([flavor], entry_points=False), clock=clock,
                config=ClusterConfig(liveness=LIVENESS, fencing=FencePolicy(startup_grace=0, soft_first=False,
                                                                            confirm_timeout=0, retries=0)))
    agent = Agent(flavor)
    c.controller.fencer.agent_for = lambda _: agent
    for name in ("h1", "h2"):
        c.register_host({"name": name, "capacity": {"cpu": 8, "memory": 8192},
                         "fence_devices": [{"agent": "ipmi", "address": name}]})
    for _ in range(3):
        for name in ("h1", "h2"):
            c.heartbeat(name, HostReport())
        clock.advance(1)
        c.step()
    c.submit({"name": "w", "flavor": "fake", "ha": True, "requests": {"cpu": 1, "memory": 1}, "pinned": ["h2"]})
    c.update_workload("w", lambda w: w.__class__.from_dict({**w.to_dict(), "pinned": []}))
    c.store.put("hosts/h2", b'{"name": "h2", "capacity": "lots"}')
    for _ in range(12):
        c.heartbeat("h1", HostReport())
        clock.advance(1)
        c.step()
    assert c.query_events(kind="host-corrupt")
    assert agent.off == ["h2"] and c.host("h2").state is S.DOWN, "fenced, and the entry is whole again"
    assert c.placements()["w"].host == "h1" and flavor.driver.where("w") == ["h1"]


OPERATIONS = st.sampled_from(["register", "approve", "maintenance", "cancel", "activate", "confirm_down",
                              "remove", "submit", "stop", "configure", "corrupt_config", "corrupt_host",
                              "heartbeat", "silence"])
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-(10**20), 10**400), st.floats(allow_nan=True),
                   st.text(max_size=8), st.lists(st.integers(), max_size=2))
CONFIG_KEYS = st.sampled_from(["policy", "events_retained", "drain_parallel", "orphan_after", "call_timeout",
                               "overcommit", "liveness", "fencing", "approval_required", "ha_headroom"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(OPERATIONS, st.sampled_from(["h1", "h2", "h3"]), CONFIG_KEYS, VALUES), max_size=25))
def test_no_operator_call_or_value_makes_a_pass_raise(ops: list[tuple[str, str, str, Any]]) -> None:
    clock = FakeClock()
    flavor = FakeFlavor("fake")
    c = Cluster(plugins=Plugins([flavor], entry_points=False), clock=clock,
                config=ClusterConfig(liveness=LIVENESS, fencing=FencePolicy(startup_grace=0, soft_first=False,
                                                                            confirm_timeout=0, retries=0)))
    c.controller.fencer.agent_for = lambda _: Agent(flavor)
    silent: set[str] = set()
    for n, (op, host, key, value) in enumerate(ops):
        try:
            if op == "register":
                c.register_host({"name": host, "capacity": {"cpu": 4, "memory": value if isinstance(value, int)
                                                            and not isinstance(value, bool) else 4096}})
            elif op in ("approve", "activate", "remove"):
                getattr(c, f"{op}_host")(host)
            elif op == "confirm_down":
                c.confirm_down(host)
            elif op == "maintenance":
                c.start_maintenance(host, stop_unmovable=bool(value))
            elif op == "cancel":
                c.cancel_maintenance(host)
            elif op == "submit":
                c.submit({"name": f"w{n}", "flavor": "fake", "ha": bool(value), "requests": {"cpu": 1, "memory": 1}})
            elif op == "stop":
                for name in list(c.placements())[:1]:
                    c.stop(name)
            elif op == "configure":
                c.configure({key: value})
            elif op == "corrupt_config":
                c.store.put("config/cluster", str(value).encode())
            elif op == "corrupt_host":
                c.store.put(f"hosts/{host}", repr({key: value}).encode())
            elif op == "silence":
                silent.symmetric_difference_update({host})
        except (ClusterError, ValueError):
            pass
        for name in ("h1", "h2", "h3"):
            if name not in silent:
                c.heartbeat(name, HostReport())
        clock.advance(1)
        report = c.step()  # must not raise, whatever came before
        assert report.store_error is None
    status = [p.state for p in c.placements().values()]
    assert all(isinstance(s, PlacementState) for s in status)


class StallingStore(MemoryStore):
    """A memory store whose watches (what every pass begins with: its informers) block
    while ``open`` is clear (a pass stuck in its store; the elector's calls still go
    through)."""

    def __init__(self) -> None:
        super().__init__()
        self.open = threading.Event()
        self.open.set()

    def _drain(self, watch: MemoryWatch, timeout: float | None) -> list[StoreEvent]:
        self.open.wait(30)
        return super()._drain(watch, timeout)


def test_a_pass_that_overruns_its_limit_gives_the_leadership_up() -> None:
    store = StallingStore()
    Cluster(store=store, plugins=Plugins([FakeFlavor("fake")], entry_points=False)).configure({"orphan_after": 0})
    m = Manager(store, "m1", ttl=3.0, pass_limit=0.5, plugins=Plugins([FakeFlavor("fake")], entry_points=False))
    stop = threading.Event()
    runner = threading.Thread(target=m.run, args=(0.05, stop), daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 5
        while store.get(LEADER_KEY) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.get(LEADER_KEY) is not None and m.elector.leading
        store.open.clear()  # the next pass sticks in the store
        stuck = time.monotonic()
        while store.get(LEADER_KEY) is not None and time.monotonic() < stuck + 5:
            time.sleep(0.02)
        given_up = time.monotonic() - stuck
        assert store.get(LEADER_KEY) is None, "a stuck leader kept its lease"
        assert given_up < 3.0, f"gave the lease up after {given_up:.1f} s (TTL 3 s)"
        store.open.set()
        deadline = time.monotonic() + 5
        while not m.elector.leading and time.monotonic() < deadline:
            time.sleep(0.02)
        assert m.elector.leading, "once unstuck it campaigns and leads again"
    finally:
        store.open.set()
        stop.set()
        runner.join(10)
    assert not runner.is_alive() and store.get(LEADER_KEY) is None, "stopping resigns"


class SlowEventListing(MemoryStore):
    """A memory store whose listing of the events (what pruning them begins with) blocks
    while ``open`` is clear."""

    def __init__(self) -> None:
        super().__init__()
        self.open = threading.Event()
        self.open.set()
        self.listings = 0
        self.fail = False

    def list(self, prefix: str) -> list[KeyValue]:
        if prefix == EVENTS:
            self.listings += 1
            self.open.wait(30)
            if self.fail:
                raise StoreError("the events cannot be listed")
        return super().list(prefix)


def test_the_events_are_pruned_off_the_pass() -> None:
    store = SlowEventListing()
    cluster = Cluster(store=store, plugins=Plugins([FakeFlavor("fake")], entry_points=False),
                      config=ClusterConfig(events_retained=10))
    names = [f"h{i}" for i in range(8)]
    for name in names:
        cluster.register_host({"name": name, "capacity": {"cpu": 4, "memory": 8192}})
        cluster.heartbeat(name)
    store.open.clear()  # pruning sticks in the store
    try:
        stepping = threading.Thread(target=lambda: [cluster.step() for _ in range(3)])
        stepping.start()
        stepping.join(10)
        assert not stepping.is_alive(), "a pass waited for the events' pruning"
        assert store.listings == 1 and all(cluster.host(n).state is S.UP for n in names)
        written = [kv.key for kv in sorted(MemoryStore.list(store, EVENTS), key=lambda kv: kv.mod_revision)]
        assert len(written) > 10
    finally:
        store.open.set()
    deadline = time.monotonic() + 5
    while len(MemoryStore.list(store, EVENTS)) != 10 and time.monotonic() < deadline:
        cluster.step()
        time.sleep(0.01)
    assert {kv.key for kv in MemoryStore.list(store, EVENTS)} == set(written[-10:])  # the newest kept


def test_a_prune_that_fails_is_reported_by_a_later_pass_and_tried_again() -> None:
    store = SlowEventListing()
    store.fail = True
    cluster = Cluster(store=store, plugins=Plugins([FakeFlavor("fake")], entry_points=False),
                      config=ClusterConfig(events_retained=10))
    for name in ("h1", "h2", "h3", "h4", "h5", "h6"):
        cluster.register_host({"name": name, "capacity": {"cpu": 4, "memory": 8192}})
        cluster.heartbeat(name)
    errors: list[str] = []
    deadline = time.monotonic() + 5
    while not any("events not pruned" in e for e in errors) and time.monotonic() < deadline:
        errors += cluster.step().errors
        time.sleep(0.01)
    assert any("events not pruned: the events cannot be listed" in e for e in errors)
    assert all(h.state is S.UP for h in cluster.hosts().values())  # nothing else held up
    assert len(MemoryStore.list(store, EVENTS)) > 10
    store.fail = False  # no event written since: the failed prune is due again all the same
    deadline = time.monotonic() + 5
    while len(MemoryStore.list(store, EVENTS)) > 10 and time.monotonic() < deadline:
        cluster.step()
        time.sleep(0.01)
    assert len(MemoryStore.list(store, EVENTS)) == 10
