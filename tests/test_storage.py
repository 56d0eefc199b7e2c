"""Generic storage domains, volumes and logical networks (issue 15, item 1): placement
follows volumes, HA restart only with shared storage, probes drive NonOperational."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import attrs
import pytest

from clustercore import Cluster, ClusterConfig, FakeClock, HostReport, HostState, Plugins, hookimpl
from clustercore.errors import FlavorError, InUse, MaintenanceVetoed, NoValidHost, ValidationError
from clustercore.fencing import FencePolicy
from clustercore.lifecycle import LivenessPolicy
from clustercore.model import FenceDevice, Host, NonOperationalReason, PlacementState, Workload
from clustercore.network import LogicalNetwork
from clustercore.plugins import HostProbe, Registry
from clustercore.storage import StorageDomain, StorageView, Volume
from clustercore.testing import FakeDriver, FakeFlavor
from clustercore.volumes import NoVolumeHost

S = HostState
NAMES = ("h1", "h2", "h3")


class Probing(FakeFlavor):
    """Probes from a dict the test changes: host -> (storage, networks) it reaches; a host
    in ``hang`` blocks its probe until released."""

    def __init__(self) -> None:
        super().__init__("fake")
        self.reach: dict[str, tuple[set[str], set[str]]] = {}
        self.hang: set[str] = set()
        self.release = threading.Event()

    @hookimpl
    def clustercore_probe_host(self, host: Host, storage: Sequence[StorageDomain],
                               networks: Sequence[LogicalNetwork]) -> HostProbe:
        if host.name in self.hang:
            self.release.wait(30)
        found, nets = self.reach.get(host.name, ({d.name for d in storage}, {n.name for n in networks}))
        return HostProbe(frozenset(found) & {d.name for d in storage}, frozenset(nets))


class Agent:
    def __init__(self, flavor: FakeFlavor) -> None:
        self.flavor, self.off = flavor, []

    def power(self, device: FenceDevice, action: str, timeout: float) -> str:
        if action == "off":
            self.off.append(device.address)
            self.flavor.driver.running.pop(device.address, None)
        return "off" if device.address in self.off else "on"


def cluster(flavor: FakeFlavor | None = None) -> tuple[Cluster, FakeClock, FakeFlavor]:
    clock = FakeClock()
    flavor = flavor or FakeFlavor("fake")
    config = ClusterConfig(liveness=LivenessPolicy(heartbeat_interval=1, missed_beats=2, non_responsive_grace=2,
                                                   grace_per_workload=0),
                           fencing=FencePolicy(startup_grace=0, soft_first=False, confirm_timeout=0, retries=0),
                           call_timeout=5, call_wait=0.5)
    c = Cluster(plugins=Plugins([flavor], entry_points=False), clock=clock, config=config, monotonic=clock.now)
    agent = Agent(flavor)
    c.controller.fencer.agent_for = lambda _: agent
    for name in NAMES:
        c.register_host({"name": name, "capacity": {"cpu": 8, "memory": 8192},
                         "fence_devices": [{"agent": "ipmi", "address": name}]})
    tick(c, clock, 3)
    return c, clock, flavor


def tick(c: Cluster, clock: FakeClock, n: int = 1, silent: tuple[str, ...] = ()) -> None:
    for _ in range(n):
        for name in NAMES:
            if name not in silent:
                c.heartbeat(name, HostReport())
        clock.advance(1)
        c.step()


def test_placement_follows_volumes_local_and_shared() -> None:
    c, _, _ = cluster()
    c.add_storage_domain({"name": "local2", "shared": False, "host": "h2"})
    c.add_storage_domain({"name": "nfs", "hosts": ["h1", "h3"]})
    c.add_volume({"name": "db-disk", "domain": "local2", "size": 1024, "workload": "db"})
    c.add_volume({"name": "web-disk", "domain": "nfs", "size": 1024})
    assert c.submit({"name": "db", "flavor": "fake", "volumes": ["db-disk"]}).host == "h2"
    assert c.submit({"name": "web", "flavor": "fake", "volumes": ["web-disk"]}).host in ("h1", "h3")
    c.add_volume({"name": "spare", "domain": "local2", "size": 1})
    c.add_volume({"name": "both", "domain": "nfs", "size": 1})
    with pytest.raises(NoValidHost, match="not attached"):
        c.submit({"name": "x", "flavor": "fake", "volumes": ["spare", "both"]})
    assert "x" not in c.workloads()
    with pytest.raises(ValidationError, match="owned by db"):
        c.submit({"name": "thief", "flavor": "fake", "volumes": ["db-disk"]})


def test_volumes_are_checked_counted_and_deleted_with_their_workload() -> None:
    c, _, _ = cluster()
    c.add_storage_domain({"name": "nfs", "capacity": 2048})
    with pytest.raises(ValidationError, match="no such storage domain"):
        c.add_volume({"name": "v", "domain": "nope", "size": 1})
    c.add_volume({"name": "v1", "domain": "nfs", "size": 1500, "workload": "w"})
    with pytest.raises(ValidationError, match="only 548 MiB left"):
        c.add_volume({"name": "v2", "domain": "nfs", "size": 600})
    c.add_volume({"name": "kept", "domain": "nfs", "size": 100, "workload": "w", "keep": True})
    c.submit({"name": "w", "flavor": "fake", "volumes": ["v1", "kept"]})
    with pytest.raises(InUse):
        c.delete_volume("v1")
    c.delete("w")
    assert set(c.volumes()) == {"kept"}
    with pytest.raises(ValidationError, match="names its host"):
        c.add_storage_domain({"name": "bad", "shared": False})


@pytest.mark.parametrize("shared", [True, False])
def test_ha_restart_only_with_shared_storage(shared: bool) -> None:
    c, clock, flavor = cluster()
    domain = {"name": "d", "hosts": ["h1", "h2", "h3"]} if shared else {"name": "d", "shared": False, "host": "h1"}
    c.add_storage_domain(domain)
    c.add_volume({"name": "disk", "domain": "d", "size": 10, "workload": "vm"})
    c.submit({"name": "vm", "flavor": "fake", "ha": True, "volumes": ["disk"], "pinned": ["h1"]})
    c.update_workload("vm", lambda w: attrs.evolve(w, pinned=frozenset()))  # placed on h1; free to move now
    tick(c, clock, 12, silent=("h1",))
    assert c.host("h1").state is S.DOWN
    placement = c.placements()["vm"]
    if shared:
        assert placement.state is PlacementState.RUNNING and placement.host in ("h2", "h3")
        assert flavor.driver.where("vm") == [placement.host]
    else:
        assert placement.state is PlacementState.FAILED and flavor.driver.where("vm") == []
        blocked = c.query_events(kind="ha-blocked")
        assert len(blocked) == 1 and "local domain d" in blocked[0].reason


def test_a_probe_that_loses_shared_storage_makes_the_host_non_operational_and_back() -> None:
    flavor = Probing()
    c, clock, _ = cluster(flavor)
    c.add_storage_domain({"name": "nfs"})
    c.add_network({"name": "mgmt", "required": True})
    tick(c, clock, 3)
    assert all(c.host(n).state is S.UP for n in NAMES)
    flavor.reach["h2"] = (set(), {"mgmt"})  # its mount is gone
    tick(c, clock, 3)
    h2 = c.host("h2")
    assert h2.state is S.NON_OPERATIONAL and h2.non_operational is NonOperationalReason.STORAGE_UNREACHABLE
    assert "nfs" in h2.reason
    flavor.reach["h2"] = ({"nfs"}, {"mgmt"})
    tick(c, clock, 3)
    assert c.host("h2").state is S.UP
    flavor.reach["h3"] = ({"nfs"}, set())  # the required network is gone
    tick(c, clock, 3)
    assert c.host("h3").state is S.NON_OPERATIONAL and "mgmt" in c.host("h3").reason


def test_a_probe_that_hangs_counts_as_no_storage_and_costs_only_its_host() -> None:
    flavor = Probing()
    c, clock, _ = cluster(flavor)
    c.add_storage_domain({"name": "nfs"})
    tick(c, clock, 2)
    flavor.hang.add("h3")
    try:
        tick(c, clock, 10)
        assert c.host("h3").state is S.NON_OPERATIONAL and "nfs" in c.host("h3").reason
        assert all(c.host(n).state is S.UP for n in ("h1", "h2"))
    finally:
        flavor.release.set()


# --------------------------------------------------------------------------- volumes' data, storage migration


class Disks:
    """A volume driver keeping volumes as dict entries per host; ``hosts`` are its own."""

    def __init__(self, hosts: Sequence[str] = NAMES) -> None:
        self.hosts = set(hosts)
        self.data: dict[tuple[str, str], str] = {}  # (host, volume) -> content
        self.fail = False
        self.prepared: list[tuple[str, str]] = []

    def prepare_domain(self, host: Host, domain: StorageDomain) -> bool:
        if host.name not in self.hosts:
            return False
        self.prepared.append((host.name, domain.name))
        return True

    def create_volume(self, host: Host, domain: StorageDomain, volume: Volume, template: Volume | None,
                      upload: str | None) -> bool:
        if host.name not in self.hosts:
            return False
        if self.fail:
            raise OSError("disk full")
        content = f"clone of {template.name}" if template else f"upload {upload}" if upload else "empty"
        self.data[(host.name, volume.name)] = content
        return True

    def delete_volume(self, host: Host, domain: StorageDomain, volume: Volume) -> bool:
        if host.name not in self.hosts:
            return False
        self.data.pop((host.name, volume.name), None)
        return True

    def resize_volume(self, host: Host, domain: StorageDomain, volume: Volume, size: int) -> bool:
        if host.name not in self.hosts:
            return False
        self.data[(host.name, volume.name)] += f" grown to {size}"
        return True


class CarryingDriver(FakeDriver):
    """Migrates a workload's local volumes along (a live storage migration)."""

    def __init__(self, disks: Disks) -> None:
        super().__init__("fake")
        self.disks = disks

    def migrates_storage(self, workload: Workload) -> bool:
        return True

    def migrate(self, workload: Workload, source: Host, target: Host) -> None:
        super().migrate(workload, source, target)
        for volume in sorted(workload.volumes):
            if (source.name, volume) in self.disks.data:
                self.disks.data[(target.name, volume)] = self.disks.data.pop((source.name, volume))


class Keeping(FakeFlavor):
    def __init__(self, carry: bool = False) -> None:
        super().__init__("fake")
        self.disks = Disks()
        if carry:
            self.driver = CarryingDriver(self.disks)

    @hookimpl
    def clustercore_register(self, registry: Registry) -> None:
        registry.add_driver(self.driver)
        registry.add_volume_driver(self.disks)


def test_volume_data_is_made_where_the_volume_lives_and_the_store_follows_the_flavor() -> None:
    flavor = Keeping()
    c, _, _ = cluster(flavor)
    c.add_storage_domain({"name": "nfs", "path": "/srv/nfs", "capacity": 1000})
    c.add_storage_domain({"name": "local", "shared": False, "hosts": ["h2", "h3"], "path": "/var/lib/local",
                          "capacity": 100})
    assert flavor.disks.prepared == [("h1", "nfs"), ("h2", "local"), ("h3", "local")]
    c.add_volume({"name": "tmpl", "domain": "nfs", "size": 64}, upload="/tmp/base.qcow2")
    assert flavor.disks.data == {("h1", "tmpl"): "upload /tmp/base.qcow2"}  # first answering attached host
    c.add_volume({"name": "d1", "domain": "local", "host": "h3", "size": 64, "template": "tmpl"})
    assert flavor.disks.data[("h3", "d1")] == "clone of tmpl"
    assert c.volumes()["d1"].host == "h3"
    with pytest.raises(ValidationError, match="names the host"):
        c.add_volume({"name": "d2", "domain": "local", "size": 1})
    with pytest.raises(ValidationError, match="not on that host"):
        c.add_volume({"name": "d2", "domain": "local", "host": "h1", "size": 1})
    with pytest.raises(ValidationError, match="only 36 MiB left"):
        c.add_volume({"name": "d2", "domain": "local", "host": "h3", "size": 37})
    c.add_volume({"name": "d2", "domain": "local", "host": "h2", "size": 90})  # h2's room is its own
    with pytest.raises(ValidationError, match="smaller than its template"):
        c.add_volume({"name": "d3", "domain": "nfs", "size": 10, "template": "tmpl"})
    with pytest.raises(InUse, match="d1"):
        c.delete_volume("tmpl")  # d1's data depends on it
    flavor.disks.fail = True
    with pytest.raises(FlavorError, match="disk full"):
        c.add_volume({"name": "d4", "domain": "nfs", "size": 1})
    assert "d4" not in c.volumes()
    flavor.disks.fail = False
    assert c.resize_volume("d1", 80).size == 80 and flavor.disks.data[("h3", "d1")].endswith("grown to 80")
    with pytest.raises(ValidationError, match=">= the current 80"):
        c.resize_volume("d1", 70)
    c.delete_volume("d1")
    assert ("h3", "d1") not in flavor.disks.data and "d1" not in c.volumes()


def test_a_volume_whose_host_does_not_answer_is_refused_with_nothing_written() -> None:
    flavor = Keeping()
    c, clock, _ = cluster(flavor)
    c.add_storage_domain({"name": "local", "shared": False, "hosts": ["h1", "h2"]})
    tick(c, clock, 12, silent=("h1",))
    assert c.host("h1").state is S.DOWN
    with pytest.raises(NoVolumeHost, match="host h1 is not answering"):
        c.add_volume({"name": "v", "domain": "local", "host": "h1", "size": 1})
    assert c.volumes() == {} and flavor.disks.data == {}


def test_resize_waits_for_the_workload_to_stop_and_delete_removes_owned_data() -> None:
    flavor = Keeping()
    c, _, _ = cluster(flavor)
    c.add_storage_domain({"name": "nfs"})
    c.add_volume({"name": "v", "domain": "nfs", "size": 10, "workload": "w"})
    c.submit({"name": "w", "flavor": "fake", "volumes": ["v"]})
    with pytest.raises(InUse, match="stopped"):
        c.resize_volume("v", 20)
    c.delete("w")
    assert c.volumes() == {} and flavor.disks.data == {}


@pytest.mark.parametrize("carry", [True, False])
def test_a_drain_moves_local_volumes_along_only_with_a_driver_that_migrates_storage(carry: bool) -> None:
    flavor = Keeping(carry)
    c, clock, _ = cluster(flavor)
    c.add_storage_domain({"name": "local", "shared": False, "hosts": list(NAMES), "capacity": 100})
    c.add_volume({"name": "big", "domain": "local", "host": "h3", "size": 90})  # no room for disk on h3
    c.add_volume({"name": "disk", "domain": "local", "host": "h1", "size": 50, "workload": "db"})
    assert c.submit({"name": "db", "flavor": "fake", "volumes": ["disk"]}).host == "h1"
    if not carry:  # it cannot leave h1: maintenance is refused, or stops it when asked to
        with pytest.raises(MaintenanceVetoed, match="local domains that cannot move with db"):
            c.start_maintenance("h1")
        assert c.host("h1").state is S.UP
    c.start_maintenance("h1", stop_unmovable=not carry)
    tick(c, clock, 3)
    if carry:
        assert c.host("h1").state is S.MAINTENANCE
        assert c.placements()["db"].host == "h2" and c.volumes()["disk"].host == "h2"
        assert flavor.disks.data[("h2", "disk")] == "empty" and ("h1", "disk") not in flavor.disks.data
        moved = c.query_events(kind="migrated")
        assert "with volumes disk" in moved[-1].reason
    else:
        assert c.host("h1").state is S.MAINTENANCE and "db" not in c.placements()
        assert c.volumes()["disk"].host == "h1" and c.query_events(kind="stopped-for-maintenance")


def test_completion_fills_in_and_is_checked_again() -> None:
    class Completing(FakeFlavor):
        rename = False

        @hookimpl
        def clustercore_complete_workload(self, workload: Workload, storage: StorageView) -> Workload:
            if self.rename:
                return attrs.evolve(workload, name="other")
            return attrs.evolve(workload, labels={"volumes-known": str(len(storage.volumes))})

    flavor = Completing("fake")
    c, _, _ = cluster(flavor)
    assert c.submit({"name": "w", "flavor": "fake"}) and c.workloads()["w"].labels["volumes-known"] == "0"
    flavor.rename = True
    with pytest.raises(FlavorError, match="not the workload 'x' completed"):
        c.submit({"name": "x", "flavor": "fake"})
    assert "x" not in c.workloads()


def test_the_liveness_witness_is_told_what_runs_on_the_host() -> None:
    class Witness(FakeFlavor):
        def __init__(self) -> None:
            super().__init__("fake")
            self.asked: list[tuple[str, list[str]]] = []

        @hookimpl
        def clustercore_host_alive(self, host: Host, workloads: Sequence[Workload]) -> bool:
            self.asked.append((host.name, sorted(w.name for w in workloads)))
            return True  # its leases are held: alive

    flavor = Witness()
    c, clock, _ = cluster(flavor)
    c.submit({"name": "w", "flavor": "fake", "pinned": ["h1"]})
    tick(c, clock, 12, silent=("h1",))
    assert ("h1", ["w"]) in flavor.asked
    assert c.host("h1").state is S.NON_RESPONSIVE  # never fenced while the witness says alive
    assert c.query_events(kind="fence-skipped")


def test_an_operator_migrates_one_workload_to_a_host_or_where_the_scheduler_says() -> None:
    c, _, flavor = cluster()
    c.submit({"name": "w", "flavor": "fake", "requests": {"cpu": 1, "memory": 64}, "pinned": ["h1"]})
    c.update_workload("w", lambda w: attrs.evolve(w, pinned=frozenset()))
    assert c.migrate("w", "h3").host == "h3" and flavor.driver.where("w") == ["h3"]
    assert c.migrate("w").host in ("h1", "h2")
    with pytest.raises(ValidationError, match="runs on"):
        c.migrate("w", c.placements()["w"].host)
    with pytest.raises(NoValidHost, match="not the target asked for"):
        c.migrate("w", "nowhere")
    source = c.placements()["w"].host
    flavor.driver.fail.add(("migrate", source))
    with pytest.raises(FlavorError, match="injected failure"):
        c.migrate("w")
    placement = c.placements()["w"]
    assert placement.host == source and placement.state is PlacementState.RUNNING
    assert flavor.driver.where("w") == [source]


def test_a_host_that_loses_storage_is_evacuated_and_comes_back_up_empty() -> None:
    flavor = Probing()
    c, clock, _ = cluster(flavor)
    c.add_storage_domain({"name": "nfs"})
    tick(c, clock, 2)
    c.add_volume({"name": "disk", "domain": "nfs", "size": 1, "workload": "w3"})
    for i in range(4):
        c.submit({"name": f"w{i}", "flavor": "fake", "pinned": ["h2"], "volumes": ["disk"] if i == 3 else []})
        c.update_workload(f"w{i}", lambda w: attrs.evolve(w, pinned=frozenset()))
    flavor.reach["h2"] = (set(), set())
    tick(c, clock, 4)
    assert c.host("h2").state is S.NON_OPERATIONAL
    assert all(flavor.driver.where(f"w{i}") not in ([], ["h2"]) for i in range(3))
    # w3's disk is on the domain h2 lost: its flavor could not hand it over, so it stays.
    assert flavor.driver.where("w3") == ["h2"] and c.placements()["w3"].host == "h2"
    stranded = c.query_events(kind="not-evacuated")
    assert len(stranded) == 1 and "nfs is not reached from h2" in stranded[0].reason
    del flavor.reach["h2"]
    tick(c, clock, 3)
    assert c.host("h2").state is S.UP


def test_defining_a_domain_never_makes_the_probed_hosts_non_operational_at_once() -> None:
    flavor = Probing()
    c, clock, _ = cluster(flavor)
    c.add_network({"name": "mgmt", "required": True})
    tick(c, clock, 3)
    c.add_storage_domain({"name": "nfs"})  # probed hosts have not been asked about it yet
    tick(c, clock, 3)
    assert all(c.host(n).state is S.UP for n in NAMES)
    assert not c.query_events(kind="not-operational")
    flavor.reach["h1"] = (set(), {"mgmt"})  # and once asked, the answer counts
    tick(c, clock, 3)
    assert c.host("h1").state is S.NON_OPERATIONAL


def test_a_host_is_updated_in_place_checked_like_a_registration() -> None:
    c, _, _ = cluster()
    before = c.host("h1")
    new = c.update_host("h1", {"capacity": {"cpu": 16, "memory": 4096}, "labels": {"rack": "r2"},
                               "fence_devices": [{"agent": "ipmi", "address": "h1", "password": "rotated"}]},
                        by="alice")
    assert new.state is before.state and new.capacity.cpu == 16 and new.allocatable.memory == 4096
    stored = c.host("h1").fence_devices[0].password  # sealed at rest (clustercore.secrets)
    assert c.writer.secrets.open(stored) == "rotated" and c.host("h1").labels["rack"] == "r2"
    event = c.query_events(kind="updated", subject="host/h1")[-1]
    assert "by alice" in event.reason and "fence_devices" in event.reason
    with pytest.raises(ValidationError, match="cannot be updated"):
        c.update_host("h1", {"state": "Up"})
    with pytest.raises(ValidationError) as info:
        c.update_host("h1", {"fence_devices": [{"agent": "ipmi", "address": "h1\n"}]})
    assert info.value.field.startswith("fence_devices") and c.host("h1") == new
