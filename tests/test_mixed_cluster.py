"""A mixed cluster (issue 17, item 4): three hosts that each run VMs (a real libvirtd) and
containers (a real podman service, named by the host's ``podman/uri`` label). One scheduler
places 3 OS-less VMs and 6 counter containers with one resource accounting (CPU is the
bound: a host of 5 CPUs takes at most 5 of them, whatever their kind); a maintenance drains
one host of both kinds, VMs by live migration and containers by CRIU checkpoint/restore
(skipped, saying why, where no CRIU could be built); the store agrees with libvirt and
podman after each step, every workload runs exactly once, and a moved container counts on."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import attrs
import pytest

pytest.importorskip("podman", reason="the containers extra (podman-py) is not installed")
from podman import PodmanClient

from clustercore import Cluster, HostReport, HostState, Plugins
from clustercore.errors import ValidationError
from clustercore.model import PlacementState
from clustercore.plugins import HostProbe
from flavors.containers import ContainersFlavor, ContainerSpec, Mount, PodmanDriver, container_spec, container_workload
from flavors.containers.lab import IMAGE, PodmanLab
from flavors.containers.labcluster import counter, read_count
from flavors.virt import VirtFlavor
from flavors.virt.driver import LibvirtDriver
from flavors.virt.lab import Lab, domain_type
from flavors.virt.spec import Memory, VMSpec
from flavors.virt.workload import vm_workload

pytestmark = pytest.mark.slow
HOSTS = ("mix1", "mix2", "mix3")
VMS = [f"vm{i}" for i in range(3)]
CONTAINERS = [f"ct{i}" for i in range(6)]


class Mixed:
    """The cluster over both labs: host ``mixN`` is libvirt lab host N and podman host N."""

    def __init__(self, lab: Lab, pods: PodmanLab) -> None:
        self.lab, self.pods = lab, pods
        self.virt = LibvirtDriver(shutdown_timeout=0.5)
        self.podman = PodmanDriver(cgroup_parent=pods.cgroup_parent)
        self.cluster = Cluster(plugins=Plugins([VirtFlavor(self.virt), ContainersFlavor(self.podman)],
                                               entry_points=False))
        for name, vm_host, pod_host in zip(HOSTS, lab.hosts, pods.hosts, strict=True):
            self.cluster.register_host({
                "name": name, "address": vm_host.uri, "labels": {"podman/uri": pod_host.uri, **pod_host.labels},
                "capacity": {"cpu": 9 if name == "mix1" else 5, "memory": 8192}})

    def tick(self) -> None:
        """A heartbeat for each host whose libvirtd and podman both answer, then a pass."""
        for name in HOSTS:
            host = self.cluster.host(name)
            if self.virt.answers(host, timeout=1) and self.pods.hosts[HOSTS.index(name)].answers():
                self.cluster.heartbeat(name, HostReport())
        self.cluster.step()
        time.sleep(0.1)

    def until(self, done: Callable[[], bool], limit: float = 90.0) -> None:
        deadline = time.monotonic() + limit
        while not done():
            assert time.monotonic() < deadline, f"not reached in {limit} s: {self.cluster.query_events()[-6:]}"
            self.tick()

    def states(self, *names: str) -> set[HostState]:
        return {self.cluster.host(n).state for n in names}

    def running(self) -> dict[str, list[str]]:
        """Host by workload, from libvirt and podman themselves (never the store)."""
        out: dict[str, list[str]] = {}
        for name, vm_host, pod_host in zip(HOSTS, self.lab.hosts, self.pods.hosts, strict=True):
            for vm in vm_host.active_domains():
                out.setdefault(vm, []).append(name)
            for container in PodmanClient(base_url=pod_host.uri, timeout=10).containers.list():
                out.setdefault(container.name, []).append(name)
        return out

    def consistent(self) -> dict[str, str]:
        """Every workload runs exactly once, where its placement says."""
        runs = self.running()
        assert all(len(hosts) == 1 for hosts in runs.values()), runs
        placed = {n: p.host for n, p in self.cluster.placements().items() if p.state is PlacementState.RUNNING}
        assert {n: hosts[0] for n, hosts in runs.items()} == placed
        return placed

    def count(self, name: str) -> int:
        host = self.pods.hosts[HOSTS.index(self.cluster.placements()[name].host)]
        found = read_count(PodmanClient(base_url=host.uri, timeout=10), name)
        assert found is not None, f"{name} did not say its count"
        return found

    def close(self) -> None:
        for name in list(self.cluster.placements()):
            try:
                self.cluster.stop(name, force=True)
            except Exception as exc:
                print(f"stopping {name}: {exc}")
        self.virt.close()


@pytest.fixture
def mixed() -> Iterator[Mixed]:
    with Lab(3, base_port=17050) as lab, PodmanLab(3, base_port=17060) as pods:
        m = Mixed(lab, pods)
        try:
            yield m
        finally:
            m.close()


def test_one_scheduler_places_vms_and_containers_and_a_drain_moves_both(mixed: Mixed) -> None:
    if mixed.pods.criu.path is None:
        pytest.skip(f"no working CRIU: {mixed.pods.criu.reason}")
    c = mixed.cluster
    mixed.until(lambda: mixed.states(*HOSTS) == {HostState.UP})
    for other in ("mix2", "mix3"):  # everything starts on mix1
        c.start_maintenance(other)
    mixed.until(lambda: mixed.states("mix2", "mix3") == {HostState.MAINTENANCE})
    for name in VMS:
        spec = VMSpec(name=name, uuid=str(uuid.uuid5(uuid.NAMESPACE_DNS, f"mixed-{name}")), memory=Memory(64),
                      domain_type=domain_type())
        c.submit(vm_workload(spec))
    for name in CONTAINERS:
        c.submit(counter(name))
    placed = mixed.consistent()
    assert set(placed.values()) == {"mix1"} and len(placed) == 9
    for other in ("mix2", "mix3"):
        c.activate_host(other)
    mixed.until(lambda: mixed.states(*HOSTS) == {HostState.UP})
    time.sleep(1)  # the counters count
    before = {name: mixed.count(name) for name in CONTAINERS}
    assert all(n > 5 for n in before.values()), before

    c.start_maintenance("mix1")
    mixed.until(lambda: c.host("mix1").state is HostState.MAINTENANCE, 120)
    placed = mixed.consistent()
    assert sorted(placed) == sorted(VMS + CONTAINERS) and "mix1" not in placed.values()
    per_host = Counter(placed.values())
    assert per_host["mix2"] <= 5 and per_host["mix3"] <= 5, per_host  # one accounting of both kinds
    kinds = {h: {c.workloads()[n].flavor for n, where in placed.items() if where == h} for h in ("mix2", "mix3")}
    assert {"vm", "container"} in kinds.values(), kinds  # 3 VMs and 6 containers in 5 + 4: one host has both
    moved = Counter(e.subject.removeprefix("workload/") for e in c.query_events() if e.kind == "migrated")
    assert set(moved) == set(VMS + CONTAINERS) and max(moved.values()) == 1, moved
    after = {name: mixed.count(name) for name in CONTAINERS}
    assert all(after[n] > before[n] for n in CONTAINERS), (before, after)  # checkpointed: counting on, not from 0


DATA_COUNT = ("i=0; while true; do i=$((i+1)); echo $i > /data/count.new; mv /data/count.new /data/count; "
              "sleep 0.05; done")


def test_a_container_mounts_a_cluster_volume_and_keeps_it_and_its_memory_across_a_move(mixed: Mixed) -> None:
    """A ``dir`` volume on the cluster's shared domain (realized by the hosts' libvirt, as
    a VM's disk is), bind-mounted into a container that counts in memory and writes the
    count there; a checkpoint move to another host keeps both (the count goes on in the
    same file, from where it was). Mounts naming what is no directory volume are refused."""
    if mixed.pods.criu.path is None:
        pytest.skip(f"no working CRIU: {mixed.pods.criu.reason}")
    c = mixed.cluster
    mixed.until(lambda: mixed.states(*HOSTS) == {HostState.UP})
    c.add_storage_domain({"name": "shared", "path": str(mixed.lab.shared / "domain")})
    mixed.until(lambda: all("shared" in c.controller.observer.probes.get(h, HostProbe()).storage for h in HOSTS))
    c.add_volume({"name": "vol-data", "domain": "shared", "size": 16, "format": "dir", "workload": "vol"})
    c.add_volume({"name": "vol-disk", "domain": "shared", "size": 16, "format": "raw"})
    data = mixed.lab.shared / "domain" / "vol-data.dir"
    assert data.is_dir()
    spec = ContainerSpec(name="vol", image=IMAGE, memory=32, cpus=0.5, command=("sh", "-c", DATA_COUNT),
                         stop_timeout=0, mounts=(Mount("vol-data", "/data"),))
    for bad, why in ((Mount("vol-disk", "/data"), "is raw"), (Mount("nothing", "/data"), "no such volume")):
        with pytest.raises(ValidationError, match=why):
            c.submit(container_workload(attrs.evolve(spec, mounts=(bad,))))
    first = c.submit(container_workload(spec)).host
    workload = c.workloads()["vol"]
    assert workload.volumes == {"vol-data"} and container_spec(workload).mounts[0].source == str(data)

    def count() -> int:
        text = (data / "count").read_text() if (data / "count").exists() else ""
        return int(text) if text.strip() else 0

    mixed.until(lambda: count() > 40, 30)
    target = next(h for h in HOSTS if h != first)
    assert c.migrate("vol", target).host == target
    assert mixed.running()["vol"] == [target]
    before, seen = count(), []
    mixed.until(lambda: seen.append(count()) or seen[-1] > before + 5, 30)
    assert min(seen) >= before, (before, seen)  # the same file, counting on from memory: never from 0 again
    # Deleted with its workload: libvirt removes a directory only empty, so this one stays,
    # recorded, with its data; emptied, it goes.
    c.delete("vol")
    assert "vol" not in c.workloads() and "vol-data" in c.volumes() and (data / "count").exists()
    kept = c.query_events(subject="volume/vol-data", kind="volume-kept")
    assert len(kept) == 1 and "Directory not empty" in kept[0].reason, kept
    (data / "count").unlink()
    c.delete_volume("vol-data")
    assert "vol-data" not in c.volumes() and not data.exists()
