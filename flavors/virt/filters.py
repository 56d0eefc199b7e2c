"""VM-aware scheduler plugins, on top of the generic ones.

The generic filters already count vCPUs, memory (with the cluster's overcommit ratios),
hugepages (``hugepages-2M``/``hugepages-1G`` pages) and devices asked for by name
(``pci/10de:1eb8``...): the flavor offers them as extended resources of the host. What
only a VM-aware plugin can judge is here, read from the host's facts
(``Host.facts["virt"]``, see :mod:`flavors.virt.hostfacts`) and from the specs of the VMs
already on the host. Each is a per-host plugin (``check``/``weigh`` on a ``HostView``).

Hosts whose facts do not say (no facts yet, or a driver that does not report machine
types or CPU models, such as libvirt's test driver) are not refused for what is unknown;
only what is known to be missing refuses a host.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from clustercore.model import Workload
from clustercore.scheduling import ForFlavor, ForFlavorWeigher, HostView
from flavors.virt.spec import KIND, VMSpec, cpuset
from flavors.virt.uri import claims

FACTS = "virt"


def facts_of(view: HostView) -> Mapping[str, Any]:
    facts = view.host.facts.get(FACTS)
    return facts if isinstance(facts, Mapping) else {}


@functools.lru_cache(maxsize=8192)
def _spec(workload: Workload) -> VMSpec | None:
    """The VM spec of a ``vm`` workload (parsed once per distinct workload), else None."""
    if workload.flavor != KIND:
        return None
    return VMSpec.from_dict(workload.spec.thaw(), "spec")


def _others(view: HostView, workload: Workload) -> Iterator[VMSpec]:
    for other in view.workloads:
        if other.name != workload.name and (spec := _spec(other)) is not None:
            yield spec


@attrs.frozen
class LibvirtHostFilter:
    """VMs run only on hosts whose address is the virt flavor's (a libvirt URI, or empty as
    in tests): never on another flavor's host (a podman API) in a mixed cluster."""

    name: str = "vm-libvirt-host"

    def check(self, workload: Workload, view: HostView) -> str | None:
        return None if claims(view.host.address) else "not a libvirt host"


@attrs.frozen
class VcpuRatioFilter:
    """At most ``ratio`` vCPUs (the VMs' maxima, as hotplug may use them) per hardware thread."""

    ratio: float = 4.0
    name: str = "vm-vcpu-ratio"

    def check(self, workload: Workload, view: HostView) -> str | None:
        spec = _spec(workload)
        threads = int(facts_of(view).get("threads", 0) or 0)
        if spec is None or not threads:
            return None
        total = spec.vcpu_max + sum(o.vcpu_max for o in _others(view, workload))
        if total > threads * self.ratio:
            return f"vCPU overcommit: {total} vCPUs on {threads} threads exceeds {self.ratio:g} per thread"
        return None


@attrs.frozen
class GuaranteedMemoryFilter:
    """The guaranteed memory of every VM fits the host's physical memory minus ``reserve``
    MiB for the host itself (the rest of a VM's memory may be overcommitted)."""

    reserve: int = 1024
    name: str = "vm-guaranteed-memory"

    def check(self, workload: Workload, view: HostView) -> str | None:
        spec = _spec(workload)
        physical = int(facts_of(view).get("memory_mib", 0) or 0)
        if spec is None or not physical:
            return None

        def guaranteed(s: VMSpec) -> int:
            return s.memory.size if s.memory.guaranteed is None else s.memory.guaranteed

        total = guaranteed(spec) + sum(guaranteed(o) for o in _others(view, workload))
        if total > physical - self.reserve:
            return f"guaranteed memory: {total} MiB exceeds {physical - self.reserve} MiB"
        return None


@attrs.frozen
class NumaFilter:
    """Guest NUMA cells bound to host nodes fit those nodes (memory, and hugepages when the
    VM uses them), and pinned vCPUs name host CPUs that exist."""

    name: str = "vm-numa"

    def check(self, workload: Workload, view: HostView) -> str | None:
        spec = _spec(workload)
        if spec is None:
            return None
        cells = {int(c["id"]): c for c in facts_of(view).get("numa", ())}
        if not cells:
            return None
        cpus = {cpu for c in cells.values() for cpu in c.get("cpus", ())}
        for pin in spec.pins:
            missing = cpuset(pin.cpuset) - cpus
            if missing:
                return f"vCPU {pin.vcpu} pinned to missing host CPUs {sorted(missing)}"
        used: dict[int, int] = {}
        for other in _others(view, workload):
            for cell in other.numa:
                if cell.host_node is not None:
                    used[cell.host_node] = used.get(cell.host_node, 0) + cell.memory
        for i, cell in enumerate(spec.numa):
            if cell.host_node is None:
                continue
            node = cells.get(cell.host_node)
            if node is None:
                return f"guest NUMA cell {i} bound to missing host node {cell.host_node}"
            if spec.memory.hugepages:
                pages = int((node.get("hugepages") or {}).get(str(spec.memory.hugepages), 0))
                if cell.memory * 1024 > pages * spec.memory.hugepages:
                    return f"host node {cell.host_node}: not enough {spec.memory.hugepages} KiB pages for cell {i}"
            free = int(node.get("memory_mib", 0)) - used.get(cell.host_node, 0)
            if cell.memory > free:
                return f"host node {cell.host_node}: {free} MiB free, guest cell {i} needs {cell.memory} MiB"
            used[cell.host_node] = used.get(cell.host_node, 0) + cell.memory
        return None


@attrs.frozen
class CpuModelFilter:
    """A ``custom`` CPU model must be usable on the host (libvirt's domain capabilities) or
    be the host's own model (what a cluster baseline is made of);
    ``host-passthrough`` needs the same host CPU model as the VM was started with, which the
    scheduler does not know, so such VMs are only placed where they start."""

    name: str = "vm-cpu-model"

    def check(self, workload: Workload, view: HostView) -> str | None:
        spec = _spec(workload)
        facts = facts_of(view)
        models = facts.get("cpu_models")
        if spec is None or spec.cpu.mode != "custom" or not models:
            return None
        if spec.cpu.model not in models and spec.cpu.model != facts.get("cpu_model"):
            return f"CPU model {spec.cpu.model} is not usable on this host"
        return None


@attrs.frozen
class MachineTypeFilter:
    """The VM's machine type (``pc``, ``q35``, ``pc-q35-7.2``...) exists on the host, and
    UEFI firmware is there when the VM boots with it."""

    name: str = "vm-machine-type"

    def check(self, workload: Workload, view: HostView) -> str | None:
        spec = _spec(workload)
        facts = facts_of(view)
        machines = facts.get("machines")
        if spec is None:
            return None
        if machines and spec.machine not in machines:
            return f"machine type {spec.machine} is not available"
        if spec.firmware.kind == "uefi" and facts.get("cpu_models") and not facts.get("uefi"):
            return "no UEFI firmware on this host"
        return None


@attrs.frozen
class DeviceAddressFilter:
    """Devices asked for by address exist on the host and no other VM there holds them
    (devices asked for by name are counted as extended resources instead)."""

    name: str = "vm-device-address"

    def check(self, workload: Workload, view: HostView) -> str | None:
        spec = _spec(workload)
        if spec is None:
            return None
        wanted = [d.address for d in spec.hostdevs if d.kind == "pci" and d.address and not d.resource]
        wanted += [n.source for n in spec.nics if n.kind == "hostdev" and n.source and not n.resource]
        if not wanted:
            return None
        known = {d["address"] for d in facts_of(view).get("pci", ())}
        held = {a for o in _others(view, workload) for a in
                [d.address for d in o.hostdevs if d.kind == "pci"] + [n.source for n in o.nics if n.kind == "hostdev"]}
        for address in wanted:
            if address not in known:
                return f"no PCI device {address}"
            if address in held:
                return f"PCI device {address} is held by another VM"
        return None


@attrs.frozen
class VcpuLoadWeigher:
    """Prefer hosts with fewer vCPUs per hardware thread."""

    multiplier: float = 1.0
    name: str = "vm-vcpu-load"

    def weigh(self, workload: Workload, view: HostView) -> float:
        threads = int(facts_of(view).get("threads", 0) or 0)
        if not threads:
            return 0.0
        return -sum(o.vcpu_max for o in _others(view, workload)) / threads


def filters(vcpu_ratio: float = 4.0, host_reserve: int = 1024) -> list[ForFlavor]:
    """The flavor's filters, each skipped at no cost for workloads that are not VMs."""
    rules = (LibvirtHostFilter(), VcpuRatioFilter(vcpu_ratio), GuaranteedMemoryFilter(host_reserve), NumaFilter(),
             CpuModelFilter(), MachineTypeFilter(), DeviceAddressFilter())
    return [ForFlavor(KIND, f) for f in rules]


def weighers() -> list[ForFlavorWeigher]:
    return [ForFlavorWeigher(KIND, VcpuLoadWeigher())]
