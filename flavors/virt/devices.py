"""Choosing concrete host devices for a VM when it is bound to a host.

A VM asks for devices by address or by resource name (``pci/10de:1eb8``,
``mdev/nvidia-222``, ``usb/046d:c52b``, an SR-IOV VF as ``pci/8086:154c``). At bind time
:func:`allocate` turns every name into a free device of the host and returns the spec
with addresses filled in. "Free" is judged against what the other VMs on the host hold
(:func:`in_use`, read from their bound specs): an IOMMU group goes to one VM whole, and
a GPU split into mediated devices is not also passed through whole. Devices on the NUMA
node(s) the VM's memory is bound to are preferred. Releasing is implicit: a stopped VM's
domain is undefined, so its devices are no longer in use.

Pure functions of host facts and specs; the driver serialises binds per host.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from clustercore.errors import ClusterError
from flavors.virt.hostfacts import DEFAULT_PASSTHROUGH, passthrough_allowed
from flavors.virt.spec import HostDevice, VMSpec


class DeviceUnavailable(ClusterError):
    """No free device of a kind on a host."""

    def __init__(self, vm: str, host: str, wanted: str, reason: str) -> None:
        self.vm, self.host, self.wanted, self.reason = vm, host, wanted, reason
        super().__init__(f"{vm} on {host}: no free {wanted} ({reason})")


@attrs.frozen
class InUse:
    """What the VMs on a host hold: PCI addresses (whole devices and VFs), IOMMU groups,
    parents of mediated devices with the count per type, USB vendor:product pairs."""

    pci: frozenset[str] = frozenset()
    groups: frozenset[int] = frozenset()
    mdev_parents: frozenset[str] = frozenset()
    mdevs: Mapping[str, int] = attrs.field(factory=dict)
    usb: Mapping[str, int] = attrs.field(factory=dict)


def _group_of(facts: Mapping[str, Any]) -> dict[str, int | None]:
    return {d["address"]: d.get("iommu_group") for d in facts.get("pci", ())}


def in_use(facts: Mapping[str, Any], specs: Iterable[VMSpec]) -> InUse:
    groups = _group_of(facts)
    pci: set[str] = set()
    mdevs: dict[str, int] = {}
    parents: set[str] = set()
    usb: dict[str, int] = {}
    for spec in specs:
        for dev in spec.hostdevs:
            if dev.kind == "pci" and dev.address:
                pci.add(dev.address)
            elif dev.kind == "mdev" and dev.resource:
                kind = dev.resource.split("/", 1)[1]
                mdevs[kind] = mdevs.get(kind, 0) + 1
                parents.update(_parents_of(facts, kind))
            elif dev.kind == "usb":
                key = dev.resource.split("/")[1] if dev.resource else f"{dev.vendor}:{dev.product}"
                usb[key] = usb.get(key, 0) + 1
        pci.update(str(n.source) for n in spec.nics if n.kind == "hostdev" and n.source)
    used_groups = frozenset(g for a in pci if (g := groups.get(a)) is not None)
    return InUse(frozenset(pci), used_groups, frozenset(parents), mdevs, usb)


def _parents_of(facts: Mapping[str, Any], kind: str) -> list[str]:
    return [d["address"] for d in facts.get("pci", ()) if kind in (d.get("mdev_types") or {})]


def _numa_nodes(spec: VMSpec) -> set[int]:
    return {c.host_node for c in spec.numa if c.host_node is not None}


def _pick_pci(spec: VMSpec, host: str, facts: Mapping[str, Any], used: InUse, taken: set[str],
              taken_groups: set[int], resource: str, allow: Sequence[str]) -> str:
    vendor, product = resource.split("/")[1].split(":")
    near = _numa_nodes(spec)
    candidates = []
    for dev in facts.get("pci", ()):
        if (dev["vendor"], dev["product"]) != (vendor, product) or not passthrough_allowed(dev, allow):
            continue
        group = dev.get("iommu_group")
        if dev["address"] in used.pci or dev["address"] in taken or dev["address"] in used.mdev_parents:
            continue
        if group is not None and (group in used.groups or group in taken_groups):
            continue
        far = bool(near) and dev.get("numa_node") not in near
        candidates.append((far, dev["address"], group))
    if not candidates:
        raise DeviceUnavailable(spec.name, host, resource, "every such device is in use or absent")
    _, address, group = min(candidates)
    taken.add(address)
    if group is not None:
        taken_groups.add(group)
    return str(address)


def allocate(spec: VMSpec, host: str, facts: Mapping[str, Any], others: Iterable[VMSpec],
             allow: Sequence[str] = DEFAULT_PASSTHROUGH) -> VMSpec:
    """``spec`` with every device asked for by name bound to a free device of ``host``.
    Devices given by address are checked to exist and be free. Raises DeviceUnavailable."""
    used = in_use(facts, others)
    known = {d["address"] for d in facts.get("pci", ())}
    taken: set[str] = set()
    taken_groups: set[int] = set()
    groups = _group_of(facts)
    for address in [d.address for d in spec.hostdevs if d.kind == "pci" and d.address] + [
            str(n.source) for n in spec.nics if n.kind == "hostdev" and n.source]:
        if address not in known:
            raise DeviceUnavailable(spec.name, host, address, "the host has no such PCI device")
        group = groups.get(address)
        if address in used.pci or (group is not None and group in used.groups):
            raise DeviceUnavailable(spec.name, host, address, "another VM holds it or its IOMMU group")
        taken.add(address)
        if group is not None:
            taken_groups.add(group)
    hostdevs = []
    mdev_count = dict(used.mdevs)
    for dev in spec.hostdevs:
        if dev.kind == "pci" and dev.address is None and dev.resource:
            dev = attrs.evolve(dev, address=_pick_pci(spec, host, facts, used, taken, taken_groups, dev.resource,
                                                      allow))
        elif dev.kind == "mdev" and dev.address is None and dev.resource:
            kind = dev.resource.split("/", 1)[1]
            available = sum(int((d.get("mdev_types") or {}).get(kind, 0)) for d in facts.get("pci", ())
                            if d["address"] not in used.pci and d["address"] not in taken)
            if mdev_count.get(kind, 0) >= available:
                raise DeviceUnavailable(spec.name, host, dev.resource, f"{available} instance(s), all in use")
            mdev_count[kind] = mdev_count.get(kind, 0) + 1
            dev = attrs.evolve(dev, address=str(uuidlib.uuid4()))
        elif dev.kind == "usb" and dev.resource:
            key = dev.resource.split("/")[1]
            have = sum(1 for u in facts.get("usb", ()) if f"{u['vendor']}:{u['product']}" == key)
            if used.usb.get(key, 0) >= have:
                raise DeviceUnavailable(spec.name, host, dev.resource, f"{have} on the host, all in use")
        hostdevs.append(dev)
    nics = []
    for nic in spec.nics:
        if nic.kind == "hostdev" and nic.source is None and nic.resource:
            nic = attrs.evolve(nic, source=_pick_pci(spec, host, facts, used, taken, taken_groups, nic.resource,
                                                     allow))
        nics.append(nic)
    return attrs.evolve(spec, hostdevs=tuple(hostdevs), nics=tuple(nics))


def unbind(spec: VMSpec) -> VMSpec:
    """``spec`` with devices asked for by name released (addresses forgotten), ready to be
    bound again on another host."""
    hostdevs = tuple(HostDevice(d.kind, None, d.resource) if d.resource and d.kind != "usb" else d
                     for d in spec.hostdevs)
    nics = tuple(attrs.evolve(n, source=None) if n.resource else n for n in spec.nics)
    return attrs.evolve(spec, hostdevs=hostdevs, nics=nics)


