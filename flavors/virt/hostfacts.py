"""What a libvirt host offers, read from libvirt itself: capabilities (CPU, NUMA cells,
hugepage pools, IOMMU), domain capabilities (machine types, CPU models usable here, the
host-model CPU) and node devices (PCI with IOMMU group, NUMA node, SR-IOV functions and
mdev types; USB).

The parsers are pure functions of XML text; :func:`discover` asks a connection for the
documents. Facts are JSON-like (they are stored in ``Host.facts["vm"]``); devices that
may be passed through become extended resources (:func:`extended_resources`) so the
generic scheduler counts them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lxml import etree

from flavors.virt.spec import Cpu, CpuFeature

#: Which PCI devices may be passed through, by default: GPUs and other display
#: controllers (class 03), processing accelerators (class 12) and SR-IOV virtual functions.
DEFAULT_PASSTHROUGH = ("class:03*", "class:12*", "vf")


def _root(xml: str) -> etree._Element:
    return etree.fromstring(xml.encode())


def _cpus(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        out.extend(range(int(low), int(high or low) + 1))
    return out


def parse_capabilities(xml: str) -> dict[str, Any]:
    root = _root(xml)
    host = root.find("host")
    cpu = host.find("cpu") if host is not None else None
    facts: dict[str, Any] = {
        "arch": cpu.findtext("arch", "") if cpu is not None else "",
        "cpu_model": cpu.findtext("model", "") if cpu is not None else "",
        "cpu_vendor": cpu.findtext("vendor", "") if cpu is not None else "",
        "cpu_features": sorted(str(f.get("name")) for f in cpu.findall("feature")) if cpu is not None else [],
        "cpu_xml": etree.tostring(cpu, encoding="unicode") if cpu is not None else "",
        "iommu": host is not None and host.find("iommu") is not None and host.find("iommu").get("support") == "yes",  # type: ignore[union-attr]
    }
    cells: list[dict[str, Any]] = []
    for cell in root.findall("host/topology/cells/cell"):
        memory = cell.find("memory")
        pages = {str(p.get("size")): int(p.text or "0") for p in cell.findall("pages")
                 if p.get("size") not in ("4", None)}
        cells.append({"id": int(cell.get("id", "0")),
                      "memory_mib": int(memory.text or "0") // 1024 if memory is not None else 0,
                      "cpus": sorted(int(c.get("id", "0")) for c in cell.findall("cpus/cpu")),
                      "hugepages": pages})
    facts["numa"] = cells
    facts["threads"] = sum(len(c["cpus"]) for c in cells)
    guests: dict[str, set[str]] = {}
    machines: set[str] = set()
    for guest in root.findall("guest"):
        if guest.findtext("os_type") != "hvm":
            continue
        arch = guest.find("arch")
        if arch is None:
            continue
        guests.setdefault(str(arch.get("name")), set()).update(str(d.get("type")) for d in arch.findall("domain"))
        machines.update((m.text or "") for m in arch.findall("machine"))
        machines.update(str(m.get("canonical")) for m in arch.findall("machine") if m.get("canonical"))
    facts["domain_types"] = sorted(guests.get(facts["arch"], set()) | guests.get("x86_64", set()))
    facts["machines"] = sorted(m for m in machines if m)
    return facts


def parse_domain_capabilities(xml: str) -> dict[str, Any]:
    root = _root(xml)
    custom = root.find("cpu/mode[@name='custom']")
    host_model = root.find("cpu/mode[@name='host-model']/model")
    machine = root.findtext("machine", "")
    return {
        "cpu_models": sorted((m.text or "") for m in custom.findall("model") if m.get("usable") == "yes")
        if custom is not None else [],
        "host_model": host_model.text if host_model is not None else None,
        "machines": [machine] if machine else [],
        "uefi": bool(root.findall("os/loader/value")) or "efi" in [
            (v.text or "") for v in root.findall("os/enum[@name='firmware']/value")],
    }


def _pci_address(cap: etree._Element) -> str:
    return (f"{int(cap.findtext('domain', '0')):04x}:{int(cap.findtext('bus', '0')):02x}:"
            f"{int(cap.findtext('slot', '0')):02x}.{int(cap.findtext('function', '0')):x}")


def _addr(node: etree._Element) -> str:
    parts = [int(node.get(k, "0"), 16) for k in ("domain", "bus", "slot", "function")]
    return f"{parts[0]:04x}:{parts[1]:02x}:{parts[2]:02x}.{parts[3]:x}"


def parse_node_device(xml: str) -> dict[str, Any] | None:
    """One node device: a PCI device, a USB device, or None for anything else."""
    root = _root(xml)
    cap = root.find("capability")
    if cap is None:
        return None
    kind = cap.get("type")
    if kind == "pci":
        group = cap.find("iommuGroup")
        numa = cap.find("numa")
        vfs = [_addr(a) for a in cap.findall("capability[@type='virt_functions']/address")]
        mdev = {str(t.get("id")): int(t.findtext("availableInstances", "0"))
                for t in cap.findall("capability[@type='mdev_types']/type")}
        return {
            "kind": "pci", "name": root.findtext("name", ""), "address": _pci_address(cap),
            "vendor": f"{int(str(cap.find('vendor').get('id')), 16):04x}",  # type: ignore[union-attr]
            "product": f"{int(str(cap.find('product').get('id')), 16):04x}",  # type: ignore[union-attr]
            "class": cap.findtext("class", "0x000000").removeprefix("0x"),
            "iommu_group": int(group.get("number", "-1")) if group is not None else None,
            "numa_node": int(numa.get("node", "-1")) if numa is not None else None,
            "driver": root.findtext("driver/name"),
            "vfs": vfs, "vf": cap.find("capability[@type='phys_function']") is not None,
            "mdev_types": mdev,
        }
    if kind == "usb_device":
        return {"kind": "usb", "name": root.findtext("name", ""),
                "vendor": f"{int(str(cap.find('vendor').get('id')), 16):04x}",  # type: ignore[union-attr]
                "product": f"{int(str(cap.find('product').get('id')), 16):04x}",  # type: ignore[union-attr]
                "bus": int(cap.findtext("bus", "0")), "device": int(cap.findtext("device", "0"))}
    return None


def passthrough_allowed(device: Mapping[str, Any], allow: Sequence[str] = DEFAULT_PASSTHROUGH) -> bool:
    """Whether a PCI device may be given to a VM: ``allow`` holds ``vvvv:pppp`` patterns
    (``10de:*``), ``class:XX*`` class patterns and ``vf`` (any SR-IOV VF)."""
    ident = f"{device['vendor']}:{device['product']}"
    for rule in allow:
        if rule == "vf" and device.get("vf"):
            return True
        if rule.startswith("class:") and fnmatch.fnmatch(str(device.get("class", "")), rule[6:]):
            return True
        if fnmatch.fnmatch(ident, rule):
            return True
    return False


def assignable(facts: Mapping[str, Any], allow: Sequence[str] = DEFAULT_PASSTHROUGH) -> list[dict[str, Any]]:
    """The PCI devices a VM may get, at most one per IOMMU group (a group goes to one VM
    whole; a device without a known group is its own group)."""
    out = []
    groups: set[int] = set()
    for dev in facts.get("pci", ()):
        if not passthrough_allowed(dev, allow):
            continue
        group = dev.get("iommu_group")
        if group is not None:
            if group in groups:
                continue
            groups.add(group)
        out.append(dict(dev))
    return out


def extended_resources(facts: Mapping[str, Any], allow: Sequence[str] = DEFAULT_PASSTHROUGH) -> dict[str, int]:
    """Countable resources of a host: ``pci/vvvv:pppp`` (assignable devices), ``mdev/TYPE``
    (available mediated devices), ``usb/vvvv:pppp`` and ``hugepages-2M`` / ``hugepages-1G``
    (pages in the pools)."""
    out: dict[str, int] = {}

    def add(name: str, n: int) -> None:
        if n > 0:
            out[name] = out.get(name, 0) + n

    for dev in assignable(facts, allow):
        add(f"pci/{dev['vendor']}:{dev['product']}", 1)
    for dev in facts.get("pci", ()):
        for kind, available in (dev.get("mdev_types") or {}).items():
            add(f"mdev/{kind}", int(available))
    for dev in facts.get("usb", ()):
        add(f"usb/{dev['vendor']}:{dev['product']}", 1)
    for cell in facts.get("numa", ()):
        for size, pages in (cell.get("hugepages") or {}).items():
            add("hugepages-1G" if size == "1048576" else "hugepages-2M" if size == "2048" else f"hugepages-{size}K",
                int(pages))
    return out


def merge(capabilities: Mapping[str, Any], domcaps: Mapping[str, Any] | None,
          devices: Iterable[Mapping[str, Any] | None]) -> dict[str, Any]:
    facts = dict(capabilities)
    facts["machines"] = sorted(set(facts.get("machines", ())) | set((domcaps or {}).get("machines", ())))
    facts["cpu_models"] = list((domcaps or {}).get("cpu_models", ()))
    facts["host_model"] = (domcaps or {}).get("host_model")
    facts["uefi"] = bool((domcaps or {}).get("uefi", False))
    devs = [d for d in devices if d]
    facts["pci"] = sorted((d for d in devs if d["kind"] == "pci"), key=lambda d: d["address"])
    facts["usb"] = sorted((d for d in devs if d["kind"] == "usb"), key=lambda d: (d["bus"], d["device"]))
    return facts


def cluster_baseline(conn: Any, cpu_xmls: Sequence[str], virt_type: str = "kvm") -> Cpu:
    """The most capable CPU every host of ``cpu_xmls`` (their ``cpu_xml`` facts) can run,
    as libvirt computes it (migratable features only): give it to VMs that must be able
    to live-migrate to every host of the cluster."""
    import libvirt

    xmls = [x for x in cpu_xmls if x]
    if not xmls:
        raise ValueError("no host CPU descriptions to compute a baseline from")
    try:
        xml = conn.baselineHypervisorCPU(None, "x86_64", None, virt_type, xmls,
                                         libvirt.VIR_CONNECT_BASELINE_CPU_MIGRATABLE)
    except libvirt.libvirtError:
        xml = conn.baselineCPU(xmls, 0)  # older drivers
    root = _root(xml)
    features = tuple(CpuFeature(str(f.get("name")), f.get("policy", "require")) for f in root.findall("feature"))
    return Cpu("custom", root.findtext("model"), features)


def discover(conn: Any) -> dict[str, Any]:
    """Facts of the host behind libvirt connection ``conn`` (a ``libvirt.virConnect``)."""
    import libvirt

    caps = parse_capabilities(conn.getCapabilities())
    try:
        domcaps = parse_domain_capabilities(conn.getDomainCapabilities())
    except libvirt.libvirtError:
        domcaps = None  # drivers without domain capabilities (the test driver)
    devices = [parse_node_device(d.XMLDesc(0)) for d in conn.listAllDevices(0)]
    facts = merge(caps, domcaps, devices)
    info = conn.getInfo()  # [arch, memory MiB, cpus, mhz, nodes, sockets, cores, threads]
    facts["memory_mib"] = int(info[1])
    facts["threads"] = facts["threads"] or int(info[2])
    if not facts["numa"]:
        facts["numa"] = [{"id": 0, "memory_mib": int(info[1]), "cpus": list(range(int(info[2]))), "hugepages": {}}]
    return facts
