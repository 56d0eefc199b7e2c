"""Changing a running VM: disks, NICs and host devices in and out, vCPUs and memory up.

Every operation follows one order, so the store never claims what the host does not run:

1. read the workload and its placement; build the changed spec and check it (a bad
   request fails here, nothing touched);
2. ask libvirt to change the live domain and its persistent definition;
3. read the live domain back and confirm the change is there;
4. only then store the new spec and requests (compare-and-swap, with an event).

A libvirt failure raises :class:`~flavors.virt.driver.VirtError` and leaves the store as it
was. Operations take the :class:`~clustercore.cluster.Cluster` (its store, its driver).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import libvirt
from lxml import etree

from clustercore.cluster import Cluster
from clustercore.errors import ValidationError
from clustercore.model import Host, Workload
from flavors.virt import devices, domxml
from flavors.virt.driver import LibvirtDriver, VirtError
from flavors.virt.paths import check_paths
from flavors.virt.spec import KIND, Dimm, Disk, HostDevice, Nic, VMSpec
from flavors.virt.workload import vm_spec

LIVE_AND_CONFIG = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG


def _context(cluster: Cluster, name: str) -> tuple[Workload, VMSpec, Host, LibvirtDriver, libvirt.virDomain]:
    workload = cluster.workloads()[name]
    spec = vm_spec(workload)
    placement = cluster.placements().get(name)
    if placement is None:
        raise VirtError("hotplug", name, "-", "not running (hotplug changes running VMs; edit the spec instead)")
    host = cluster.host(placement.host)
    driver = cluster.plugins.driver(KIND)
    if not isinstance(driver, LibvirtDriver):
        raise VirtError("hotplug", name, host.name, f"the vm driver is {type(driver).__name__}, not libvirt's")
    dom = driver.domain(spec, host)
    if dom is None or not dom.isActive():
        raise VirtError("hotplug", name, host.name, "libvirt does not run it")
    return workload, spec, host, driver, dom


def _commit(cluster: Cluster, workload: Workload, new: VMSpec, what: str, confirmed: Callable[[VMSpec], bool],
            driver: LibvirtDriver, host: Host) -> VMSpec:
    live = driver.live_spec(workload, host)
    if not confirmed(live):
        raise VirtError("hotplug", new.name, host.name, f"libvirt accepted {what} but the live domain does not show it")

    def change(current: Workload) -> Workload:
        return attrs.evolve(current, spec=new.to_dict(), requests=new.requests())

    cluster.update_workload(new.name, change, what)
    return new


def _apply(op: str, spec: VMSpec, host: Host, call: Callable[[], object]) -> None:
    try:
        call()
    except libvirt.libvirtError as exc:
        raise VirtError(op, spec.name, host.name, str(exc)) from exc


def attach_disk(cluster: Cluster, name: str, disk: Disk) -> VMSpec:
    workload, spec, host, driver, dom = _context(cluster, name)
    new = attrs.evolve(spec, disks=(*spec.disks, disk)).check()
    check_paths(new, cluster.config.storage_roots)  # a hotplugged disk lies below a storage root too
    _apply("attach disk", spec, host, lambda: dom.attachDeviceFlags(domxml.disk_element(disk), LIVE_AND_CONFIG))
    return _commit(cluster, workload, new, f"attached disk {disk.target}",
                   lambda live: any(d.target == disk.target for d in live.disks), driver, host)


def detach_disk(cluster: Cluster, name: str, target: str) -> VMSpec:
    workload, spec, host, driver, dom = _context(cluster, name)
    disk = next((d for d in spec.disks if d.target == target), None)
    if disk is None:
        raise ValidationError("vm", "disks", f"{name} has no disk {target}", [d.target for d in spec.disks])
    new = attrs.evolve(spec, disks=tuple(d for d in spec.disks if d.target != target)).check()
    _apply("detach disk", spec, host, lambda: dom.detachDeviceFlags(domxml.disk_element(disk), LIVE_AND_CONFIG))
    return _commit(cluster, workload, new, f"detached disk {target}",
                   lambda live: all(d.target != target for d in live.disks), driver, host)


def attach_nic(cluster: Cluster, name: str, nic: Nic) -> VMSpec:
    workload, spec, host, driver, dom = _context(cluster, name)
    if nic.mac is None:
        raise ValidationError("vm", "nic.mac", "give hotplugged NICs a MAC (it identifies them for detach)", None)
    candidate = attrs.evolve(spec, nics=(*spec.nics, nic)).check()
    with driver.host_lock(host):
        bound = devices.allocate(candidate, host.name, driver.facts(host), driver.specs_on(host, but=spec.uuid),
                                 driver.passthrough)
        nic = bound.nics[-1]
        _apply("attach nic", spec, host, lambda: dom.attachDeviceFlags(domxml.nic_element(nic), LIVE_AND_CONFIG))
    new = attrs.evolve(spec, nics=(*spec.nics, nic))
    return _commit(cluster, workload, new, f"attached NIC {nic.mac}",
                   lambda live: any(n.mac == nic.mac for n in live.nics), driver, host)


def detach_nic(cluster: Cluster, name: str, mac: str) -> VMSpec:
    workload, spec, host, driver, dom = _context(cluster, name)
    nic = next((n for n in spec.nics if n.mac == mac), None)
    if nic is None:
        raise ValidationError("vm", "nics", f"{name} has no NIC {mac}", [n.mac for n in spec.nics])
    new = attrs.evolve(spec, nics=tuple(n for n in spec.nics if n.mac != mac)).check()
    _apply("detach nic", spec, host, lambda: dom.detachDeviceFlags(domxml.nic_element(nic), LIVE_AND_CONFIG))
    return _commit(cluster, workload, new, f"detached NIC {mac}", lambda live: all(n.mac != mac for n in live.nics),
                   driver, host)


def attach_hostdev(cluster: Cluster, name: str, device: HostDevice) -> VMSpec:
    """Pass a host device through (by address, or any free one of a resource name)."""
    workload, spec, host, driver, dom = _context(cluster, name)
    candidate = attrs.evolve(spec, hostdevs=(*spec.hostdevs, device)).check()
    with driver.host_lock(host):
        bound = devices.allocate(candidate, host.name, driver.facts(host), driver.specs_on(host, but=spec.uuid),
                                 driver.passthrough)
        device = bound.hostdevs[-1]
        xml = etree.tostring(domxml.hostdev_element(device), encoding="unicode")
        _apply("attach hostdev", spec, host, lambda: dom.attachDeviceFlags(xml, LIVE_AND_CONFIG))
    new = attrs.evolve(spec, hostdevs=(*spec.hostdevs, device))
    return _commit(cluster, workload, new, f"attached {device.kind} device {device.address or device.resource}",
                   lambda live: len(live.hostdevs) == len(new.hostdevs), driver, host)


def detach_hostdev(cluster: Cluster, name: str, index: int) -> VMSpec:
    workload, spec, host, driver, dom = _context(cluster, name)
    if not 0 <= index < len(spec.hostdevs):
        raise ValidationError("vm", "hostdevs", f"{name} has no host device {index}", len(spec.hostdevs))
    device = spec.hostdevs[index]
    new = attrs.evolve(spec, hostdevs=spec.hostdevs[:index] + spec.hostdevs[index + 1:]).check()
    xml = etree.tostring(domxml.hostdev_element(device), encoding="unicode")
    _apply("detach hostdev", spec, host, lambda: dom.detachDeviceFlags(xml, LIVE_AND_CONFIG))
    return _commit(cluster, workload, new, f"detached {device.kind} device {device.address}",
                   lambda live: len(live.hostdevs) == len(new.hostdevs), driver, host)


def set_vcpus(cluster: Cluster, name: str, count: int) -> VMSpec:
    """Plug vCPUs in (or out) up to the VM's ``max_vcpus``."""
    workload, spec, host, driver, dom = _context(cluster, name)
    if not 1 <= count <= spec.vcpu_max:
        raise ValidationError("vm", "vcpus", f"must be within 1..{spec.vcpu_max} (max_vcpus)", count)
    new = attrs.evolve(spec, vcpus=count, max_vcpus=spec.vcpu_max).check()
    _apply("set vcpus", spec, host, lambda: dom.setVcpusFlags(count, LIVE_AND_CONFIG))
    return _commit(cluster, workload, new, f"{count} vCPUs", lambda _live: dom.vcpusFlags(
        libvirt.VIR_DOMAIN_AFFECT_LIVE) == count, driver, host)


def add_memory(cluster: Cluster, name: str, size: int, node: int = 0) -> VMSpec:
    """Plug a DIMM of ``size`` MiB into guest NUMA cell ``node`` (within ``memory.maximum``
    and ``memory.slots``)."""
    workload, spec, host, driver, dom = _context(cluster, name)
    mem = spec.memory
    if mem.maximum is None or mem.size + size > mem.maximum:
        raise ValidationError("vm", "memory.maximum", f"{mem.size} + {size} MiB exceeds the maximum", mem.maximum)
    dimm = Dimm(size, node)
    new = attrs.evolve(spec, memory=attrs.evolve(mem, size=mem.size + size, dimms=(*mem.dimms, dimm))).check()
    xml = etree.tostring(domxml.dimm_element(dimm), encoding="unicode")
    _apply("add memory", spec, host, lambda: dom.attachDeviceFlags(xml, LIVE_AND_CONFIG))
    return _commit(cluster, workload, new, f"+{size} MiB memory", lambda live: live.memory.size == new.memory.size,
                   driver, host)
