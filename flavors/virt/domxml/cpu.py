"""vCPUs and the guest CPU: ``<vcpu>``, ``<cputune>``, ``<numatune>`` and ``<cpu>`` (model,
topology, features, NUMA cells), each writer beside its reader."""

from __future__ import annotations

from typing import Any

from lxml import etree

from flavors.virt.domxml.common import UNITS, UnsupportedXML, el, mib
from flavors.virt.spec import Cpu, CpuFeature, NumaCell, Pin, Topology, VMSpec


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
    total = int((vcpu.text or "1").strip()) if vcpu is not None else 1
    current = vcpu.get("current") if vcpu is not None else None
    if current is not None and int(current) != total:
        fields["vcpus"], fields["max_vcpus"] = int(current), total
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
            pins.append(Pin(int(node.get("vcpu", "0")), str(node.get("cpuset"))))
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
        if int(topo.get("dies", "1")) != 1:
            raise UnsupportedXML("/domain/cpu/topology/@dies", "one die per socket", topo.get("dies"))
        fields["topology"] = Topology(int(topo.get("sockets", "1")), int(topo.get("cores", "1")),
                                      int(topo.get("threads", "1")))
    nodes: dict[int, int] = {}
    tune = root.find("numatune")
    if tune is not None:
        for node in tune:
            if not isinstance(node.tag, str):
                continue
            if node.tag != "memnode" or node.get("mode", "strict") != "strict":
                raise UnsupportedXML(f"/domain/numatune/{node.tag}", "only strict memnode bindings")
            nodes[int(node.get("cellid", "0"))] = int(node.get("nodeset", "0"))
    cells = sorted(cpu.findall("numa/cell"), key=lambda c: int(c.get("id", "0")))
    fields["numa"] = tuple(NumaCell(str(c.get("cpus")), mib(c, "/domain/cpu/numa/cell") if c.text else
                                    int(c.get("memory", "0")) * UNITS[(c.get("unit") or "KiB").lower()] // 1024**2,
                                    nodes.get(int(c.get("id", "0"))))
                           for c in cells)
