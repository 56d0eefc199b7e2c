"""Maintenance on real libvirt hosts: a drain by live migration, a cancel halfway, a
destination that dies mid-migration; the store always agrees with libvirt."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from clustercore import Cluster, ClusterConfig, FakeClock, Host, HostReport, HostState, Plugins, hookimpl
from flavors.virt import VirtFlavor
from flavors.virt.driver import LibvirtDriver
from flavors.virt.lab import Lab, domain_type
from flavors.virt.migration import MigrationPolicy, Migrator
from flavors.virt.spec import Graphics, Memory, VMSpec
from flavors.virt.workload import vm_workload

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(3, base_port=16740) as lab:
        yield lab


class Harness:
    def __init__(self, lab: Lab, migrator: Migrator | None = None, parallel: int = 2, *more: object) -> None:
        self.lab = lab
        self.clock = FakeClock()
        self.pool = ThreadPoolExecutor(4)
        self.driver = LibvirtDriver(shutdown_timeout=0.5, migrator=migrator)
        self.cluster = Cluster(plugins=Plugins([VirtFlavor(self.driver), *more], entry_points=False), clock=self.clock,
                               config=ClusterConfig(drain_parallel=parallel), executor=self.pool)
        self.silent: set[str] = set()

    def join(self, *names: str) -> None:
        for host in self.lab.hosts:
            if host.name in names:
                self.cluster.register_host({"name": host.name, "address": host.uri,
                                            "capacity": {"cpu": 8, "memory": 4096},
                                            "labels": {"virt/migration-uri": "tcp://127.0.0.1"}})
        for name in names:
            self.until(lambda n=name: self.cluster.host(n).state is HostState.UP)

    def tick(self) -> None:
        for name in self.cluster.hosts():
            if name not in self.silent:
                self.cluster.heartbeat(name, HostReport())
        self.clock.advance(1)
        self.cluster.step()
        time.sleep(0.1)  # real time for the migrations running in the pool

    def until(self, done: Any, limit: float = 120.0) -> None:
        deadline = time.monotonic() + limit
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"not reached in {limit} s: {self.cluster.query_events()[-5:]}")
            self.tick()

    def guests(self, n: int) -> None:
        for i in range(n):
            spec = VMSpec(name=f"g{i}", uuid=str(uuid.uuid5(uuid.NAMESPACE_DNS, f"maint-g{i}")), memory=Memory(64),
                          domain_type=domain_type(), graphics=(Graphics(),))
            self.cluster.submit(vm_workload(spec))

    def libvirt_runs(self) -> dict[str, list[str]]:
        out = {}
        for host in self.lab.hosts:
            if not host.running:
                continue
            out[host.name] = host.active_domains()
        return out

    def consistent(self) -> dict[str, list[str]]:
        """Store and libvirt agree on every live host; every guest runs exactly once."""
        runs = self.libvirt_runs()
        stored: dict[str, list[str]] = {name: [] for name in runs}
        for p in self.cluster.placements().values():
            stored.setdefault(p.host, []).append(p.workload)
        assert {h: sorted(v) for h, v in stored.items() if h in runs} == runs
        counts = Counter(g for names in runs.values() for g in names)
        assert all(c == 1 for c in counts.values()), counts
        return runs

    def close(self) -> None:
        self.cluster.controller.drainer.wait(60)
        for name in list(self.cluster.placements()):
            with contextlib.suppress(Exception):  # a guest on a powered-off host
                self.cluster.stop(name, force=True)
        self.pool.shutdown()
        self.driver.close()


@pytest.fixture
def harness(lab: Lab) -> Iterator[Harness]:
    for host in lab.hosts:
        host.power_on()
    h = Harness(lab)
    yield h
    h.close()


def test_maintenance_drains_six_guests_to_the_other_hosts(harness: Harness) -> None:
    harness.join("lab1")
    harness.guests(6)
    harness.join("lab2", "lab3")
    assert harness.consistent() == {"lab1": [f"g{i}" for i in range(6)], "lab2": [], "lab3": []}
    harness.cluster.start_maintenance("lab1")
    harness.until(lambda: harness.cluster.host("lab1").state is HostState.MAINTENANCE)
    runs = harness.consistent()
    assert runs["lab1"] == [] and len(runs["lab2"]) + len(runs["lab3"]) == 6
    assert runs["lab2"] and runs["lab3"]  # spread, not piled on one host
    migrated = [e for e in harness.cluster.query_events() if e.kind == "migrated"]
    assert len(migrated) == 6 and all(e.reason == "drain of lab1" for e in migrated)


def test_a_cancelled_maintenance_loses_and_duplicates_nothing(harness: Harness) -> None:
    harness.join("lab1")
    harness.guests(6)
    harness.join("lab2", "lab3")
    harness.cluster.start_maintenance("lab1")
    harness.until(lambda: sum(e.kind == "migrated" for e in harness.cluster.query_events()) >= 2)
    harness.cluster.cancel_maintenance("lab1")
    assert harness.cluster.host("lab1").state is HostState.UP
    harness.cluster.controller.drainer.wait(60)
    for _ in range(3):
        harness.tick()
    runs = harness.consistent()
    assert sum(len(v) for v in runs.values()) == 6
    assert 0 < len(runs["lab1"]) < 6  # some moved, the rest stayed: no new moves after the cancel
    moved = sum(e.kind == "migrated" for e in harness.cluster.query_events())
    for _ in range(5):
        harness.tick()
    assert sum(e.kind == "migrated" for e in harness.cluster.query_events()) == moved


class KillingMigrator(Migrator):
    """Powers off the destination of the first migration as soon as it is under way."""

    def __init__(self, lab: Lab) -> None:
        super().__init__(MigrationPolicy(bandwidth=1))
        self.lab = lab
        self.victim: str | None = None

    def migrate(self, dom: Any, dest: Any, **kw: Any) -> Any:
        if self.victim is None:
            self.victim = kw["target"]
            target = next(h for h in self.lab.hosts if h.name == kw["target"])

            def cut(progress: Any, _target: Any = target) -> None:
                if _target.running:
                    _target.power_off()

            kw["progress"] = cut
        return super().migrate(dom, dest, **kw)


def test_a_destination_killed_mid_migration_keeps_the_guest_and_the_drain_retries(lab: Lab) -> None:
    for host in lab.hosts:
        host.power_on()
    migrator = KillingMigrator(lab)
    harness = Harness(lab, migrator, parallel=1)
    try:
        harness.join("lab1")
        harness.guests(1)
        harness.join("lab2", "lab3")
        harness.cluster.start_maintenance("lab1")
        harness.until(lambda: harness.cluster.host("lab1").state is HostState.MAINTENANCE)
        victim = migrator.victim
        assert victim in ("lab2", "lab3")
        survivor = "lab3" if victim == "lab2" else "lab2"
        failed = [e for e in harness.cluster.query_events() if e.kind == "migration-failed"]
        assert failed and failed[0].new == victim and "lab1" in failed[0].old
        harness.silent.add(victim)
        runs = harness.consistent()
        assert runs == {"lab1": [], survivor: ["g0"]}
    finally:
        harness.close()
        for host in lab.hosts:
            host.power_on()


class NoopUpgrade:
    name = "noop-upgrade"

    def __init__(self) -> None:
        self.upgraded: list[str] = []

    @hookimpl
    def clustercore_upgrade_host(self, host: Host) -> None:
        self.upgraded.append(host.name)


def test_a_rolling_upgrade_of_three_hosts_keeps_every_guest_running(lab: Lab) -> None:
    for host in lab.hosts:
        host.power_on()
    upgrader = NoopUpgrade()
    harness = Harness(lab, None, 2, upgrader)
    try:
        harness.join("lab1", "lab2", "lab3")
        harness.guests(6)
        upgrade = harness.cluster.rolling_upgrade()
        percents = []
        while not upgrade.status.finished:
            harness.tick()
            status = upgrade.step()
            percents.append(status.percent)
            running = {g for names in harness.libvirt_runs().values() for g in names}
            assert running == {f"g{i}" for i in range(6)}  # all guests run at every moment we look
        assert upgrade.status.phase == "done", upgrade.status.failure
        assert sorted(upgrader.upgraded) == ["lab1", "lab2", "lab3"]
        assert percents == sorted(percents) and percents[-1] == 100.0
        harness.consistent()
        assert all(h.state is HostState.UP for h in harness.cluster.hosts().values())
    finally:
        harness.close()
