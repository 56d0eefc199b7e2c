"""One end-to-end suite for every flavor (issue 17, item 3): the same scenarios, on real
hosts, for VMs (libvirt lab, the project's real guest) and containers (podman lab, the
counting container). Only :mod:`tests.flavor_rigs` knows a flavor: how to place a
workload, where the hosts say it runs, and what "moved, not restarted" means for it.

Hosts join and workloads are placed; a maintenance drains a host; a maintenance
cancelled halfway; the destination dies mid-move; a power cut is fenced through the
host's BMC and its HA workloads run elsewhere exactly once; a rolling upgrade keeps every
workload running; the leader of three manager processes on etcd is killed mid-drain and
the next one finishes it. After each, the store agrees with the hosts and every workload runs
exactly once; every moved workload kept its memory. The VM lab uses ports 16740..16742
(a fresh lab per test: each puts its storage on it), the podman lab 17140..17142, etcd
23900..23905."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("podman", reason="the containers extra (podman-py) is not installed")

from clustercore import ClusterConfig, HostState
from clustercore.agent import HostAgent
from clustercore.leadership import LEADER_KEY
from clustercore.model import HostReport, PlacementState
from clustercore.store.etcd import EtcdStore
from clustercore.testing import EtcdCluster
from clustercore.watcher import Watcher
from flavors.containers.lab import PodmanLab
from flavors.virt.lab import Lab
from flavors.virt.labcluster import FAST
from tests.flavor_rigs import ContainerRig, Harness, NoopUpgrade, Rig, VmRig
from tests.test_manager_failover import CLI, CONFIG, MANAGERS, TTL

pytestmark = pytest.mark.slow
S = HostState


@pytest.fixture(scope="module")
def pod_lab() -> Iterator[PodmanLab]:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (./dev test installs it)")
    with PodmanLab(3, base_port=17140, bmc=True) as lab:
        yield lab


@pytest.fixture(params=["vm", "container"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    if request.param == "vm":
        with Lab(3, base_port=16740, bmc=True) as lab:
            yield VmRig(lab, request.getfixturevalue("image"))
        return
    lab = request.getfixturevalue("pod_lab")
    if lab.criu.path is None:
        pytest.skip(f"containers move by CRIU checkpoint and there is no working CRIU: {lab.criu.reason}")
    yield ContainerRig(lab)


def names(rig: Rig) -> tuple[str, str, str]:
    first, second, third = (h.name for h in rig.hosts)
    return first, second, third


def consistent(rig: Rig, lc: Harness) -> dict[str, list[str]]:
    """The store and the hosts agree, and every workload runs exactly once; what runs on
    each powered host."""
    where = rig.where(lc)
    assert all(len(hosts) == 1 for hosts in where.values()), where
    placed = {n: p.host for n, p in lc.cluster.placements().items()}
    assert {n: hosts[0] for n, hosts in where.items()} == placed, (lc.cluster.placements(), [
        (e.subject, e.kind, e.old, e.new, e.reason) for e in lc.cluster.query_events()[-12:]])
    return {h.name: sorted(n for n, hs in where.items() if hs == [h.name]) for h in rig.hosts if h.running}


def migrated(lc: Harness) -> list[str]:
    """The workloads moved so far, one entry per move."""
    return [e.subject.removeprefix("workload/") for e in lc.cluster.query_events() if e.kind == "migrated"]


def test_hosts_join_and_a_drain_moves_every_workload_once_keeping_its_memory(rig: Rig) -> None:
    first, second, third = names(rig)
    with rig.cluster(ClusterConfig(drain_parallel=2)) as lc:
        assert {n: h.state for n, h in lc.cluster.hosts().items()} == dict.fromkeys(names(rig), S.UP)
        work = rig.place(lc, 4, host=first)
        assert consistent(rig, lc) == {first: work, second: [], third: []}
        watcher = Watcher(lambda reverse: rig.where(lc, reverse), work)
        lc.cluster.start_maintenance(first)
        lc.until(lambda: lc.cluster.host(first).state is S.MAINTENANCE, 120)
        watcher.stop()
        runs = consistent(rig, lc)
        assert runs[first] == [] and runs[second] and runs[third]  # spread, not piled on one host
        assert Counter(migrated(lc)) == Counter(work)  # each moved once
        assert {e.reason for e in lc.cluster.query_events() if e.kind == "migrated"} == {f"drain of {first}"}
        rig.check(lc, work)
        assert watcher.looks > 10 and not watcher.twice, (watcher.looks, watcher.twice[:2])


def test_a_maintenance_cancelled_halfway_loses_and_duplicates_nothing(rig: Rig) -> None:
    """One move at a time: a cancel stops new moves and the one under way ends."""
    first = names(rig)[0]
    with rig.cluster(ClusterConfig(drain_parallel=1)) as lc:
        work = rig.place(lc, rig.batch, host=first)
        lc.cluster.start_maintenance(first)
        lc.until(lambda: len(migrated(lc)) >= 2, 120)
        lc.cluster.cancel_maintenance(first)
        assert lc.cluster.host(first).state is S.UP
        lc.cluster.controller.drainer.wait(60)
        for _ in range(3):
            lc.tick()
        runs = consistent(rig, lc)
        assert sum(len(v) for v in runs.values()) == len(work)
        assert 0 < len(runs[first]) < len(work)  # some moved, the rest stayed
        moved = len(migrated(lc))
        for _ in range(5):
            lc.tick()
        assert len(migrated(lc)) == moved  # no move after the cancel
        assert set(migrated(lc)) == set(work) - set(runs[first])
        rig.check(lc, work)  # the moved ones and those that stayed


def test_a_destination_lost_mid_move_keeps_the_workload_and_the_drain_retries(rig: Rig) -> None:
    first, second, third = names(rig)
    with rig.cluster(ClusterConfig(drain_parallel=1), kill_first_target=True) as lc:
        work = rig.place(lc, 1, host=first)
        lc.cluster.start_maintenance(first)
        lc.until(lambda: lc.cluster.host(first).state is S.MAINTENANCE, 120)
        assert rig.victim in (second, third)
        survivor = third if rig.victim == second else second
        failed = [e for e in lc.cluster.query_events() if e.kind == "migration-failed"]
        assert failed and failed[0].new == rig.victim and first in failed[0].old
        assert consistent(rig, lc) == {first: [], survivor: work}
        rig.check(lc, work)  # after the failed move and the one that succeeded


def test_a_power_cut_is_fenced_through_the_bmc_and_ha_workloads_run_elsewhere_once(rig: Rig) -> None:
    first, second, third = names(rig)
    with rig.cluster(FAST) as lc:
        work = rig.place(lc, 3, host=second, ha=True)
        watcher = Watcher(lambda reverse: rig.where(lc, reverse), work)
        rig.hosts[1].power_off()
        lc.until(lambda: lc.cluster.host(second).state is S.DOWN, 90)
        lc.until(lambda: sorted(rig.where(lc)) == work, 120)
        watcher.stop()
        runs = consistent(rig, lc)
        assert sorted(runs[first] + runs[third]) == work and second not in runs
        fenced = lc.cluster.query_events(subject=f"host/{second}", kind="fenced")
        assert len(fenced) == 1 and "status off" in fenced[0].reason, fenced  # the BMC says it is off
        restarted = lc.cluster.query_events(kind="restarted")
        assert Counter(e.subject for e in restarted) == Counter(f"workload/{n}" for n in work)  # each once
        assert all(e.old == second and e.time >= fenced[0].time for e in restarted)
        assert watcher.looks > 10 and not watcher.twice, (watcher.looks, watcher.twice[:2])
        rig.hosts[1].power_on()  # back, with what it held before the cut gone or stopped
        lc.until(lambda: lc.cluster.host(second).state is S.UP, 90)
        assert second not in {p.host for p in lc.cluster.placements().values()}
        assert lc.cluster.migrate(work[0], second).host == second  # a stopped leftover there is replaced
        assert consistent(rig, lc)[second] == [work[0]]
        assert not lc.cluster.query_events(kind="migration-failed")


def test_a_rolling_upgrade_keeps_every_workload_running(rig: Rig) -> None:
    """After each host's turn the workloads it moved are checked; meanwhile a watcher
    finds none on two hosts and none anywhere but for a move's own pause (a TCG guest is
    moved paused: memory / bandwidth; a container between checkpoint and restore)."""
    upgrader = NoopUpgrade()
    with rig.cluster(ClusterConfig(drain_parallel=2), plugins=[upgrader]) as lc:
        work = rig.place(lc, 4)  # where the scheduler puts them
        watcher = Watcher(lambda reverse: rig.where(lc, reverse), work)
        upgrade = lc.cluster.rolling_upgrade()
        percents, checked = [], set[str]()
        done = seen = 0  # hosts upgraded, moves checked
        while not upgrade.status.finished:
            lc.tick()
            status = upgrade.step()
            percents.append(status.percent)
            if len(status.done) > done:  # a host's turn ended
                done, moves = len(status.done), migrated(lc)
                if moves[seen:]:
                    rig.check(lc, sorted(set(moves[seen:])))
                checked |= set(moves[seen:])
                seen = len(moves)
        watcher.stop()
        assert watcher.looks > 10 and not watcher.twice, (watcher.looks, watcher.twice[:2])
        assert max(watcher.down.values()) < 15, watcher.down  # a pause, never lost
        assert sorted(rig.where(lc)) == work
        assert checked == set(work)  # every workload moved at least once, checked after
        assert upgrade.status.phase == "done", upgrade.status.failure
        assert sorted(upgrader.upgraded) == sorted(names(rig))
        assert percents == sorted(percents) and percents[-1] == 100.0
        consistent(rig, lc)
        assert all(h.state is S.UP for h in lc.cluster.hosts().values())


class Managers:
    """Three ``clustercore manager run`` processes on etcd running the passive cluster
    ``lc`` (with whatever flavors their entry points load), and a host agent per lab host
    keeping its heartbeat on an etcd lease, probing it from outside (:meth:`Rig.answers`)."""

    def __init__(self, rig: Rig, lc: Harness, url: str, prefix: str, logs: Path) -> None:
        self.store, self.logs, self.stop_agents = lc.cluster.store, logs, threading.Event()
        self.agents = [threading.Thread(target=HostAgent(
            EtcdStore(url, prefix=prefix), h.name, interval=0.5, ttl=2, report=HostReport,
            probe=functools.partial(rig.answers, lc, h.name), credential=lc.cluster.credentials[h.name]).run,
            args=(self.stop_agents,), daemon=True) for h in rig.hosts]
        for agent in self.agents:
            agent.start()
        self.procs = {name: subprocess.Popen(
            [*CLI, "-v", "manager", "run", "--store", url, "--prefix", prefix, "--name", name, "--ttl", str(TTL),
             "--interval", "0.3"], stdout=(logs / f"{name}.log").open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True) for name in MANAGERS}

    def leader(self) -> str | None:
        kv = self.store.get(LEADER_KEY)
        return kv.value.decode() if kv is not None else None

    def kill_leader(self) -> str:
        """SIGKILL the leader's process group: the manager and whatever it runs."""
        name = self.leader()
        assert name is not None
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait()
        return name

    def close(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self.stop_agents.set()
        for agent in self.agents:
            agent.join(5)
        for log in sorted(self.logs.glob("m*.log")):
            print(f"--- {log.name} (tail)\n{log.read_text(errors='replace')[-2000:]}")


def poll(done: Callable[[], bool], limit: float, every: float = 0.02) -> float:
    """Seconds until ``done()``, looking every ``every`` s (a passive cluster is run elsewhere)."""
    start = time.monotonic()
    while not done():
        assert time.monotonic() - start < limit, f"not reached in {limit} s"
        time.sleep(every)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    with EtcdCluster(3, base_port=23900) as cluster:
        yield cluster


def test_the_leader_killed_mid_drain_the_next_one_finishes_it(rig: Rig, etcd: EtcdCluster, tmp_path: Path) -> None:
    first = names(rig)[0]
    prefix = f"/e2e/{uuid.uuid4().hex[:8]}/"
    with rig.cluster(CONFIG, store=EtcdStore(etcd.url, prefix=prefix)) as lc:
        managers = Managers(rig, lc, etcd.url, prefix, tmp_path)
        try:
            rig.prepare(lc)
            work = rig.place(lc, 4, host=first)
            watcher = Watcher(lambda reverse: rig.where(lc, reverse), work)
            lc.cluster.start_maintenance(first)
            poll(lambda: any(p.state is PlacementState.MIGRATING for p in lc.cluster.placements().values()), 60)
            killed = managers.kill_leader()
            in_flight = sorted(n for n, p in lc.cluster.placements().items() if p.state is PlacementState.MIGRATING)
            took = poll(lambda: managers.leader() not in (None, killed), 3 * TTL, 0.1)
            assert took < TTL + 2, f"new leader after {took:.1f} s"
            lc.until(lambda: lc.cluster.host(first).state is S.MAINTENANCE, 120)
            watcher.stop()
            runs = consistent(rig, lc)
            assert runs[first] == [] and sum(len(v) for v in runs.values()) == len(work)
            moved = Counter(migrated(lc))
            assert set(moved) == set(work) and max(moved.values()) == 1, moved  # nothing moved twice
            # what the dead leader was moving, the next one settled (finished or rolled back)
            settled = [e for e in lc.cluster.query_events() if "manager that began it was lost" in e.reason]
            assert sorted(e.subject.removeprefix("workload/") for e in settled) == in_flight
            rig.check(lc, work)  # moved (or rolled back), not restarted
            assert watcher.looks > 10 and not watcher.twice, (watcher.looks, watcher.twice[:2])
        finally:
            managers.close()
