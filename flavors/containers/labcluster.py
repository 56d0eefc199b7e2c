"""A cluster on a podman lab: the containers counterpart of :mod:`flavors.virt.labcluster`,
what the container lab tests and benchmarks drive.

:class:`PodLabCluster` puts a :class:`~clustercore.Cluster` (the containers flavor, the real
:class:`~flavors.containers.driver.PodmanDriver`, each host's lab BMC as its fence device)
on a :class:`~flavors.containers.lab.PodmanLab`, with the system clock and heartbeats from
polling each host's podman API. :func:`counter` is the lab's container: a busybox shell
counting in memory (``/tmp/count``), so a move that keeps its memory is told from a
restart by :meth:`PodLabCluster.count`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from podman import PodmanClient

from clustercore import Cluster, ClusterConfig, HostReport, HostState, Plugins
from clustercore.model import Workload
from clustercore.store.base import Store
from flavors.containers import ContainersFlavor, ContainerSpec, PodmanDriver, container_workload
from flavors.containers.lab import IMAGE, PodmanLab

# written aside and renamed: a reader never finds the file empty (truncated, not yet written)
COUNT = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done"
S = HostState


def counter(name: str, *, move: str = "checkpoint", ha: bool = False, priority: int = 0) -> Workload:
    """A container counting in memory, 32 MiB, half a CPU, stopped at once."""
    spec = ContainerSpec(name=name, image=IMAGE, memory=32, cpus=0.5, command=("sh", "-c", COUNT),
                         stop_timeout=0, move=move)
    return container_workload(spec, ha=ha, priority=priority)


def read_count(client: PodmanClient, name: str) -> int | None:
    """What the counter container ``name`` (:func:`counter`) has counted, or None when
    podman could not say."""
    found = client.containers.get(name)
    if str(found.name).lstrip("/") != name:  # an id-prefix match (PodmanDriver._find), not this one
        return None
    code, (out, _) = found.exec_run(["cat", "/tmp/count"], demux=True)
    return int(out) if code == 0 and isinstance(out, bytes) else None


def clear(lab: PodmanLab) -> None:
    """Remove every container of every powered host of ``lab`` at once."""
    for host in lab.hosts:
        if host.running:
            with PodmanClient(base_url=host.uri, timeout=30) as client:
                for found in client.containers.list(all=True):
                    client.api.delete(f"/containers/{found.name}", params={"force": True, "timeout": 0})


class PodLabCluster:
    """Every lab host powered on, emptied and registered (``labels`` say whether it has
    CRIU; ``criu=False`` registers them without, so containers cannot be checkpointed);
    ``driver`` a test's own. ``passive``: the cluster on ``store`` is run elsewhere
    (managers reconcile, host agents send the heartbeats); this process only registers,
    submits and checks, and :meth:`tick` only waits."""

    def __init__(self, lab: PodmanLab, config: ClusterConfig | None = None, *, cpu: int = 16,
                 criu: bool = True, plugins: Sequence[object] = (), driver: PodmanDriver | None = None,
                 store: Store | None = None, passive: bool = False) -> None:
        assert lab.bmcs is not None, "a PodmanLab(bmc=True): its BMCs are the hosts' fence devices"
        assert store is not None or not passive, "a passive cluster is run elsewhere, on a store of its own"
        self.lab, self.passive, config = lab, passive, config or ClusterConfig()
        for i, host in enumerate(lab.hosts):
            if not host.running:
                lab.power_on(i)
        clear(lab)  # what a powered-off host still held
        self.pool = ThreadPoolExecutor(4)
        self.driver = driver or PodmanDriver(call_timeout=5, cgroup_parent=lab.cgroup_parent)
        self.cluster = Cluster(plugins=Plugins([ContainersFlavor(self.driver), *plugins], entry_points=False),
                               config=config, executor=self.pool, store=store)
        self.cluster.controller.started -= config.fencing.startup_grace  # the manager has run for a while
        self._clients = {h.name: PodmanClient(base_url=h.uri, timeout=2) for h in lab.hosts}
        for host in lab.hosts:
            labels = host.labels if criu else {**host.labels, "podman/criu": "false"}
            self.cluster.register_host({"name": host.name, "address": host.uri, "labels": labels,
                                        "capacity": {"cpu": cpu, "memory": 8192},
                                        "fence_devices": [lab.bmcs.device(host)]})

    def tick(self) -> None:
        """A heartbeat for every host whose podman answers, then one reconcile pass
        (passive: only a wait, the cluster is run elsewhere)."""
        if self.passive:
            time.sleep(0.2)
            return
        for host in self.lab.hosts:
            if host.answers(0.5):
                self.cluster.heartbeat(host.name, HostReport())
        self.cluster.step()
        time.sleep(0.1)

    def until(self, done: Callable[[], bool], limit: float = 120.0) -> float:
        """Tick until ``done``; the monotonic time it was."""
        start = time.monotonic()
        while not done():
            if time.monotonic() - start > limit:
                raise AssertionError(f"not reached in {limit} s: hosts "
                                     f"{ {n: str(h.state) for n, h in self.cluster.hosts().items()} }; "
                                     f"events {self.cluster.query_events()[-6:]}")
            self.tick()
        return time.monotonic()

    def up(self) -> None:
        self.until(lambda: all(h.state is S.UP for h in self.cluster.hosts().values()))

    def only_on(self, host: str, workloads: Sequence[Workload]) -> None:
        """Start ``workloads`` on ``host``: the other hosts in maintenance meanwhile."""
        c, others = self.cluster, [n for n in self.cluster.hosts() if n != host]
        for name in others:
            c.start_maintenance(name)
        self.until(lambda: all(c.host(n).state is S.MAINTENANCE for n in others))
        for workload in workloads:
            c.submit(workload)
        for name in others:
            c.activate_host(name)
        self.up()

    def running(self, reverse: bool = False) -> dict[str, list[str]]:
        """The hosts each container runs on, by asking every powered host's podman (in
        the lab's order, or the reverse: :class:`~clustercore.watcher.Watcher`)."""
        out: dict[str, list[str]] = {}
        for host in reversed(self.lab.hosts) if reverse else self.lab.hosts:
            if not host.running:
                continue
            with contextlib.suppress(Exception):  # a host cut mid-call
                for container in self._clients[host.name].containers.list():
                    out.setdefault(container.name, []).append(host.name)
        return out

    def counted(self, name: str) -> int | None:
        """What container ``name`` has counted so far, where the store places it; None
        while it is not placed or not running there."""
        placement = self.cluster.placements().get(name)
        if placement is None:
            return None
        with contextlib.suppress(Exception):  # not (yet, or no longer) running there
            return read_count(self._clients[placement.host], name)
        return None

    def count(self, name: str) -> int:
        """:meth:`counted`, which must say."""
        found = self.counted(name)
        assert found is not None, f"container {name} did not say its count"
        return found

    def close(self) -> None:
        clear(self.lab)
        self.pool.shutdown()
