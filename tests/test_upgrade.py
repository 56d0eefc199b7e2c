"""Rolling cluster upgrade on simulated hosts: order, N+1, reboots, failures, progress."""

from __future__ import annotations

import attrs
import pytest

from clustercore import Cluster, FakeClock, Host, HostReport, HostState, Plugins, hookimpl
from clustercore.errors import ClusterError
from clustercore.testing import FakeFlavor
from clustercore.upgrade import RollingUpgrade, UpgradeStatus


class Upgrader:
    """Records upgrades; ``reboot`` hosts ask for a reboot, ``broken`` ones raise."""

    name = "upgrader"

    def __init__(self, reboot: frozenset[str] = frozenset(), broken: frozenset[str] = frozenset()) -> None:
        self.reboot, self.broken = reboot, broken
        self.upgraded: list[str] = []

    @hookimpl
    def clustercore_upgrade_host(self, host: Host) -> bool:
        if host.name in self.broken:
            raise RuntimeError("package manager exploded")
        assert host.state is HostState.MAINTENANCE
        self.upgraded.append(host.name)
        return host.name in self.reboot


def cluster_with(upgrader: Upgrader, workloads: dict[str, int], memory: int = 16384) -> tuple[Cluster, FakeClock]:
    clock = FakeClock()
    cluster = Cluster(plugins=Plugins([FakeFlavor("sim"), upgrader], entry_points=False), clock=clock)
    for name in workloads:
        cluster.register_host({"name": name, "capacity": {"cpu": 16, "memory": memory}})
    tick(cluster, clock)
    tick(cluster, clock)
    for host, count in workloads.items():
        for i in range(count):
            cluster.submit({"name": f"{host}-w{i}", "flavor": "sim", "requests": {"cpu": 1, "memory": 2048},
                            "pinned": [host]})
    for name in list(cluster.workloads()):  # placed where the test wants; free to move from now on
        cluster.update_workload(name, lambda w: attrs.evolve(w, pinned=frozenset()))
    return cluster, clock


def tick(cluster: Cluster, clock: FakeClock) -> None:
    for name in cluster.hosts():
        cluster.heartbeat(name, HostReport())
    clock.advance(10)
    cluster.step()


def run(cluster: Cluster, clock: FakeClock, upgrade: RollingUpgrade, limit: int = 200) -> list[UpgradeStatus]:
    seen = []
    total = len(cluster.workloads())
    for _ in range(limit):
        tick(cluster, clock)
        status = upgrade.step()
        seen.append(status)
        placements = cluster.placements()
        assert len(placements) == total  # every workload runs throughout
        for p in placements.values():
            assert cluster.host(p.host).state is not HostState.MAINTENANCE
        if status.finished:
            return seen
    raise AssertionError(f"upgrade did not finish: {upgrade.status}")


def test_every_host_is_upgraded_least_loaded_first_with_workloads_running_throughout() -> None:
    upgrader = Upgrader()
    cluster, clock = cluster_with(upgrader, {"a": 3, "b": 1, "c": 2})
    upgrade = cluster.rolling_upgrade()
    assert upgrade.status.order == ("b", "c", "a")
    seen = run(cluster, clock, upgrade)
    assert upgrader.upgraded == ["b", "c", "a"]
    assert seen[-1].phase == "done" and seen[-1].percent == 100.0
    assert {s.current for s in seen if s.current} == {"a", "b", "c"}
    assert all(h.state is HostState.UP for h in cluster.hosts().values())
    assert cluster.upgrade_status() == seen[-1]
    assert 0 < min(s.percent for s in seen if s.current == "c") < 100


def test_a_host_that_asks_for_a_reboot_comes_back_through_rebooting() -> None:
    upgrader = Upgrader(reboot=frozenset({"b"}))
    cluster, clock = cluster_with(upgrader, {"a": 1, "b": 1})
    seen = run(cluster, clock, cluster.rolling_upgrade())
    assert "rebooting" in [s.phase for s in seen if s.current == "b"]
    kinds = [(e.subject, e.old, e.new) for e in cluster.query_events()]
    assert ("host/b", "Maintenance", "Rebooting") in kinds and ("host/b", "Rebooting", "Initializing") in kinds
    assert seen[-1].phase == "done"


def test_the_first_failure_stops_the_upgrade_with_the_cluster_usable() -> None:
    upgrader = Upgrader(broken=frozenset({"c"}))
    cluster, clock = cluster_with(upgrader, {"a": 2, "b": 0, "c": 1})
    seen = run(cluster, clock, cluster.rolling_upgrade())
    status = seen[-1]
    assert status.phase == "failed" and status.current == "c" and "package manager exploded" in status.failure
    assert status.done == ("b",) and upgrader.upgraded == ["b"]
    assert cluster.host("c").state is HostState.MAINTENANCE and cluster.host("a").state is HostState.UP
    assert any(e.kind == "upgrade-failed" for e in cluster.query_events())
    with pytest.raises(ClusterError):
        cluster.rolling_upgrade(["nope"])


def test_no_host_is_touched_when_the_others_cannot_take_its_workloads() -> None:
    upgrader = Upgrader()
    cluster, clock = cluster_with(upgrader, {"a": 3, "b": 3}, memory=8192)  # 6 GiB used of 8 on each
    seen = run(cluster, clock, cluster.rolling_upgrade())
    assert seen[-1].phase == "failed" and "no room elsewhere" in seen[-1].failure
    assert all(h.state is HostState.UP for h in cluster.hosts().values()) and upgrader.upgraded == []


def test_only_one_upgrade_at_a_time() -> None:
    cluster, _ = cluster_with(Upgrader(), {"a": 0, "b": 0})
    cluster.rolling_upgrade()
    with pytest.raises(ClusterError, match="already running"):
        cluster.rolling_upgrade()
