"""Generic storage domains, volumes and logical networks (issue 15, item 1): placement
follows volumes, HA restart only with shared storage, probes drive NonOperational."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import attrs
import pytest

from clustercore import Cluster, ClusterConfig, FakeClock, HostReport, HostState, Plugins, hookimpl
from clustercore.errors import InUse, NoValidHost, ValidationError
from clustercore.fencing import FencePolicy
from clustercore.lifecycle import LivenessPolicy
from clustercore.model import FenceDevice, Host, NonOperationalReason, PlacementState
from clustercore.network import LogicalNetwork
from clustercore.plugins import HostProbe
from clustercore.storage import StorageDomain
from clustercore.testing import FakeFlavor

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
