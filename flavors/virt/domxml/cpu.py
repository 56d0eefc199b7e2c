"""vCPUs and the guest CPU: ``<vcpu>``, ``<cputune>``, ``<numatune>`` and ``<cpu>`` (model,
topology, features, NUMA cells), each writer beside its reader."""

from __future__ import annotations

from typing import Any

from lxml import etree

from flavors.virt.domxml.common import UNITS, UnsupportedXML, el, integer, mib
from flavors.virt.spec import MAX_MEMORY_MIB, MAX_VCPUS, Cpu, CpuFeature, NumaCell, Pin, Topology, VMSpec


def write_vcpus(root: etree._Element, spec: VMSpec) -> None:
    """``<vcpu>``, ``<cputune>`` (vCPU pins) and ``<numatune>`` (cells bound to host nodes)."""
    vcpu = el(root, "vcpu", str(spec.vcpu_max), placement="static")
    if spec.max_vcpus is not None:
        vcpu.set("current", str(spec.vcpus))
    if spec.pins:
        tune = el(root, "cputune")
        for pin in spec.pins:
            el(tune, "vcpupin", vcpu=str(pin.vcpu), cpuset=pin.cpuset)
    bound = [(i, c) for i, c in enumerate(spec.numa) if c.host_node is not None]
    if bound:
        tune = el(root, "numatune")
        for i, cell in bound:
            el(tune, "memnode", cellid=str(i), mode="strict", nodeset=str(cell.host_node))


def read_vcpus(root: etree._Element, fields: dict[str, Any]) -> None:
    """``vcpus``, ``max_vcpus`` and ``pins`` from ``<vcpu>`` and ``<cputune>``."""
    vcpu = root.find("vcpu")
    total = integer(vcpu.text, "/domain/vcpu", 1, MAX_VCPUS) if vcpu is not None else 1
    raw = vcpu.get("current") if vcpu is not None else None
    current = None if raw is None else integer(raw, "/domain/vcpu/@current", 1, MAX_VCPUS)
    if current is not None and current != total:
        fields["vcpus"], fields["max_vcpus"] = current, total
    elif current is not None:
        fields["vcpus"], fields["max_vcpus"] = total, total
    else:
        fields["vcpus"] = total
    if vcpu is not None and vcpu.get("cpuset"):
        raise UnsupportedXML("/domain/vcpu/@cpuset", "pin vCPUs one by one (cputune/vcpupin)", vcpu.get("cpuset"))
    pins = []
    tune = root.find("cputune")
    if tune is not None:
        for node in tune:
            if not isinstance(node.tag, str):
                continue
            if node.tag != "vcpupin":
                raise UnsupportedXML(f"/domain/cputune/{node.tag}", "not supported by the VM spec")
            pins.append(Pin(integer(node.get("vcpu"), "/domain/cputune/vcpupin/@vcpu", 0, MAX_VCPUS - 1),
                            str(node.get("cpuset"))))
    fields["pins"] = tuple(sorted(pins, key=lambda p: p.vcpu))


def write_cpu(root: etree._Element, spec: VMSpec) -> None:
    """``<cpu>``: mode, model, topology, features and guest NUMA cells (none when all are defaults)."""
    if spec.cpu.mode == "default" and spec.topology is None and not spec.numa:
        return
    cpu = el(root, "cpu")
    if spec.cpu.mode != "default":
        cpu.set("mode", spec.cpu.mode)
    if spec.cpu.mode == "custom":
        cpu.set("match", "exact")
        el(cpu, "model", spec.cpu.model, fallback="forbid")
    if spec.topology is not None:
        t = spec.topology
        el(cpu, "topology", sockets=str(t.sockets), dies="1", cores=str(t.cores), threads=str(t.threads))
    for feature in spec.cpu.features:
        el(cpu, "feature", policy=feature.policy, name=feature.name)
    if spec.numa:
        numa = el(cpu, "numa")
        for i, cell in enumerate(spec.numa):
            el(numa, "cell", id=str(i), cpus=cell.cpus, memory=str(cell.memory * 1024), unit="KiB")


def read_cpu(root: etree._Element, fields: dict[str, Any]) -> None:
    """``cpu``, ``topology`` and ``numa`` from ``<cpu>`` and ``<numatune>``."""
    cpu = root.find("cpu")
    if cpu is None:
        return
    mode = cpu.get("mode", "custom")
    model = cpu.findtext("model")
    features = tuple(CpuFeature(str(f.get("name")), f.get("policy", "require")) for f in cpu.findall("feature"))
    if mode == "custom" and not model:
        mode = "default" if not features else mode  # a <cpu> holding only topology or NUMA
    if mode != "custom" and features:
        raise UnsupportedXML("/domain/cpu/feature", f"features with mode {mode} are not supported")
    fields["cpu"] = Cpu(mode, model.strip() if mode == "custom" and model else None, features)
    topo = cpu.find("topology")
    if topo is not None:
        at = "/domain/cpu/topology/@"
        if integer(topo.get("dies", "1"), at + "dies") != 1:
            raise UnsupportedXML(at + "dies", "one die per socket", topo.get("dies"))
        fields["topology"] = Topology(*(integer(topo.get(k, "1"), at + k, 1, MAX_VCPUS)
                                        for k in ("sockets", "cores", "threads")))
    nodes: dict[int, int] = {}
    tune = root.find("numatune")
    if tune is not None:
        for node in tune:
            if not isinstance(node.tag, str):
                continue
            if node.tag != "memnode" or node.get("mode", "strict") != "strict":
                raise UnsupportedXML(f"/domain/numatune/{node.tag}", "only strict memnode bindings")
            at = "/domain/numatune/memnode/@"
            nodes[integer(node.get("cellid", "0"), at + "cellid", 0, 1023)] = integer(node.get("nodeset", "0"),
                                                                                   at + "nodeset", 0, 1023)
    at = "/domain/cpu/numa/cell"
    cells = sorted(cpu.findall("numa/cell"), key=lambda c: integer(c.get("id", "0"), at + "/@id", 0, 1023))
    fields["numa"] = tuple(NumaCell(str(c.get("cpus")), mib(c, at) if c.text else _cell_mib(c, at),
                                    nodes.get(integer(c.get("id", "0"), at + "/@id")))
                           for c in cells)


def _cell_mib(cell: etree._Element, at: str) -> int:
    unit = (cell.get("unit") or "KiB").lower()
    if unit not in UNITS:
        raise UnsupportedXML(f"{at}/@unit", "unknown unit", unit)
    return integer(cell.get("memory"), f"{at}/@memory", 0, MAX_MEMORY_MIB * 1024**4 // UNITS[unit]) \
        * UNITS[unit] // 1024**2
