"""What the flavor-generic end-to-end suite (tests/test_flavor_e2e.py) needs from each
flavor, and nothing else: a :class:`Rig` per flavor makes a cluster on that flavor's lab
(or, on a store of its own, a passive one that manager processes and host agents run),
prepares it, places real workloads that remember something in memory, says where they run
by asking the hosts themselves, checks that a moved workload kept its memory (moved, not
restarted), and makes the first move's destination die mid-move.

``vm``: a libvirt :class:`~flavors.virt.lab.Lab` with BMCs, the project's real guest
(memory dirtier, disk counter) checked by :meth:`~flavors.virt.labcluster.LabCluster.check_guest`.
``container``: a :class:`~flavors.containers.lab.PodmanLab` with BMCs, the counting
container (:func:`~flavors.containers.labcluster.counter`) whose count must go on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import attrs

from clustercore import Cluster, ClusterConfig, Host, hookimpl
from clustercore.store.base import Store
from flavors.containers import PodmanDriver
from flavors.containers.lab import PodmanLab
from flavors.containers.labcluster import PodLabCluster, counter
from flavors.virt.guest import GuestImage
from flavors.virt.lab import Lab
from flavors.virt.labcluster import LabCluster
from flavors.virt.migration import MigrationPolicy, Migrator


class Harness(Protocol):
    """What both lab clusters offer (LabCluster, PodLabCluster)."""

    cluster: Cluster

    def tick(self) -> None: ...
    def until(self, done: Callable[[], bool], limit: float = ...) -> Any: ...
    def close(self) -> None: ...


class LabHost(Protocol):
    name: str

    @property
    def running(self) -> bool: ...
    def power_off(self) -> None: ...
    def power_on(self, timeout: float = ...) -> None: ...


class Rig(Protocol):
    flavor: str
    hosts: Sequence[LabHost]
    batch: int  # workloads a drain that is cancelled halfway starts with
    victim: str | None  # the destination killed mid-move, once killed

    def cluster(self, config: ClusterConfig, *, plugins: Sequence[object] = (), kill_first_target: bool = False,
                store: Store | None = None) -> contextlib.AbstractContextManager[Harness]: ...
    def prepare(self, lc: Harness) -> None: ...
    def answers(self, lc: Harness, host: str) -> bool: ...
    def place(self, lc: Harness, n: int, host: str | None = None, ha: bool = False) -> list[str]: ...
    def where(self, lc: Harness, reverse: bool = False) -> Mapping[str, list[str]]: ...
    def check(self, lc: Harness, names: Sequence[str]) -> None: ...


class NoopUpgrade:
    """An upgrade hook that only records the hosts it was called for."""

    name = "noop-upgrade"

    def __init__(self) -> None:
        self.upgraded: list[str] = []

    @hookimpl
    def clustercore_upgrade_host(self, host: Host) -> None:
        self.upgraded.append(host.name)


@contextlib.contextmanager
def running(rig: Rig, lc: Harness, prepared: bool) -> Iterator[None]:
    """``lc`` prepared (unless run elsewhere), then, whatever happened: the moves under way
    ended, every lab host powered on again, the cluster closed."""
    try:
        if prepared:
            rig.prepare(lc)
        yield
    finally:
        lc.cluster.controller.drainer.wait(60)
        for host in rig.hosts:
            if not host.running:
                host.power_on()
        lc.close()


# ---------------------------------------------------------------------- vm


class KillingMigrator(Migrator):
    """Powers off the destination of the first migration as soon as it is under way (that
    one copies at 1 MiB/s: time to act while it moves); later ones run under the default
    policy (a real guest, paused for its copy, at 1 MiB/s would take a minute)."""

    def __init__(self, rig: VmRig) -> None:
        super().__init__(MigrationPolicy())
        self.rig = rig

    def migrate(self, dom: Any, dest: Any, **kw: Any) -> Any:
        if self.rig.victim is None:
            self.rig.victim = kw["target"]
            target = self.rig.lab.host(kw["target"])

            def cut(progress: Any, _target: Any = target) -> None:
                if _target.running:
                    _target.power_off()

            kw["progress"] = cut
            return Migrator(MigrationPolicy(bandwidth=1), self.limits).migrate(dom, dest, **kw)
        return super().migrate(dom, dest, **kw)


@attrs.define
class VmRig:
    """Real guests of 160 MiB dirtying 16 MiB: four make a drain spread over two hosts
    under TCG on two cores."""

    lab: Lab
    image: GuestImage
    flavor: str = "vm"
    batch: int = 4
    victim: str | None = None

    @property
    def hosts(self) -> Sequence[LabHost]:
        return self.lab.hosts

    @contextlib.contextmanager
    def cluster(self, config: ClusterConfig, *, plugins: Sequence[object] = (), kill_first_target: bool = False,
                store: Store | None = None) -> Iterator[Harness]:
        """A cluster of the lab with its storage; on ``store``, passive: run elsewhere."""
        migrator = KillingMigrator(self) if kill_first_target else None
        lc = LabCluster(self.lab, config, migrator=migrator, plugins=plugins, store=store, passive=store is not None)
        with running(self, lc, prepared=store is None):
            yield lc

    def prepare(self, lc: Harness) -> None:
        """Every host Up, the cluster's storage on the lab."""
        assert isinstance(lc, LabCluster)
        lc.up()
        lc.storage(self.image)

    def answers(self, lc: Harness, host: str) -> bool:
        """What a host agent probes: the host's libvirtd, from outside."""
        assert isinstance(lc, LabCluster)
        found = self.lab.host(host)
        return found.running and found.reachable and lc.driver.answers(lc.cluster.host(host), timeout=1)

    def place(self, lc: Harness, n: int, host: str | None = None, ha: bool = False) -> list[str]:
        assert isinstance(lc, LabCluster)
        names = [f"g{i}" for i in range(n)]
        for i, name in enumerate(names):
            lc.guest(name, host=host, ha=ha, priority=i, dirty_mib=16)
        lc.wait_booted(*names)
        return names

    def where(self, lc: Harness, reverse: bool = False) -> Mapping[str, list[str]]:
        out: dict[str, list[str]] = {}
        for host in reversed(self.lab.hosts) if reverse else self.lab.hosts:
            if host.running and host.reachable:
                with contextlib.suppress(Exception):  # a host cut mid-call
                    for name in host.active_domains(paused=False):
                        out.setdefault(name, []).append(host.name)
        return out

    def check(self, lc: Harness, names: Sequence[str]) -> None:
        assert isinstance(lc, LabCluster)
        lc.check_guest(*names)


# ---------------------------------------------------------------------- container


class KillingDriver(PodmanDriver):
    """Powers off the destination of the first move once its checkpoint is taken, just
    before the restore there."""

    def __init__(self, rig: ContainerRig) -> None:
        super().__init__(call_timeout=5, cgroup_parent=rig.lab.cgroup_parent)
        self.rig = rig

    def _restore(self, name: str, host: Host, archive: Any) -> None:
        if self.rig.victim is None:
            self.rig.victim = host.name
            self.rig.lab.host(host.name).power_off()
        super()._restore(name, host, archive)


@attrs.define
class ContainerRig:
    """Counting containers (32 MiB, half a CPU); a check reads each one's count, which
    must have gone on from the one read before (a restart counts from 0 again)."""

    lab: PodmanLab
    flavor: str = "container"
    batch: int = 6  # a move takes well under a second: enough left on the host at the cancel
    victim: str | None = None
    counts: dict[str, int] = attrs.Factory(dict)

    @property
    def hosts(self) -> Sequence[LabHost]:
        return self.lab.hosts

    @contextlib.contextmanager
    def cluster(self, config: ClusterConfig, *, plugins: Sequence[object] = (), kill_first_target: bool = False,
                store: Store | None = None) -> Iterator[Harness]:
        """A cluster of the lab; on ``store``, passive: run elsewhere."""
        driver = KillingDriver(self) if kill_first_target else None
        lc = PodLabCluster(self.lab, config, plugins=plugins, driver=driver, store=store, passive=store is not None)
        with running(self, lc, prepared=store is None):
            yield lc

    def prepare(self, lc: Harness) -> None:
        """Every host Up."""
        assert isinstance(lc, PodLabCluster)
        lc.up()

    def answers(self, lc: Harness, host: str) -> bool:
        """What a host agent probes: the host's podman API."""
        return self.lab.host(host).answers(0.5)

    def place(self, lc: Harness, n: int, host: str | None = None, ha: bool = False) -> list[str]:
        assert isinstance(lc, PodLabCluster)
        names = [f"c{i}" for i in range(n)]
        workloads = [counter(name, ha=ha, priority=i) for i, name in enumerate(names)]
        if host is None:
            for workload in workloads:
                lc.cluster.submit(workload)
        else:
            lc.only_on(host, workloads)
        lc.until(lambda: all((lc.counted(name) or 0) > 5 for name in names), 60)
        self.counts.update({name: lc.counted(name) or 0 for name in names})
        return names

    def where(self, lc: Harness, reverse: bool = False) -> Mapping[str, list[str]]:
        assert isinstance(lc, PodLabCluster)
        return lc.running(reverse)

    def check(self, lc: Harness, names: Sequence[str]) -> None:
        assert isinstance(lc, PodLabCluster)
        now = {name: lc.count(name) for name in names}
        before = {name: self.counts[name] for name in names}
        assert all(now[n] > before[n] > 5 for n in names), f"counts before {before}, now {now}"
        self.counts.update(now)
