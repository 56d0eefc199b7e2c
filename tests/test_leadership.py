"""One leader among managers; a deposed leader's writes are rejected by the store itself;
a partitioned leader stops acting before anyone else can lead. On the memory store with
a fake clock, and on a real 3-member etcd with a cut connection."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import attrs
import pytest

from clustercore import ClusterConfig, FakeClock, HostReport, HostState, Plugins, Workload
from clustercore.agent import HostAgent
from clustercore.cluster import Cluster
from clustercore.errors import NotLeader, StoreError
from clustercore.fencing import FencePolicy
from clustercore.leadership import Elector, GuardedStore
from clustercore.lifecycle import LivenessPolicy
from clustercore.manager import Manager, open_store, status
from clustercore.model import FenceDevice, Host, Placement, PlacementState, Resources
from clustercore.state import encode
from clustercore.store.etcd import EtcdStore
from clustercore.store.memory import MemoryStore
from clustercore.testing import EtcdCluster, FakeFlavor


def test_one_leader_and_a_takeover_when_its_lease_expires() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    a = Elector(store, "a", ttl=10, monotonic=clock.now)
    b = Elector(store, "b", ttl=10, monotonic=clock.now)
    assert a.campaign() and not b.campaign()
    assert a.leader() == "a" and a.may_act() and not b.may_act()
    clock.advance(6)
    assert a.renew()
    clock.advance(9)
    assert not b.campaign()  # a renewed 9 s ago: still its lease
    clock.advance(2)  # a stopped renewing (crashed): its lease is gone
    assert b.campaign() and b.leader() == "b" and b.token > a.token
    assert not a.renew() and not a.leading


def test_a_deposed_leaders_late_write_is_rejected_by_the_store() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    a = Elector(store, "a", ttl=10, monotonic=clock.now)
    guarded = GuardedStore(store, a)
    assert a.campaign()
    guarded.put("hosts/h1", b"1")
    clock.advance(11)
    b = Elector(store, "b", ttl=10, monotonic=clock.now)
    assert b.campaign()
    # a has not noticed yet (it did not renew), but the store refuses its write:
    assert a.leading and not a.may_act()
    with pytest.raises(NotLeader) as info:
        guarded.put("hosts/h1", b"2")
    assert info.value.manager == "a" and info.value.token == a.token
    assert store.get("hosts/h1").value == b"1"  # type: ignore[union-attr]


def managers(store: MemoryStore, clock: FakeClock, flavor: FakeFlavor, n: int = 3) -> list[Manager]:
    out = []
    for i in range(n):
        m = Manager(store, f"m{i}", ttl=10, plugins=Plugins([flavor], entry_points=False), clock=clock)
        m.elector.monotonic = clock.now
        out.append(m)
    return out


def test_the_leader_dies_as_a_host_turns_non_responsive_and_the_next_one_fences_it_once() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    flavor = FakeFlavor("fake")
    ms = managers(store, clock, flavor)
    cfg = ClusterConfig(liveness=LivenessPolicy(heartbeat_interval=1, missed_beats=2, non_responsive_grace=2,
                                                grace_per_workload=0),
                        fencing=FencePolicy(startup_grace=0, soft_first=False, confirm_timeout=0, retries=0))
    admin = Cluster(store=store, plugins=Plugins([flavor], entry_points=False), clock=clock, config=cfg)
    powered = {"h1": True, "h2": True, "h3": True}
    fenced: list[str] = []

    class Agent:
        def power(self, device: FenceDevice, action: str, timeout: float) -> str:
            name = device.address
            if action == "off":
                fenced.append(name)
                powered[name] = False
                flavor.driver.running.pop(name, None)  # a power cut kills what ran there
            return "on" if powered[name] else "off"

    for m in ms:
        m.cluster.controller.fencer.agent_for = lambda _: Agent()
        m.cluster.controller.fencer.sleep = lambda _: None
    for name in powered:
        admin.register_host({"name": name, "capacity": {"cpu": 4, "memory": 4096},
                             "fence_devices": [{"agent": "ipmi", "address": name}]})
    for _ in range(3):
        for name in powered:
            admin.heartbeat(name, HostReport())
        clock.advance(1)
        for m in ms:
            m.step()
    assert [m.elector.leading for m in ms] == [True, False, False]
    admin.submit(Workload("w", "fake", requests=Resources(1, 512), ha=True))
    assert len(flavor.driver.where("w")) == 1
    # The workload's host goes silent; the leader m0 "dies" (stops, no resign) as the host turns NonResponsive.
    victim = admin.placements()["w"].host
    for _ in range(10):
        if admin.host(victim).state is HostState.NON_RESPONSIVE:
            break
        for n in powered:
            if n != victim:
                admin.heartbeat(n, HostReport())
        clock.advance(1)
        ms[0].step()
    survivors = ms[1:]
    for _ in range(30):
        for n in powered:
            if powered[n] and n != victim:
                admin.heartbeat(n, HostReport())
        clock.advance(1)
        for m in survivors:
            m.step()
    new = [m for m in survivors if m.elector.leading]
    assert len(new) == 1 and new[0].elector.token > ms[0].elector.token
    assert fenced.count(victim) == 1 and not powered[victim]
    assert len(flavor.driver.where("w")) == 1 and flavor.driver.where("w")[0] != victim
    # the dead leader wakes up: it cannot act any more
    with pytest.raises(NotLeader):
        ms[0].cluster.store.put("hosts/x", b"")


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    with EtcdCluster(3, base_port=23810) as cluster:
        yield cluster


@pytest.mark.slow
def test_a_partitioned_leader_stops_acting_before_another_is_elected_and_its_late_writes_fail(
        etcd: EtcdCluster) -> None:
    import time

    prefix = f"/lead/{uuid.uuid4().hex[:8]}/"
    old_store, new_store = EtcdStore(etcd.url, prefix=prefix), EtcdStore(etcd.url, prefix=prefix)
    old = Elector(old_store, "old", ttl=3, margin=1)
    new = Elector(new_store, "new", ttl=3, margin=1)
    assert old.campaign() and not new.campaign()
    guarded = GuardedStore(old_store, old)
    guarded.put("hosts/h1", b"by old")
    endpoints = old_store.endpoints
    old_store.endpoints = ["http://127.0.0.1:9"]  # its connection to etcd is cut
    stopped_acting = elected = None
    start = time.monotonic()
    while elected is None and time.monotonic() - start < 15:
        old.renew()
        if stopped_acting is None and not old.may_act():
            stopped_acting = time.monotonic() - start
        if new.campaign():
            elected = time.monotonic() - start
        time.sleep(0.1)
    assert stopped_acting is not None and elected is not None
    assert stopped_acting < elected  # it stopped acting before anyone else could lead
    assert elected < 3 + 2  # within the lease TTL (+ etcd's expiry granularity)
    old_store.endpoints = endpoints  # the partition heals: a late write must still fail
    with pytest.raises((NotLeader, StoreError)):
        guarded.put("hosts/h1", b"late write by old")
    assert new_store.get("hosts/h1").value == b"by old"  # type: ignore[union-attr]


def test_status_shows_the_leader_and_the_hosts() -> None:
    import io

    store = open_store("memory://")
    m = Manager(store, "m1", plugins=Plugins([FakeFlavor("fake")], entry_points=False))
    m.step()
    Cluster(store=store, plugins=Plugins([FakeFlavor("fake")], entry_points=False)).register_host(
        {"name": "h1", "capacity": {"cpu": 1, "memory": 1}})
    out = io.StringIO()
    status(store, out)
    text = out.getvalue()
    assert text.startswith("leader: m1 (token ") and "h1" in text and "1 host(s)" in text


def test_corrupt_or_foreign_data_under_the_prefix_is_reported_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    m = Manager(store, "m1", plugins=Plugins([FakeFlavor("fake")], entry_points=False))
    Cluster(store=store, plugins=Plugins([FakeFlavor("fake")], entry_points=False)).register_host(
        {"name": "good", "capacity": {"cpu": 1, "memory": 1}})
    store.put("hosts/bad", b"{not json")
    store.put("something/foreign", b"\x00\xff")
    assert m.step()  # leads, and does not crash
    assert "corrupt store entry 'hosts/bad'" in caplog.text
    m.step()
    assert list(m.cluster.hosts()) == ["good"]


def test_heartbeats_on_a_lease_vanish_with_the_agent_and_a_new_leader_sees_the_host_silent() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    flavor = FakeFlavor("fake")
    admin = Cluster(store=store, plugins=Plugins([flavor], entry_points=False), clock=clock)
    admin.register_host({"name": "h1", "capacity": {"cpu": 1, "memory": 1}})
    agent = HostAgent(store, "h1", interval=5, report=lambda: HostReport(boot_id="b1"), monotonic=clock.now,
                      credential=admin.credentials["h1"])
    assert agent.ttl == 20
    m1, m2 = managers(store, clock, flavor, 2)
    leases = set()
    for _ in range(6):
        assert agent.beat()
        leases.add(agent.lease)
        clock.advance(5)
        m1.step()
        m2.step()
    kv = store.get("heartbeats/h1")
    assert kv is not None and leases == {kv.lease}  # one lease, kept alive all along
    assert agent.requests == 1 + 6 + 2  # a grant, six heartbeats, keepalives at 10 s and 20 s (half the TTL)
    assert admin.host("h1").state is HostState.UP and m1.elector.leading
    # The agent and the leader die together; the lease ends the heartbeat key for everyone.
    clock.advance(21)
    assert store.get("heartbeats/h1") is None
    for _ in range(40):
        clock.advance(5)  # within the managers' 10 s lease TTL
        m2.step()
    assert m2.elector.leading
    assert admin.host("h1").state in (HostState.CONNECTING, HostState.NON_RESPONSIVE, HostState.FENCING,
                                      HostState.DOWN)
    # The agent comes back: its expired lease is replaced and the key is there again.
    old = agent.lease
    assert agent.beat() and agent.lease != old and store.get("heartbeats/h1") is not None


def test_an_agent_whose_probe_fails_writes_nothing() -> None:
    store = MemoryStore()
    up = [True]
    agent = HostAgent(store, "h1", interval=1, probe=lambda: up[0])
    assert agent.beat()
    first = store.get("heartbeats/h1")
    assert first is not None and HostReport.from_dict(json.loads(first.value)).boot_id  # this kernel's boot id
    up[0] = False
    assert not agent.beat()
    assert store.get("heartbeats/h1") == first


def settle_setup(orphan_after: float = 30) -> tuple[FakeClock, MemoryStore, FakeFlavor, Cluster, list[Manager]]:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    flavor = FakeFlavor("fake")
    admin = Cluster(store=store, plugins=Plugins([flavor], entry_points=False), clock=clock,
                    config=ClusterConfig(orphan_after=orphan_after))
    for name in ("h1", "h2", "h3"):
        admin.register_host({"name": name, "capacity": {"cpu": 8, "memory": 8192}})
    ms = managers(store, clock, flavor, 2)
    for _ in range(3):
        for name in ("h1", "h2", "h3"):
            admin.heartbeat(name, HostReport())
        clock.advance(1)
        for m in ms:
            m.step()
    assert all(h.state is HostState.UP for h in admin.hosts().values())
    return clock, store, flavor, admin, ms


def test_a_new_leader_settles_what_a_dead_leader_left_starting_or_migrating() -> None:
    clock, _, flavor, admin, (_, m1) = settle_setup()
    run = flavor.driver.running
    for name, ha in (("done", False), ("undone", False), ("started", False), ("never", True)):
        admin.store.put(f"workloads/{name}", encode(Workload(name, "fake", requests=Resources(1, 256), ha=ha)))
    # What m0 was doing when it died: two migrations h1 -> h2 (one finished in the driver, one
    # not), a start that happened and one that never did.
    states = {"done": Placement("done", "h1", PlacementState.MIGRATING, clock.now(), "h2"),
              "undone": Placement("undone", "h1", PlacementState.MIGRATING, clock.now(), "h2"),
              "started": Placement("started", "h3", PlacementState.STARTING, clock.now()),
              "never": Placement("never", "h3", PlacementState.STARTING, clock.now())}
    for name, p in states.items():
        admin.store.put(f"placements/{name}", encode(p))
    run.setdefault("h2", set()).add("done")
    run.setdefault("h1", set()).add("undone")
    run.setdefault("h3", set()).add("started")
    for _ in range(60):  # m0 is dead; m1 takes over after its lease
        for name in ("h1", "h2", "h3"):
            admin.heartbeat(name, HostReport())
        clock.advance(1)
        m1.step()
        if m1.elector.leading and clock.now() - m1.cluster.controller.started < 29:
            # not before orphan_after: a client may still be starting it
            assert {n: p.state for n, p in admin.placements().items()} == {n: p.state for n, p in states.items()}
    placements = admin.placements()
    assert (placements["done"].host, placements["done"].state) == ("h2", PlacementState.RUNNING)
    assert (placements["undone"].host, placements["undone"].state) == ("h1", PlacementState.RUNNING)
    assert (placements["started"].host, placements["started"].state) == ("h3", PlacementState.RUNNING)
    assert placements["never"].state is PlacementState.RUNNING  # Failed, then restarted (HA)
    assert all(len(flavor.driver.where(n)) == 1 for n in states)
    kinds = {(e.subject, e.kind) for e in admin.query_events()}
    assert {("workload/done", "migrated"), ("workload/undone", "migration-failed"), ("workload/started", "started"),
            ("workload/never", "failed"), ("workload/never", "restarted")} <= kinds


def test_a_drain_waits_for_a_move_a_dead_leader_left_and_does_not_start_it_twice() -> None:
    clock, _, flavor, admin, (_, m1) = settle_setup(orphan_after=10)
    admin.submit(Workload("w", "fake", requests=Resources(1, 256)))
    source = admin.placements()["w"].host
    target = next(h for h in ("h1", "h2", "h3") if h != source)
    admin.start_maintenance(source)
    p = admin.placements()["w"]
    admin.store.put("placements/w", encode(attrs.evolve(p, state=PlacementState.MIGRATING, target=target)))
    flavor.driver.running[source].discard("w")  # the move had finished in the driver when m0 died
    flavor.driver.running.setdefault(target, set()).add("w")
    migrations: list[str] = []
    migrate = flavor.driver.migrate

    def counted(workload: Workload, s: Host, t: Host) -> None:
        migrations.append(workload.name)
        migrate(workload, s, t)

    flavor.driver.migrate = counted  # type: ignore[method-assign]
    for _ in range(60):
        for name in ("h1", "h2", "h3"):
            admin.heartbeat(name, HostReport())
        clock.advance(1)
        m1.step()
    assert admin.host(source).state is HostState.MAINTENANCE
    assert admin.placements()["w"].host == target and migrations == []
    assert flavor.driver.where("w") == [target]


@pytest.mark.parametrize("finished", [True, False])
def test_a_move_whose_source_goes_down_is_found_on_its_target_or_restarted_once(finished: bool) -> None:
    clock, _, flavor, admin, (m0, _) = settle_setup()
    admin.configure(attrs.evolve(admin.config, liveness=LivenessPolicy(non_responsive_grace=5),
                                 fencing=FencePolicy(startup_grace=0)))
    admin.submit(Workload("w", "fake", requests=Resources(1, 256), ha=True))
    source = admin.placements()["w"].host
    target = next(h for h in ("h1", "h2", "h3") if h != source)
    p = admin.placements()["w"]
    admin.store.put("placements/w", encode(attrs.evolve(p, state=PlacementState.MIGRATING, target=target)))
    flavor.driver.running[source].discard("w")  # the source dies now: what ran there is gone
    if finished:  # ... but the move had finished just before
        flavor.driver.running.setdefault(target, set()).add("w")
    for _ in range(60):
        for name in ("h1", "h2", "h3"):
            if name != source:
                admin.heartbeat(name, HostReport())
        clock.advance(1)
        m0.step()
        if admin.host(source).state is HostState.NON_RESPONSIVE:
            admin.confirm_down(source)  # no fence device: the operator's word
    assert admin.host(source).state is HostState.DOWN
    placement = admin.placements()["w"]
    assert placement.state is PlacementState.RUNNING and flavor.driver.where("w") == [placement.host]
    kinds = [e.kind for e in admin.query_events() if e.subject == "workload/w"]
    if finished:
        assert placement.host == target and "restarted" not in kinds and kinds[-1] == "migrated"
    else:
        assert placement.host != source and kinds.count("restarted") == 1
