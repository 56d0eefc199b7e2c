"""The virt flavor on libvirt's test driver: host discovery, devices as resources, the
scheduler placing GPU VMs only where a free device is, adoption of existing domains,
and the core's conformance suite."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import libvirt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from clustercore import Cluster, FakeClock, Host, HostReport, HostState, Plugins, Workload
from clustercore.errors import MaintenanceVetoed, NoValidHost
from clustercore.model import Resources
from clustercore.testing import check_flavor
from flavors.virt import VirtFlavor, domxml, hostfacts
from flavors.virt.devices import DeviceUnavailable, allocate
from flavors.virt.driver import LibvirtDriver
from flavors.virt.spec import HostDevice, Memory, Nic, NumaCell, VMSpec
from flavors.virt.workload import adopt, vm_workload

DATA = Path(__file__).parent / "data" / "virt"
GPU_HOST = f"test://{DATA / 'gpu-host.xml'}"
PLAIN_HOST = f"test://{DATA / 'plain-host.xml'}"
ADOPTED = sorted(DATA.glob("*.xml"))
ADOPTED = [p for p in ADOPTED if not p.name.endswith("-host.xml")]


def gpu_facts() -> dict[str, object]:
    conn = libvirt.open(GPU_HOST)
    try:
        return hostfacts.discover(conn)
    finally:
        conn.close()


def vm(name: str, *hostdevs: HostDevice, nics: tuple[Nic, ...] = (), memory: int = 512,
       numa: tuple[NumaCell, ...] = ()) -> VMSpec:
    uid = str(uuid.uuid5(uuid.NAMESPACE_DNS, name))
    return VMSpec(name=name, uuid=uid, memory=Memory(memory), vcpus=1 if not numa else 2, hostdevs=hostdevs,
                  nics=nics, numa=numa, domain_type="qemu").check()


# --------------------------------------------------------------------------- discovery


def test_discovery_reports_pci_devices_with_iommu_groups_numa_sriov_and_mdev_types() -> None:
    facts = gpu_facts()
    pci = {d["address"]: d for d in facts["pci"]}  # type: ignore[attr-defined, index]
    t4 = pci["0000:b3:00.0"]
    assert (t4["vendor"], t4["product"], t4["iommu_group"], t4["numa_node"]) == ("10de", "1eb8", 90, 1)
    assert pci["0000:3b:00.0"]["vfs"] == ["0000:3b:02.0", "0000:3b:02.1"]
    assert pci["0000:3b:02.1"]["vf"] is True
    assert pci["0000:d8:00.0"]["mdev_types"] == {"nvidia-259": 2}
    assert facts["usb"][0]["vendor"] == "1050"  # type: ignore[index]


def test_devices_become_extended_resources_one_per_iommu_group() -> None:
    assert hostfacts.extended_resources(gpu_facts()) == {
        "pci/10de:1eb8": 2,  # two T4s, own groups
        "pci/10de:20b0": 1,  # the A100; its second function shares group 12 and is not counted again
        "pci/10de:1eb1": 1,
        "pci/8086:154c": 2,  # two VFs; the PF (class 02, not a VF) is not offered
        "mdev/nvidia-259": 2,
        "usb/1050:0407": 1,
    }  # no bridge: class 06 is never passed through


# --------------------------------------------------------------------------- allocation (pure)


def test_allocation_prefers_the_vm_numa_node_and_never_shares_a_group() -> None:
    facts = gpu_facts()
    near1 = vm("near1", HostDevice("pci", resource="pci/10de:1eb8"),
               numa=(NumaCell("0", 256, 1), NumaCell("1", 256, 1)))
    bound = allocate(near1, "gpu", facts, [])
    assert bound.hostdevs[0].address == "0000:b3:00.0"  # on node 1, though 65:00.0 sorts first
    other = allocate(vm("other", HostDevice("pci", resource="pci/10de:1eb8")), "gpu", facts, [bound])
    assert other.hostdevs[0].address == "0000:65:00.0"
    with pytest.raises(DeviceUnavailable, match="pci/10de:1eb8"):
        allocate(vm("third", HostDevice("pci", resource="pci/10de:1eb8")), "gpu", facts, [bound, other])
    by_address = vm("a100fn1", HostDevice("pci", address="0000:17:00.1"))
    holder = allocate(vm("a100", HostDevice("pci", resource="pci/10de:20b0")), "gpu", facts, [])
    with pytest.raises(DeviceUnavailable, match="IOMMU group"):
        allocate(by_address, "gpu", facts, [holder])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["pci/10de:1eb8", "pci/8086:154c", "mdev/nvidia-259", "pci/10de:20b0",
                                           "vf"]), st.booleans()), max_size=12))
def test_two_vms_never_get_the_same_device(requests: list[tuple[str, bool]]) -> None:
    """Random starts (and stops, when the flag is set) on one host: devices and IOMMU groups
    held by running VMs are always distinct, and a start fails only when none is free."""
    facts = gpu_facts()
    groups = {d["address"]: d["iommu_group"] for d in facts["pci"]}  # type: ignore[attr-defined, index]
    supply = hostfacts.extended_resources(facts)
    running: list[VMSpec] = []
    for i, (resource, stop_first) in enumerate(requests):
        if stop_first and running:
            running.pop(0)
        if resource == "vf":
            spec = vm(f"v{i}", nics=(Nic("hostdev", resource="pci/8086:154c", mac=f"52:54:00:00:01:{i:02x}"),))
            resource = "pci/8086:154c"
        else:
            spec = vm(f"v{i}", HostDevice(resource.split("/")[0], resource=resource))
        held = Counter(r for s in running for r in s.device_requests())
        try:
            running.append(allocate(spec, "gpu", facts, running))
        except DeviceUnavailable:
            assert held[resource] >= supply[resource]
        addresses = [d.address for s in running for d in s.hostdevs if d.kind == "pci"]
        addresses += [n.source for s in running for n in s.nics if n.kind == "hostdev"]
        assert len(addresses) == len(set(addresses))
        assert len({groups[a] for a in addresses}) == len(addresses)
        mdevs = [d.address for s in running for d in s.hostdevs if d.kind == "mdev"]
        assert len(mdevs) == len(set(mdevs)) <= 2


# --------------------------------------------------------------------------- the cluster


@pytest.fixture
def cluster() -> Cluster:
    clock = FakeClock()
    c = Cluster(plugins=Plugins([VirtFlavor(LibvirtDriver(shutdown_timeout=0.5))], entry_points=False), clock=clock)
    for name, uri in (("gpu", GPU_HOST), ("plain", PLAIN_HOST)):
        c.register_host({"name": name, "address": uri, "capacity": {"cpu": 16, "memory": 65536}})
    for _ in range(2):
        for name in ("gpu", "plain"):
            c.heartbeat(name, HostReport())
        clock.advance(5)
        c.step()
    assert {h.state for h in c.hosts().values()} == {HostState.UP}
    yield c
    for name in list(c.placements()):
        c.stop(name)
    c.plugins.driver("vm").close()  # type: ignore[attr-defined]


def hostdev_addresses(cluster: Cluster, host: str) -> list[str]:
    conn = cluster.plugins.driver("vm").connect(cluster.host(host))  # type: ignore[attr-defined]
    out = []
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        out += [d.address for d in domxml.parse(dom.XMLDesc(0)).hostdevs if d.address]
    return out


def test_gpu_vms_go_only_where_a_free_gpu_is_and_never_share_one(cluster: Cluster) -> None:
    gpu = cluster.host("gpu")
    assert gpu.capacity.get("pci/10de:1eb8") == 2 and cluster.host("plain").capacity.get("pci/10de:1eb8") == 0
    assert gpu.facts["virt"]["threads"] == 16
    for i in (1, 2):
        placement = cluster.submit(vm_workload(vm(f"t4-{i}", HostDevice("pci", resource="pci/10de:1eb8"))))
        assert placement.host == "gpu"
    assert sorted(hostdev_addresses(cluster, "gpu")) == ["0000:65:00.0", "0000:b3:00.0"]
    with pytest.raises(NoValidHost) as info:
        cluster.submit(vm_workload(vm("t4-3", HostDevice("pci", resource="pci/10de:1eb8"))))
    assert "insufficient pci/10de:1eb8" in str(info.value)
    assert "t4-3" not in cluster.workloads(), "a submit the scheduler refused writes nothing"
    cluster.stop("t4-1")  # releases its GPU
    assert cluster.submit(vm_workload(vm("t4-3", HostDevice("pci", resource="pci/10de:1eb8")))).host == "gpu"
    assert sorted(hostdev_addresses(cluster, "gpu")) == ["0000:65:00.0", "0000:b3:00.0"]
    plain = cluster.submit(vm_workload(vm("web", memory=1024)))
    assert plain.host in ("gpu", "plain")


def test_a_vm_with_passthrough_vetoes_maintenance_unless_asked_to_stop_it(cluster: Cluster) -> None:
    cluster.submit(vm_workload(vm("t4", HostDevice("pci", resource="pci/10de:1eb8"))))
    with pytest.raises(MaintenanceVetoed, match=r"cannot live-migrate.*t4"):
        cluster.start_maintenance("gpu")
    assert "t4" in cluster.placements()
    cluster.start_maintenance("gpu", stop_unmovable=True)
    assert "t4" not in cluster.placements() and "t4" in cluster.workloads()
    assert cluster.host("gpu").state is HostState.PREPARING_FOR_MAINTENANCE
    assert any(e.kind == "stopped-for-maintenance" for e in cluster.query_events(subject="workload/t4"))


def test_vm_aware_filters_explain_refusals(cluster: Cluster) -> None:
    big = VMSpec(name="wide", uuid="00000000-0000-4000-8000-000000000001", memory=Memory(1024), vcpus=80,
                 domain_type="qemu")
    rows = {r.host: r for r in cluster.explain(vm_workload(big))}
    assert all("vCPU overcommit" in (r.reason or "") or "insufficient cpu" in (r.reason or "")
               for r in rows.values())
    pinned = VMSpec(name="numa", uuid="00000000-0000-4000-8000-000000000002", memory=Memory(1024), vcpus=2,
                    numa=(NumaCell("0-1", 1024, 3),), domain_type="qemu")
    rows = {r.host: r for r in cluster.explain(vm_workload(pinned))}
    assert "missing host node 3" in (rows["plain"].reason or "")


# --------------------------------------------------------------------------- adoption


@pytest.mark.parametrize("path", ADOPTED, ids=lambda p: p.name)
def test_existing_domains_are_adopted_without_losing_a_device(path: Path) -> None:
    xml = path.read_text()
    workload = adopt(xml, "gpu", gpu_facts())
    spec = VMSpec.from_dict(workload.spec.thaw(), "spec")
    assert workload.requests.cpu == spec.vcpus and workload.requests.memory == spec.memory.size
    rebuilt = domxml.build(spec)
    domxml.validate(rebuilt)

    def devices(doc: str) -> Counter[str]:
        root = etree.fromstring(doc.encode())
        kept = ("disk", "interface", "hostdev", "serial", "console", "channel", "graphics", "watchdog", "rng",
                "tpm", "memory")
        count = Counter(d.tag for d in root.find("devices") if d.tag in kept)
        count["balloon"] = sum(1 for d in root.findall("devices/memballoon") if d.get("model") != "none")
        return count

    assert devices(rebuilt) == devices(xml)
    assert domxml.parse(rebuilt) == spec
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(rebuilt)
        assert domxml.parse(dom.XMLDesc(0)) == spec
        dom.undefine()
    finally:
        conn.close()


def test_adopted_requests_match_the_domains() -> None:
    by_name = {p.name: adopt(p.read_text(), "gpu", gpu_facts()) for p in ADOPTED}
    gpu = by_name["gpu-hugepages.xml"]
    assert gpu.requests == Resources(8, 32768, {"hugepages-1G": 32, "pci/10de:1eb8": 2, "pci/8086:154c": 1})
    assert gpu.pinned == frozenset({"gpu"})
    numa = by_name["numa-pinned.xml"]
    assert numa.requests == Resources(4, 17408) and not numa.pinned  # 16 GiB in cells + a 1 GiB DIMM
    spec = VMSpec.from_dict(numa.spec.thaw(), "spec")
    assert (spec.max_vcpus, spec.memory.maximum, spec.memory.slots, [c.host_node for c in spec.numa]) == (
        8, 65536, 4, [0, 1])
    sb = VMSpec.from_dict(by_name["uefi-secureboot.xml"].spec.thaw(), "spec")
    assert sb.firmware.secure_boot and sb.tpm and sb.clock == "localtime"
    assert by_name["uefi-secureboot.xml"].pinned == frozenset({"gpu"})  # host-passthrough CPU
    web = by_name["server-virtio-bridge.xml"]
    assert web.requests == Resources(4, 4096) and not web.pinned


# --------------------------------------------------------------------------- the contract


def test_the_virt_flavor_passes_the_conformance_suite() -> None:
    flavor = VirtFlavor(LibvirtDriver(shutdown_timeout=0.5))
    host = Host("gpu", capacity=Resources(16, 65536), address=GPU_HOST, state=HostState.UP)
    workload = vm_workload(vm("conformance", HostDevice("pci", resource="pci/10de:1eb8")))
    report = check_flavor(flavor, host, workload)
    assert "stop is idempotent" in report.passed and "start then inspect" in report.passed
    flavor.driver.close()


def test_a_host_that_is_not_libvirt_is_left_alone() -> None:
    flavor = VirtFlavor()
    assert flavor.clustercore_describe_host(Host("dir", address="/tmp/x")) is None
    assert flavor.clustercore_bootstrap_host(Host("dir", address="/tmp/x")) is None


def test_an_unreachable_libvirt_fails_the_join_naming_the_uri() -> None:
    clock = FakeClock()
    c = Cluster(plugins=Plugins([VirtFlavor()], entry_points=False), clock=clock)
    c.register_host({"name": "gone", "address": "qemu+tcp://127.0.0.1:1/system", "capacity": {"cpu": 1}})
    c.heartbeat("gone", HostReport())
    c.step()
    host = c.host("gone")
    assert host.state is HostState.INSTALL_FAILED
    assert "qemu+tcp://127.0.0.1:1/system" in host.reason


def test_workload_spec_errors_name_the_field() -> None:
    from clustercore.errors import ValidationError
    from flavors.virt.workload import vm_spec

    with pytest.raises(ValidationError) as info:
        vm_spec(Workload("x", "vm", spec={"name": "x", "uuid": "nope", "memory": {"size": 1}}))
    assert info.value.field == "spec.uuid"
