"""The containers flavor driven by a cluster on real podman hosts (flavors.containers.labcluster):
a maintenance drains containers by CRIU checkpoint/restore and their in-memory counters go
on; on hosts without CRIU a checkpointed container holds the maintenance back (the
flavor's veto, naming it) while one that moves by restart is started anew elsewhere; a
power cut is fenced through ``fence_ipmilan`` to the host's lab BMC and its HA containers
run again elsewhere. A watcher asks every host's podman many times a second: no container
ever runs on two hosts. The podman lab uses API ports 17130..17132."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Iterator

import pytest

pytest.importorskip("podman", reason="the containers extra (podman-py) is not installed")

from clustercore import ClusterError, HostState
from clustercore.watcher import Watcher
from flavors.containers.lab import PodmanLab
from flavors.containers.labcluster import PodLabCluster, counter
from flavors.virt.labcluster import FAST

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(subprocess.run(["which", "podman"], capture_output=True).returncode != 0,
                                 reason="podman is not installed (./dev test installs it)")]
S = HostState


@pytest.fixture(scope="module")
def lab() -> Iterator[PodmanLab]:
    with PodmanLab(3, base_port=17130, bmc=True) as lab:
        yield lab


def moved(lc: PodLabCluster) -> Counter[str]:
    return Counter(e.subject.removeprefix("workload/") for e in lc.cluster.query_events() if e.kind == "migrated")


def test_a_drain_checkpoints_containers_to_the_other_hosts_and_they_count_on(lab: PodmanLab) -> None:
    if lab.criu.path is None:
        pytest.skip(f"no working CRIU: {lab.criu.reason}")
    lc, names = PodLabCluster(lab, FAST), [f"d{i}" for i in range(4)]
    try:
        lc.up()
        lc.only_on("pod1", [counter(n) for n in names])
        time.sleep(1)
        before = {n: lc.count(n) for n in names}
        watcher = Watcher(lc.running, names)
        lc.cluster.start_maintenance("pod1")
        lc.until(lambda: lc.cluster.host("pod1").state is S.MAINTENANCE)
        watcher.stop()
        where = lc.running()
        placed = {n: p.host for n, p in lc.cluster.placements().items()}
        assert where == {n: [placed[n]] for n in names} and "pod1" not in placed.values()  # store == podman
        assert moved(lc) == Counter(names)  # each moved once
        after = {n: lc.count(n) for n in names}
        assert all(after[n] > before[n] > 5 for n in names), (before, after)  # memory kept, not from 0
        assert watcher.interval < 0.25 and not watcher.twice, (watcher.interval, watcher.twice[:2])  # looks often
    finally:
        lc.close()


def test_without_criu_checkpointed_containers_hold_the_drain_and_restartable_ones_move(lab: PodmanLab) -> None:
    lc = PodLabCluster(lab, FAST, criu=False)
    try:
        lc.up()
        lc.only_on("pod1", [counter("frozen"), counter("fresh", move="restart")])
        with pytest.raises(ClusterError, match="frozen"):
            lc.cluster.start_maintenance("pod1")
        assert lc.cluster.host("pod1").state is S.UP and lc.running()["frozen"] == ["pod1"]
        lc.cluster.stop("frozen")
        time.sleep(1)
        before = lc.count("fresh")
        lc.cluster.start_maintenance("pod1")
        lc.until(lambda: lc.cluster.host("pod1").state is S.MAINTENANCE)
        assert lc.running()["fresh"] != ["pod1"] and len(lc.running()["fresh"]) == 1
        assert lc.count("fresh") < before  # started anew: its count from 0
    finally:
        lc.close()


def test_a_power_cut_host_is_fenced_and_its_ha_containers_run_elsewhere_once(lab: PodmanLab) -> None:
    assert lab.bmcs is not None
    lc, names = PodLabCluster(lab, FAST), [f"ha{i}" for i in range(3)]
    offs = lab.bmcs.bmcs["pod2"].offs
    try:
        lc.up()
        lc.only_on("pod2", [counter(n, ha=True, priority=i) for i, n in enumerate(names)])
        watcher = Watcher(lc.running, names)
        lab.power_cut(1)
        lc.until(lambda: lc.cluster.host("pod2").state is S.DOWN, 60)
        lc.until(lambda: sorted(lc.running()) == names, 60)
        watcher.stop()
        placed = {n: p.host for n, p in lc.cluster.placements().items()}
        assert lc.running() == {n: [placed[n]] for n in names} and "pod2" not in placed.values()
        restarted = Counter(e.subject for e in lc.cluster.query_events() if e.kind == "restarted")
        assert restarted == Counter(f"workload/{n}" for n in names)  # each exactly once
        assert not lab.hosts[1].running
        assert watcher.interval < 0.25 and not watcher.twice, (watcher.interval, watcher.twice[:2])  # looks often
        lab.power_on(1)  # back with the stopped copies podman kept: a move there replaces its copy
        lc.until(lambda: lc.cluster.host("pod2").state is S.UP, 60)
        assert lc.cluster.migrate(names[0], "pod2").host == "pod2" and lc.running()[names[0]] == ["pod2"]
        assert not [e for e in lc.cluster.query_events() if e.kind == "migration-failed"]
    finally:
        lc.close()
        if not lab.hosts[1].running:
            lab.power_on(1)
    assert lab.bmcs.bmcs["pod2"].offs == offs  # the power cut was the lab's: the BMC found it off
