"""Memory: ``<maxMemory>``, ``<memory>``, ``<currentMemory>``, ``<memoryBacking>`` and the
DIMM devices, each writer beside its reader."""

from __future__ import annotations

from typing import Any

from lxml import etree

from flavors.virt.domxml.common import UNITS, UnsupportedXML, el, integer, mib
from flavors.virt.spec import Dimm, Memory, VMSpec


def write_memory(root: etree._Element, spec: VMSpec) -> None:
    """``<maxMemory>``, ``<memory>``, ``<currentMemory>`` and ``<memoryBacking>``."""
    mem = spec.memory
    if mem.maximum is not None:
        el(root, "maxMemory", str(mem.maximum * 1024), slots=str(mem.slots), unit="KiB")
    el(root, "memory", str(mem.size * 1024), unit="KiB")
    el(root, "currentMemory", str(mem.size * 1024), unit="KiB")
    if mem.hugepages:
        el(el(el(root, "memoryBacking"), "hugepages"), "page", size=str(mem.hugepages), unit="KiB")


def read_memory(root: etree._Element, meta: dict[str, Any]) -> Memory:
    """The :class:`Memory` of ``<memory>``, ``<maxMemory>``, ``<memoryBacking>`` and the DIMM devices."""
    memory = root.find("memory")
    if memory is None:
        raise UnsupportedXML("/domain/memory", "is required")
    size = mib(memory, "/domain/memory")
    # currentMemory (a balloon target) is runtime state, not the definition.
    maximum = slots = None
    max_node = root.find("maxMemory")
    if max_node is not None:
        maximum, slots = mib(max_node, "/domain/maxMemory"), integer(max_node.get("slots", "0"),
                                                                     "/domain/maxMemory/@slots", 0, 256)
    hugepages = None
    backing = root.find("memoryBacking")
    if backing is not None:
        for node in backing:
            if isinstance(node.tag, str) and node.tag != "hugepages":
                raise UnsupportedXML(f"/domain/memoryBacking/{node.tag}", "not supported by the VM spec")
        pages = backing.findall("hugepages/page")
        if len(pages) > 1:
            raise UnsupportedXML("/domain/memoryBacking/hugepages", "one page size per VM")
        if pages:
            at = "/domain/memoryBacking/hugepages/page"
            unit = (pages[0].get("unit") or "KiB").lower()
            if unit not in UNITS:
                raise UnsupportedXML(f"{at}/@unit", "unknown unit", unit)
            hugepages = integer(pages[0].get("size"), f"{at}/@size", 1, 1 << 40) * UNITS[unit] // 1024
        elif backing.find("hugepages") is not None:
            hugepages = 2048  # the host's default size
    dimms = tuple(_dimm(d) for d in root.findall("devices/memory"))
    return Memory(size=size, maximum=maximum, slots=slots or 0, dimms=dimms, hugepages=hugepages,
                  guaranteed=meta.get("guaranteed"))


def _dimm(node: etree._Element) -> Dimm:
    at = "/domain/devices/memory/target"
    size = node.find("target/size")
    if size is None:
        raise UnsupportedXML(f"{at}/size", "is required")
    return Dimm(mib(size, f"{at}/size"), integer(node.findtext("target/node") or "0", f"{at}/node", 0, 1023))


def dimm_element(d: Dimm) -> etree._Element:
    """One ``<memory model="dimm">`` (also for hotplug)."""
    dev = etree.Element("memory", model="dimm")
    target = el(dev, "target")
    el(target, "size", str(d.size * 1024), unit="KiB")
    el(target, "node", str(d.node))
    return dev
