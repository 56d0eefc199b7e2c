"""Maintenance on real libvirt hosts with the project's real guest: a drain by live
migration, a cancel halfway, a destination that dies mid-migration, a rolling upgrade;
the store always agrees with libvirt, and after every migration each moved guest is
checked (:meth:`~flavors.virt.labcluster.LabCluster.check_guest`): its memory (the
in-guest dirtier, rewriting and checking 16 MiB, finds no page lost in the passes after
the move), its disk (the counter file on its disk, a clone on the shared domain, is
1..n without gap or duplicate) and its life (it keeps ticking, never restarted).

Four guests of 160 MiB where these tests had six OS-less 64 MiB ones: real guests boot
and run under TCG (kvm-pvm cannot boot Linux), every dirtier keeps a vCPU busy, and this
machine has 2 cores; four still make a drain spread over two hosts and a rolling upgrade
move guests from every host. Each test gets a lab of its own (same ports): its cluster
has its own config, migration engine or upgrade hook, and puts its storage on the lab."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from clustercore import ClusterConfig, Host, HostState, hookimpl
from flavors.virt.guest import GuestImage, build_guest
from flavors.virt.lab import Lab
from flavors.virt.labcluster import LabCluster
from flavors.virt.migration import MigrationPolicy, Migrator

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> GuestImage:
    return build_guest(tmp_path_factory.getbasetemp().parent / "clustercore-guest-cache")


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab(3, base_port=16740) as lab:
        yield lab


@contextlib.contextmanager
def lab_cluster(lab: Lab, image: GuestImage, parallel: int = 2, migrator: Migrator | None = None,
                plugins: Sequence[object] = ()) -> Iterator[LabCluster]:
    """A cluster of the lab's three hosts with its storage, moving ``parallel`` guests of a
    host at once (default liveness: the hosts are polled, nothing else is timed)."""
    lc = LabCluster(lab, ClusterConfig(drain_parallel=parallel), migrator=migrator, plugins=plugins)
    try:
        lc.up()
        lc.storage(image)
        yield lc
    finally:
        lc.cluster.controller.drainer.wait(60)
        lc.close()


def guests(lc: LabCluster, n: int, host: str | None = "lab1") -> list[str]:
    """``n`` real guests dirtying 16 MiB (on ``host``, else where the scheduler says), booted."""
    names = [f"g{i}" for i in range(n)]
    for name in names:
        lc.guest(name, host=host, ha=False, dirty_mib=16)
    lc.wait_booted(*names)
    return names


def libvirt_runs(lc: LabCluster) -> dict[str, list[str]]:
    """The active guests (paused ones too) of every lab host that is on."""
    return {host.name: host.active_domains() for host in lc.lab.hosts if host.running}


def consistent(lc: LabCluster) -> dict[str, list[str]]:
    """Store and libvirt agree on every live host; every guest runs exactly once."""
    runs = libvirt_runs(lc)
    stored: dict[str, list[str]] = {name: [] for name in runs}
    for p in lc.cluster.placements().values():
        stored.setdefault(p.host, []).append(p.workload)
    assert {h: sorted(v) for h, v in stored.items() if h in runs} == runs
    counts = Counter(g for names in runs.values() for g in names)
    assert all(c == 1 for c in counts.values()), counts
    return runs


def migrated(lc: LabCluster) -> list[str]:
    """The guests moved so far, one entry per move."""
    return [e.subject.removeprefix("workload/") for e in lc.cluster.query_events() if e.kind == "migrated"]


def test_maintenance_drains_four_guests_to_the_other_hosts(lab: Lab, image: GuestImage) -> None:
    with lab_cluster(lab, image) as lc:
        names = guests(lc, 4)
        assert consistent(lc) == {"lab1": names, "lab2": [], "lab3": []}
        lc.cluster.start_maintenance("lab1")
        lc.until(lambda: lc.cluster.host("lab1").state is HostState.MAINTENANCE, 120, "lab1 in Maintenance")
        runs = consistent(lc)
        assert runs["lab1"] == [] and len(runs["lab2"]) + len(runs["lab3"]) == 4
        assert runs["lab2"] and runs["lab3"]  # spread, not piled on one host
        events = [e for e in lc.cluster.query_events() if e.kind == "migrated"]
        assert len(events) == 4 and all(e.reason == "drain of lab1" for e in events)
        lc.check_guest(*names)


def test_a_cancelled_maintenance_loses_and_duplicates_nothing(lab: Lab, image: GuestImage) -> None:
    """One move at a time: a cancel stops new moves, the one under way ends, so with four
    guests (not six) and two moves at once the cancel after two could come with the other
    two already moving, and nothing would be left to stay."""
    with lab_cluster(lab, image, parallel=1) as lc:
        names = guests(lc, 4)
        lc.cluster.start_maintenance("lab1")
        lc.until(lambda: len(migrated(lc)) >= 2, 120, "two guests moved")
        lc.cluster.cancel_maintenance("lab1")
        assert lc.cluster.host("lab1").state is HostState.UP
        lc.cluster.controller.drainer.wait(60)
        for _ in range(3):
            lc.tick()
        runs = consistent(lc)
        assert sum(len(v) for v in runs.values()) == 4
        assert 0 < len(runs["lab1"]) < 4  # some moved, the rest stayed: no new moves after the cancel
        moved = len(migrated(lc))
        for _ in range(5):
            lc.tick()
        assert len(migrated(lc)) == moved
        assert set(migrated(lc)) == set(names) - set(runs["lab1"])
        lc.check_guest(*names)  # the moved ones and those that stayed


class KillingMigrator(Migrator):
    """Powers off the destination of the first migration as soon as it is under way (that
    one copies at 1 MiB/s: time to act while it moves); later ones run under the default
    policy (a real guest, paused for its copy, at 1 MiB/s would take a minute)."""

    def __init__(self, lab: Lab) -> None:
        super().__init__(MigrationPolicy())
        self.lab = lab
        self.victim: str | None = None

    def migrate(self, dom: Any, dest: Any, **kw: Any) -> Any:
        if self.victim is None:
            self.victim = kw["target"]
            target = self.lab.host(kw["target"])

            def cut(progress: Any, _target: Any = target) -> None:
                if _target.running:
                    _target.power_off()

            kw["progress"] = cut
            return Migrator(MigrationPolicy(bandwidth=1), self.limits).migrate(dom, dest, **kw)
        return super().migrate(dom, dest, **kw)


def test_a_destination_killed_mid_migration_keeps_the_guest_and_the_drain_retries(
        lab: Lab, image: GuestImage) -> None:
    migrator = KillingMigrator(lab)
    with lab_cluster(lab, image, parallel=1, migrator=migrator) as lc:
        guests(lc, 1)
        lc.cluster.start_maintenance("lab1")
        lc.until(lambda: lc.cluster.host("lab1").state is HostState.MAINTENANCE, 120, "lab1 in Maintenance")
        victim = migrator.victim
        assert victim in ("lab2", "lab3")
        survivor = "lab3" if victim == "lab2" else "lab2"
        failed = [e for e in lc.cluster.query_events() if e.kind == "migration-failed"]
        assert failed and failed[0].new == victim and "lab1" in failed[0].old
        runs = consistent(lc)
        assert runs == {"lab1": [], survivor: ["g0"]}
        lc.check_guest("g0")  # after the failed move and the one that succeeded


class NoopUpgrade:
    name = "noop-upgrade"

    def __init__(self) -> None:
        self.upgraded: list[str] = []

    @hookimpl
    def clustercore_upgrade_host(self, host: Host) -> None:
        self.upgraded.append(host.name)


def test_a_rolling_upgrade_of_three_hosts_keeps_every_guest_running(lab: Lab, image: GuestImage) -> None:
    """After each host's turn, the guests it moved are checked (memory, disk, ticking); at
    every look in between, no dirtier has found a lost page so far."""
    upgrader = NoopUpgrade()
    with lab_cluster(lab, image, plugins=[upgrader]) as lc:
        names = guests(lc, 4, host=None)
        upgrade = lc.cluster.rolling_upgrade()
        percents = []
        checked: set[str] = set()
        done = seen = 0  # hosts upgraded, moves checked
        while not upgrade.status.finished:
            lc.tick()
            status = upgrade.step()
            percents.append(status.percent)
            running = {g for guests in libvirt_runs(lc).values() for g in guests}
            assert running == set(names)  # all guests run at every moment we look
            assert not any(lost for name in names for lost in lc.lost(name))  # no page lost so far
            if len(status.done) > done:  # a host's turn ended (the next one begins at the next step)
                done, moves = len(status.done), migrated(lc)
                if moves[seen:]:
                    lc.check_guest(*sorted(set(moves[seen:])))
                checked |= set(moves[seen:])
                seen = len(moves)
        assert checked == set(names)  # every guest moved at least once, checked after its moves
        assert upgrade.status.phase == "done", upgrade.status.failure
        assert sorted(upgrader.upgraded) == ["lab1", "lab2", "lab3"]
        assert percents == sorted(percents) and percents[-1] == 100.0
        consistent(lc)
        assert all(h.state is HostState.UP for h in lc.cluster.hosts().values())
