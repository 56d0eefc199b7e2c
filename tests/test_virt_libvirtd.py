"""The virt flavor against a real libvirtd with QEMU (KVM, or TCG where /dev/kvm is missing):
lifecycle and hotplug, through the cluster, on one lab host."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from clustercore import Cluster, ClusterConfig, FakeClock, HostReport, HostState, Plugins
from clustercore.config import DEFAULT_STORAGE_ROOTS
from clustercore.driver import WorkloadState
from flavors.virt import VirtFlavor, hotplug
from flavors.virt.driver import LibvirtDriver, VirtError
from flavors.virt.lab import Lab, domain_type
from flavors.virt.spec import Disk, Graphics, Memory, Nic, NumaCell, VMSpec, Watchdog
from flavors.virt.workload import vm_spec, vm_workload

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(1, base_port=16650) as lab:
        yield lab


@pytest.fixture
def cluster(lab: Lab, tmp_path: Path) -> Iterator[Cluster]:
    clock = FakeClock()
    # The tests' disks and seeds live in pytest's directory; /nonexistent lets libvirt itself refuse a disk.
    roots = [*DEFAULT_STORAGE_ROOTS, str(tmp_path), "/nonexistent"]
    c = Cluster(plugins=Plugins([VirtFlavor(LibvirtDriver(shutdown_timeout=1.0, storage_roots=roots))],
                                entry_points=False), clock=clock, config=ClusterConfig(storage_roots=frozenset(roots)))
    c.register_host({"name": "lab1", "address": lab.hosts[0].uri, "capacity": {"cpu": 4, "memory": 4096}})
    for _ in range(2):
        c.heartbeat("lab1", HostReport())
        clock.advance(5)
        c.step()
    assert c.host("lab1").state is HostState.UP, c.host("lab1").reason
    yield c
    for name in list(c.placements()):
        c.stop(name, force=True)
    c.plugins.driver("vm").close()  # type: ignore[attr-defined]


def guest(name: str, **fields: object) -> VMSpec:
    """A small guest that boots nothing (no disk: it sits in the BIOS), as LAB.md verified."""
    base: dict[str, object] = {
        "name": name, "uuid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)), "memory": Memory(128),
        "domain_type": domain_type(), "graphics": (Graphics(),), "serial": True, "balloon": True,
    }
    return VMSpec(**(base | fields)).check()  # type: ignore[arg-type]


def test_real_host_facts(cluster: Cluster) -> None:
    facts = cluster.host("lab1").facts["virt"]
    assert {"kvm", "qemu"} & set(facts["domain_types"])
    assert "pc" in facts["machines"] and any("q35" in m for m in facts["machines"])
    assert facts["threads"] >= 1 and facts["memory_mib"] > 0


def test_lifecycle_start_stats_graceful_stop_then_destroy(cluster: Cluster) -> None:
    spec = guest("life", rng=True, watchdog=Watchdog(), guest_agent=True,
                 nics=(Nic("user", mac="52:54:00:10:00:01"),))
    workload = vm_workload(spec)
    placement = cluster.submit(workload)
    driver = cluster.plugins.driver("vm")
    host = cluster.host(placement.host)
    assert driver.inspect(workload, host) is WorkloadState.RUNNING
    stats = driver.stats(workload, host)  # type: ignore[attr-defined]
    assert stats["state"] == libvirt.VIR_DOMAIN_RUNNING and stats["memory_mib"] == 128
    assert driver.live_spec(workload, host).nics[0].mac == "52:54:00:10:00:01"  # type: ignore[attr-defined]
    # No guest OS answers ACPI: the graceful stop waits shutdown_timeout, then destroys.
    cluster.stop("life")
    assert driver.inspect(workload, host) is WorkloadState.ABSENT
    assert "life" not in cluster.placements()
    cluster.start("life")
    cluster.stop("life", force=True)
    assert driver.inspect(workload, host) is WorkloadState.ABSENT


def test_hotplug_vcpus_memory_disk_and_nic_reach_the_store_only_when_libvirt_confirms(
        cluster: Cluster, tmp_path: Path) -> None:
    spec = guest("plug", vcpus=1, max_vcpus=2, numa=(NumaCell("0-1", 128),),
                 memory=Memory(128, maximum=512, slots=2))
    cluster.submit(vm_workload(spec))
    stored = lambda: vm_spec(cluster.workloads()["plug"])  # noqa: E731

    hotplug.set_vcpus(cluster, "plug", 2)
    assert stored().vcpus == 2 and cluster.workloads()["plug"].requests.cpu == 2
    with pytest.raises(Exception, match="max_vcpus"):
        hotplug.set_vcpus(cluster, "plug", 3)

    hotplug.add_memory(cluster, "plug", 128)
    assert stored().memory.size == 256 and cluster.workloads()["plug"].requests.memory == 256
    assert cluster.plugins.driver("vm").stats(cluster.workloads()["plug"],  # type: ignore[attr-defined]
                                              cluster.host("lab1"))["max_memory_mib"] == 256
    with pytest.raises(Exception, match="maximum"):
        hotplug.add_memory(cluster, "plug", 1024)

    image = tmp_path / "data.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
    hotplug.attach_disk(cluster, "plug", Disk("sdb", str(image), bus="scsi", format="qcow2"))
    assert [d.target for d in stored().disks] == ["sdb"]
    hotplug.detach_disk(cluster, "plug", "sdb")  # SCSI unplug needs no guest
    assert stored().disks == ()

    hotplug.attach_nic(cluster, "plug", Nic("user", mac="52:54:00:10:00:09"))
    assert [n.mac for n in stored().nics] == ["52:54:00:10:00:09"]
    # A PCI NIC leaves only when the guest agrees; there is no guest OS here, so libvirt
    # keeps it and the store must keep it too.
    before = cluster.workloads()["plug"]
    with pytest.raises(VirtError):
        hotplug.detach_nic(cluster, "plug", "52:54:00:10:00:09")
    assert cluster.workloads()["plug"] == before

    events = [e.kind for e in cluster.query_events(subject="workload/plug")]
    assert events.count("updated") == 5


def test_hotplug_failure_leaves_the_store_unchanged(cluster: Cluster) -> None:
    cluster.submit(vm_workload(guest("fail")))
    before = cluster.workloads()["fail"]
    with pytest.raises(VirtError):
        hotplug.attach_disk(cluster, "fail", Disk("vdb", "/nonexistent/disk.img"))
    assert cluster.workloads()["fail"] == before


def test_cluster_cpu_baseline_is_usable_and_starts(cluster: Cluster) -> None:
    from flavors.virt.hostfacts import cluster_baseline

    facts = cluster.host("lab1").facts["virt"]
    driver = cluster.plugins.driver("vm")
    cpu = cluster_baseline(driver.connect(cluster.host("lab1")), [facts["cpu_xml"]],  # type: ignore[attr-defined]
                           domain_type())
    assert cpu.mode == "custom" and cpu.features
    assert cpu.model in facts["cpu_models"] or cpu.model == facts["cpu_model"]
    placement = cluster.submit(vm_workload(guest("baseline", cpu=cpu)))
    assert driver.inspect(cluster.workloads()["baseline"], cluster.host(placement.host)) is WorkloadState.RUNNING


def test_the_readme_demo_runs_on_real_libvirt_hosts(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``./dev demo``: real guests cloned from a template boot, containers start beside
    them, a VM moves while writing, an HA VM and container survive their host's power cut,
    a host is drained of both kinds: store = libvirt + podman throughout."""
    import io

    from flavors.virt.demo import main

    out = io.StringIO()
    assert main(out, cache=tmp_path_factory.getbasetemp().parent / "clustercore-guest-cache") == 0
    text = out.getvalue()
    assert "MISMATCH" not in text and "BROKEN" not in text
    assert "disk mounted" in text and "pages lost by the move: 0" in text
    assert "Fencing -> Down" in text and "restarted" in text
    assert "PreparingForMaintenance -> Maintenance" in text and "6 VMs and containers running, 0 mismatches" in text
    assert "podman runs ct-" in text and "containers counted: ct-1" in text
    assert text.count("no gap, no duplicate") >= 5


def test_cloud_init_seed_is_built_and_attached(cluster: Cluster, tmp_path: Path) -> None:
    from flavors.virt.cloudinit import read_seed
    from flavors.virt.spec import CloudInit

    seed = tmp_path / "seeds" / "ci.iso"
    ci = CloudInit(str(seed), "#cloud-config\npassword: demo\n", "instance-id: ci-1\n", "version: 2\n")
    placement = cluster.submit(vm_workload(guest("ci", cloud_init=ci)))
    assert read_seed(seed) == {"user-data": ci.user_data, "meta-data": ci.meta_data,
                               "network-config": "version: 2\n", "label": "cidata"}
    live = cluster.plugins.driver("vm").live_spec(cluster.workloads()["ci"],  # type: ignore[attr-defined]
                                                  cluster.host(placement.host))
    assert live.cloud_init == ci


def test_host_device_hotplug_libvirt_refuses_leaves_the_store(cluster: Cluster) -> None:
    """No passthrough hardware here: a USB device that is not plugged is refused by libvirt."""
    from flavors.virt.spec import HostDevice

    cluster.submit(vm_workload(guest("usb")))
    before = cluster.workloads()["usb"]
    with pytest.raises(VirtError, match="attach hostdev"):
        hotplug.attach_hostdev(cluster, "usb", HostDevice("usb", vendor="dead", product="beef"))
    assert cluster.workloads()["usb"] == before
