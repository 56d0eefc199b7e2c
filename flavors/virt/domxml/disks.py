"""``<disk>``: files, block devices and network disks (rbd, iSCSI), CD-ROMs; the writer
beside its reader."""

from __future__ import annotations

from lxml import etree

from flavors.virt.domxml.common import UnsupportedXML, attributes, el, integer, only
from flavors.virt.spec import Disk


def write_disk(devices: etree._Element, d: Disk) -> None:
    """One ``<disk>`` into ``devices``."""
    disk = el(devices, "disk", type=d.kind, device=d.device)
    driver = el(disk, "driver", name="qemu", type=d.format)
    if d.cache:
        driver.set("cache", d.cache)
    if d.io:
        driver.set("io", d.io)
    if d.discard:
        driver.set("discard", d.discard)
    if d.kind == "file":
        el(disk, "source", file=d.source)
    elif d.kind == "block":
        el(disk, "source", dev=d.source)
    else:
        source = el(disk, "source", protocol=str(d.protocol), name=d.source)
        for host in d.hosts:
            name, _, port = host.rpartition(":")
            el(source, "host", name=name, port=port)
    el(disk, "target", dev=d.target, bus=d.bus)
    if d.boot is not None:
        el(disk, "boot", order=str(d.boot))
    if d.readonly:
        el(disk, "readonly")
    if d.shareable:
        el(disk, "shareable")
    if d.serial:
        el(disk, "serial", d.serial)


def disk_element(d: Disk) -> str:
    """One ``<disk>`` (for hotplug)."""
    holder = etree.Element("devices")
    write_disk(holder, d)
    return str(etree.tostring(holder[0], encoding="unicode"))


def read_disk(node: etree._Element, at: str) -> Disk:
    """The :class:`Disk` of one ``<disk>``."""
    kind, device = node.get("type", "file"), node.get("device", "disk")
    if kind not in ("file", "block", "network") or device not in ("disk", "cdrom"):
        raise UnsupportedXML(at, f"disk type {kind} device {device} is not supported")
    driver = node.find("driver")
    source = node.find("source")
    target = node.find("target")
    if target is None or source is None:
        raise UnsupportedXML(at, "a disk needs a source and a target (empty CD-ROM drives are not supported)")
    bus = target.get("bus", "virtio")
    if bus not in ("virtio", "scsi", "sata"):
        raise UnsupportedXML(f"{at}/target/@bus", "only virtio, scsi and sata disks", bus)
    if driver is not None:
        # Every driver setting is carried (cache, io, discard) or refused by name.
        attributes(driver, {"name", "type", "cache", "io", "discard"}, f"{at}/driver")
        if driver.get("name", "qemu") != "qemu":
            raise UnsupportedXML(f"{at}/driver/@name", "only the qemu driver", driver.get("name"))
    attributes(source, {"file", "dev", "protocol", "name", "index"}, f"{at}/source")
    only(source, {"host", "auth"}, f"{at}/source")
    hosts: tuple[str, ...] = ()
    protocol = None
    if kind == "file":
        path = source.get("file")
    elif kind == "block":
        path = source.get("dev")
    else:
        protocol, path = source.get("protocol"), source.get("name")
        hosts = tuple(f"{h.get('name')}:{h.get('port') or {'rbd': '6789', 'iscsi': '3260'}.get(str(protocol), '0')}"
                      for h in source.findall("host"))
        if source.find("auth") is not None or node.find("auth") is not None:
            raise UnsupportedXML(f"{at}/auth", "network disk secrets are not supported yet")
    for child in node:
        if isinstance(child.tag, str) and child.tag not in ("driver", "source", "target", "boot", "readonly",
                                                            "shareable", "serial", "address", "alias",
                                                            "backingStore"):
            raise UnsupportedXML(f"{at}/{child.tag}", "not supported by the VM spec")
    boot = node.find("boot")
    return Disk(
        target=str(target.get("dev")), source=str(path), kind=kind, protocol=protocol, hosts=hosts, device=device,
        bus=bus, format=driver.get("type", "raw") if driver is not None else "raw",
        cache=driver.get("cache") if driver is not None else None,
        io=driver.get("io") if driver is not None else None,
        discard=driver.get("discard") if driver is not None else None,
        readonly=node.find("readonly") is not None, shareable=node.find("shareable") is not None,
        boot=integer(boot.get("order", "1"), f"{at}/boot/@order", 1, 1024) if boot is not None else None,
        serial=node.findtext("serial"),
    )
