"""``<metadata>``: what libvirt's XML has no room for (the guaranteed memory, which host
devices were asked for by resource name, cloud-init documents, the cluster volume each
disk is and the logical network each NIC is on), under :data:`NAMESPACE`."""

from __future__ import annotations

from typing import Any

from lxml import etree

from flavors.virt.domxml.common import UnsupportedXML, el, integer
from flavors.virt.spec import VMSpec

NAMESPACE = "urn:clustercore:vm:1"
NS = f"{{{NAMESPACE}}}"


def write_metadata(root: etree._Element, spec: VMSpec) -> None:
    """``<metadata>``: what libvirt's XML has no room for, under :data:`NAMESPACE`."""
    resources = [(i, d.resource) for i, d in enumerate(spec.hostdevs) if d.resource and d.kind != "usb"]
    resources_usb = [(i, d.resource) for i, d in enumerate(spec.hostdevs) if d.resource and d.kind == "usb"]
    vfs = [(i, n.resource) for i, n in enumerate(spec.nics) if n.resource]
    volumes = [d for d in spec.disks if d.volume is not None]
    networks = [(i, n.network) for i, n in enumerate(spec.nics) if n.network is not None]
    if not (spec.memory.guaranteed is not None or resources or resources_usb or vfs or spec.cloud_init or volumes
            or networks):
        return
    vm = etree.SubElement(el(root, "metadata"), f"{NS}vm", nsmap={"clustercore": NAMESPACE})
    if spec.memory.guaranteed is not None:
        el(vm, f"{NS}guaranteed", str(spec.memory.guaranteed), unit="MiB")
    for i, name in resources + resources_usb:
        el(vm, f"{NS}hostdev", index=str(i), resource=str(name))
    for i, name in vfs:
        el(vm, f"{NS}vf", index=str(i), resource=str(name))
    if spec.cloud_init:
        ci = el(vm, f"{NS}cloud-init")
        el(ci, f"{NS}user-data", spec.cloud_init.user_data)
        el(ci, f"{NS}meta-data", spec.cloud_init.meta_data)
        if spec.cloud_init.network_config is not None:
            el(ci, f"{NS}network-config", spec.cloud_init.network_config)
    for d in volumes:  # by target and source: libvirt may list disks in another order
        disk = el(vm, f"{NS}disk", target=d.target, source=d.source, volume=str(d.volume))
        if d.storage is not None:
            disk.set("storage", d.storage)
    for i, network in networks:  # by MAC; by index for a NIC libvirt gives its MAC
        mac = spec.nics[i].mac
        el(vm, f"{NS}nic", **({"mac": mac} if mac else {"index": str(i)}), network=str(network))


def read_metadata(root: etree._Element) -> dict[str, Any]:
    """What :func:`write_metadata` keeps: ``guaranteed``, resource names by index, ``cloud_init``,
    ``volumes`` (disk target -> its source and volume fields) and ``networks`` (a NIC's MAC, or
    its index, -> logical network)."""
    meta: dict[str, Any] = {"resources": {}, "vfs": {}, "volumes": {}, "networks": {}}
    vm = root.find(f"metadata/{NS}vm")
    if vm is None:
        return meta
    guaranteed = vm.find(f"{NS}guaranteed")
    if guaranteed is not None:
        meta["guaranteed"] = integer(guaranteed.text, "/domain/metadata/vm/guaranteed")
    for dev in vm.findall(f"{NS}hostdev"):
        meta["resources"][integer(dev.get("index"), "/domain/metadata/vm/hostdev/@index", 0, 4096)] = \
            dev.get("resource")
    for dev in vm.findall(f"{NS}vf"):
        meta["vfs"][integer(dev.get("index"), "/domain/metadata/vm/vf/@index", 0, 4096)] = dev.get("resource")
    ci = vm.find(f"{NS}cloud-init")
    if ci is not None:
        net = ci.find(f"{NS}network-config")
        meta["cloud_init"] = {"user_data": ci.findtext(f"{NS}user-data") or "",
                              "meta_data": ci.findtext(f"{NS}meta-data") or "",
                              "network_config": None if net is None else (net.text or "")}
    for disk in vm.findall(f"{NS}disk"):
        target = disk.get("target")
        if target in meta["volumes"]:
            raise UnsupportedXML("/domain/metadata/vm/disk/@target", "names a disk twice", target)
        meta["volumes"][target] = {"source": disk.get("source"), "volume": disk.get("volume"),
                                   "storage": disk.get("storage")}
    for nic in vm.findall(f"{NS}nic"):
        key: str | int
        if nic.get("mac") is not None:
            key, at = str(nic.get("mac")), "/domain/metadata/vm/nic/@mac"
        else:
            at = "/domain/metadata/vm/nic/@index"
            key = integer(nic.get("index"), at, 0, 4096)
        if key in meta["networks"]:
            raise UnsupportedXML(at, "names a NIC twice", key)
        meta["networks"][key] = nic.get("network")
    return meta
