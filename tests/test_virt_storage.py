"""The virt flavor's storage and networks on libvirt's test driver (pools and volumes are
real libvirt objects there, in memory): domains prepared with their marker, volumes made
as pool volumes (clones on their template), disks and NICs completed at submit (volume
files, MACs from the pool, logical networks through a backend), validation refusing what
does not match, and the probe finding domains by their marker. The lab tests
(tests/test_virt_storage_lab.py) do the same on real hosts with real guests."""

from __future__ import annotations

from collections.abc import Iterator

import hypothesis.strategies as st
import libvirt
import pytest
from hypothesis import given, settings

from clustercore import Cluster, FakeClock, Plugins
from clustercore.errors import ValidationError
from clustercore.model import Host
from clustercore.network import LogicalNetwork
from clustercore.storage import StorageDomain
from flavors.virt import VirtFlavor, vm_workload
from flavors.virt.networks import LibvirtNetworks, MacPool, UdpNetworks, complete_nics, mac_text
from flavors.virt.spec import Disk, Nic, VMSpec
from flavors.virt.storage import MARKER, probe_storage

ROOT = "/var/lib/clustercore/nfs"


def cluster(flavor: VirtFlavor) -> Cluster:
    c = Cluster(plugins=Plugins([flavor], entry_points=False), clock=FakeClock())
    c.register_host({"name": "h1", "address": "test:///default", "capacity": {"cpu": 64, "memory": 65536}})
    for _ in range(2):
        c.heartbeat("h1")
        c.step()
    return c


def settle(c: Cluster) -> None:
    """Heartbeats and passes until the probes have run."""
    for _ in range(3):
        c.clock.advance(10)  # type: ignore[attr-defined]
        c.heartbeat("h1")
        c.step()


@pytest.fixture
def c() -> Iterator[Cluster]:
    flavor = VirtFlavor(networks=UdpNetworks({"lan": "127.0.0.1:7000"}))
    cl = cluster(flavor)
    yield cl
    conn = flavor.driver.connect(cl.host("h1"))
    for dom in conn.listAllDomains(0):
        if dom.name().startswith("vm"):
            dom.destroy() if dom.isActive() else None
            dom.undefine()
    for name in ("nfs",):
        try:
            pool = conn.storagePoolLookupByName(name)
        except libvirt.libvirtError:
            continue
        for vol in pool.listAllVolumes(0):
            vol.delete(0)
        pool.destroy()
        pool.undefine()


def vm(name: str, disk: str | None = None, nics: tuple[Nic, ...] = ()) -> VMSpec:
    disks = (Disk("vda", f"{ROOT}/{disk}.qcow2", format="qcow2", volume=disk),) if disk else ()
    return VMSpec.new(name, 128, disks=disks, nics=nics)


def test_volumes_disks_and_nics_are_realized_and_completed(c: Cluster) -> None:
    c.add_storage_domain({"name": "nfs", "path": ROOT})
    c.add_network({"name": "lan"})
    settle(c)
    conn = c.plugins.driver("vm").connect(c.host("h1"))  # type: ignore[attr-defined]
    assert MARKER in conn.storagePoolLookupByName("nfs").listVolumes()
    c.add_volume({"name": "tmpl", "domain": "nfs", "size": 64})
    c.add_volume({"name": "d1", "domain": "nfs", "size": 128, "template": "tmpl", "workload": "vm1"})
    clone = conn.storagePoolLookupByName("nfs").storageVolLookupByName("d1.qcow2")
    assert f"{ROOT}/tmpl.qcow2" in clone.XMLDesc(0) and clone.info()[1] == 128 * 2**20
    c.submit(vm_workload(vm("vm1", "d1", (Nic("network", "lan"), Nic("user")))))
    c.add_volume({"name": "d2", "domain": "nfs", "size": 64, "workload": "vm2"})
    c.submit(vm_workload(vm("vm2", "d2", (Nic("network", "lan"),))))
    w1, w2 = c.workloads()["vm1"], c.workloads()["vm2"]
    assert w1.volumes == {"d1"} and w1.networks == {"lan"}
    nics = [dict(n) for n in w1.spec["nics"]]
    assert [n["mac"] for n in nics] == ["52:54:00:cc:00:00", "52:54:00:cc:00:01"]
    assert nics[0]["kind"] == "udp" and nics[0]["source"] == "127.0.0.1:7000" and nics[0]["local"] == "127.0.0.1:30000"
    assert nics[1]["kind"] == "user"  # not a logical network: only a MAC
    assert dict(w2.spec["nics"][0])["mac"] == "52:54:00:cc:00:02"
    disk = dict(w1.spec["disks"][0])
    assert (disk["source"], disk["storage"]) == (f"{ROOT}/d1.qcow2", "shared")
    assert "vm1" in [d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)]
    c.delete("vm2")  # its own volume goes with it, data included
    assert "d2" not in c.volumes() and "d2.qcow2" not in conn.storagePoolLookupByName("nfs").listVolumes()


def test_disks_and_nics_that_do_not_match_the_cluster_are_refused(c: Cluster) -> None:
    c.add_storage_domain({"name": "nfs", "path": ROOT})
    settle(c)
    c.add_volume({"name": "d1", "domain": "nfs", "size": 64, "workload": "vm1"})
    with pytest.raises(ValidationError, match="no such volume"):
        c.submit(vm_workload(vm("vm1", "nope")))
    with pytest.raises(ValidationError, match="no such logical network"):
        c.submit(vm_workload(vm("vm1", "d1", (Nic("bridge", "br0", network="nope"),))))
    bad = VMSpec.new("vm1", 128, disks=(Disk("vda", f"{ROOT}/d1.qcow2", format="raw", volume="d1"),))
    with pytest.raises(ValidationError, match="volume d1 is qcow2"):
        c.submit(vm_workload(bad))
    assert c.workloads() == {}
    # A definition written past the completion (another writer) is still checked.
    flavor = c.plugins.pm.get_plugin("virt")
    spec = VMSpec.new("vm1", 128, disks=(Disk("vda", f"{ROOT}/other.qcow2", format="qcow2", volume="d1"),))
    with pytest.raises(ValidationError) as info:
        flavor.clustercore_validate_workload(vm_workload(spec), {}, c.config, c.storage_view())
    assert info.value.field == "spec.disks[0].source"


def test_the_probe_finds_a_domain_by_its_marker(c: Cluster) -> None:
    c.add_storage_domain({"name": "nfs", "path": ROOT})
    flavor = c.plugins.pm.get_plugin("virt")
    host = c.host("h1")
    domain = c.storage_domains()["nfs"]
    found = probe_storage(flavor.storage, host, [domain])
    assert set(found) == {"nfs"} and found["nfs"] > 0
    pool = flavor.driver.connect(host).storagePoolLookupByName("nfs")
    pool.storageVolLookupByName(MARKER).delete(0)  # an empty directory where the mount was
    assert probe_storage(flavor.storage, host, [domain]) == {}
    other = StorageDomain("gone", path="/nonexistent/clustercore-gone")
    assert probe_storage(flavor.storage, host, [other]) == {}


def test_libvirt_networks_are_made_on_the_host_and_reached_while_active() -> None:
    conn = libvirt.open("test:///default")
    backend = LibvirtNetworks(bridges={"lan": "br0"})
    lan = LogicalNetwork("lan", mtu=9000)
    try:
        assert backend.realize(conn, lan)
        net = conn.networkLookupByName("lan")
        assert "<bridge name='br0'/>" in net.XMLDesc(0)
        net.destroy()
        assert backend.realize(conn, lan) and net.isActive()  # started again by the next probe
        nic = backend.nic(Nic("network", "lan", mac="52:54:00:cc:00:05"), lan, MacPool())
        assert (nic.kind, nic.source, nic.network) == ("network", "lan", "lan")
    finally:
        conn.close()


def test_the_mac_pool_is_exhausted_with_a_named_error() -> None:
    pool = MacPool("52:54:00:cc:00:00", "52:54:00:cc:00:01")
    assert pool.assign(1, ["52:54:00:cc:00:00"]) == ["52:54:00:cc:00:01"]
    with pytest.raises(ValidationError, match="exhausted"):
        pool.assign(2, ["52:54:00:cc:00:00"])
    with pytest.raises(ValueError, match="unicast"):
        MacPool("53:54:00:00:00:00", "53:54:00:00:00:10")
    udp = UdpNetworks({"lan": "127.0.0.1:7000"}, local_base=65535)
    with pytest.raises(ValidationError, match="gives no UDP port"):
        complete_nics((Nic("network", "lan", mac="52:54:00:cc:00:01"),), {"lan": LogicalNetwork("lan")}, udp,
                      pool, [])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.booleans(), st.integers(0, 40)), max_size=12))
def test_no_two_nics_of_the_cluster_ever_share_a_mac(steps: list[tuple[int, bool, int]]) -> None:
    """Random submits (some NICs bring their own MAC, possibly taken) and deletes: every
    accepted VM's MACs are unique in the cluster; a taken MAC is refused, naming it."""
    flavor = VirtFlavor(networks=UdpNetworks({"lan": "127.0.0.1:7000"}))
    c = Cluster(plugins=Plugins([flavor], entry_points=False), clock=FakeClock())
    c.add_network({"name": "lan"})
    try:
        for i, (count, own, pick) in enumerate(steps):
            if count == 0 and c.workloads():  # the oldest is deleted: its MACs are free again
                oldest = sorted(c.workloads())[0]
                c.writer.forget_workload(oldest, c.state.workload(oldest).revision, 0.0)
                continue
            nics = tuple(Nic("network", "lan", mac=mac_text(0x525400cc0000 + pick) if own and j == 0 else None)
                         for j in range(max(count, 1)))
            workload = vm_workload(VMSpec.new(f"vm{i}", 64, nics=nics))
            existing = c.workloads()
            try:
                done = c.plugins.complete_workload(workload, existing, c.config, c.storage_view())
                c.plugins.validate_workload(done, existing, c.config, c.storage_view())
            except ValidationError as exc:
                assert own and exc.field == "spec.nics" and "MAC used by" in exc.problem
                continue
            c.writer.define(done, 0.0)
            macs = [str(n["mac"]) for w in c.workloads().values() for n in w.spec["nics"]]
            assert len(macs) == len(set(macs))
            ports = [str(n["local"]) for w in c.workloads().values() for n in w.spec["nics"]]
            assert len(ports) == len(set(ports))
    finally:
        flavor.driver.close()


def test_hosts_of_other_flavors_are_left_alone() -> None:
    flavor = VirtFlavor()
    plain = Host("dir", address="/srv/dir")
    assert flavor.clustercore_probe_host(plain, [StorageDomain("nfs", path=ROOT)], []) is None
    assert flavor.storage.create_volume(plain, StorageDomain("nfs", path=ROOT), None, None, None) is False  # type: ignore[arg-type]


def test_the_driver_follows_the_cluster_s_storage_roots() -> None:
    """A manager's flavor is built with the default roots; the cluster's config adds its own
    (a VM accepted at submit is started by a manager too)."""
    flavor = VirtFlavor()
    c = Cluster(plugins=Plugins([flavor], entry_points=False), clock=FakeClock())
    assert "/srv/lab" not in flavor.driver.storage_roots
    c.configure({"storage_roots": ["/srv/lab"]})
    assert "/srv/lab" in flavor.driver.storage_roots and "/var/lib/libvirt/images" in flavor.driver.storage_roots
    other = Cluster(store=c.store, plugins=Plugins([VirtFlavor()], entry_points=False), clock=FakeClock())
    assert "/srv/lab" in other.plugins.pm.get_plugin("virt").driver.storage_roots  # read at start


def test_a_pool_busy_building_a_volume_is_still_reached(c: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """libvirt refuses to refresh a pool while it clones a volume in it: the host still
    reaches the domain (it is not NonOperational for it); any other refusal is not reaching it."""
    c.add_storage_domain({"name": "nfs", "path": ROOT})
    flavor = c.plugins.pm.get_plugin("virt")
    host, domain = c.host("h1"), c.storage_domains()["nfs"]
    refusal = "internal error: pool 'nfs' has asynchronous jobs running."

    class Pool:
        def __init__(self, pool: libvirt.virStoragePool) -> None:
            self.pool = pool

        def __getattr__(self, name: str) -> object:
            return getattr(self.pool, name)

        def refresh(self, flags: int) -> None:
            raise libvirt.libvirtError(refusal)

    class Conn:
        def __init__(self, conn: libvirt.virConnect) -> None:
            self.conn = conn

        def __getattr__(self, name: str) -> object:
            return getattr(self.conn, name)

        def storagePoolLookupByName(self, name: str) -> Pool:
            return Pool(self.conn.storagePoolLookupByName(name))

    connect = flavor.storage.connect
    monkeypatch.setattr(flavor.storage, "connect", lambda h: Conn(connect(h)))
    found = probe_storage(flavor.storage, host, [domain])
    assert set(found) == {"nfs"} and found["nfs"] > 0
    refusal = "internal error: cannot open directory"
    assert probe_storage(flavor.storage, host, [domain]) == {}
