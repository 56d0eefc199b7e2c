"""``<interface>``: bridges, libvirt networks, macvtap, SR-IOV VFs, vhost-user and user-mode
networking; the writer beside its reader."""

from __future__ import annotations

from lxml import etree

from flavors.virt.domxml.common import UnboundDevice, UnsupportedXML, el
from flavors.virt.domxml.hostdevs import read_pci_address, write_pci_address
from flavors.virt.spec import Nic


def write_nic(devices: etree._Element, n: Nic, at: str) -> None:
    """One ``<interface>`` into ``devices``; UnboundDevice for an SR-IOV VF not bound yet."""
    nic = el(devices, "interface", type=n.kind)
    if n.kind == "hostdev":
        nic.set("managed", "yes")
    if n.mac:
        el(nic, "mac", address=n.mac)
    if n.kind == "bridge":
        el(nic, "source", bridge=str(n.source))
    elif n.kind == "network":
        el(nic, "source", network=str(n.source))
    elif n.kind == "direct":
        el(nic, "source", dev=str(n.source), mode=str(n.mode))
    elif n.kind == "hostdev":
        if n.source is None:
            raise UnboundDevice(f"{at}.source", str(n.resource))
        write_pci_address(el(nic, "source"), str(n.source), typed=True)
    elif n.kind == "vhostuser":
        el(nic, "source", type="unix", path=str(n.source), mode=str(n.mode))
    if n.kind != "hostdev":
        el(nic, "model", type=n.model)


def nic_element(n: Nic) -> str:
    """One ``<interface>`` (for hotplug)."""
    holder = etree.Element("devices")
    write_nic(holder, n, "nic")
    return str(etree.tostring(holder[0], encoding="unicode"))


def read_nic(node: etree._Element, at: str, resource: str | None) -> Nic:
    """The :class:`Nic` of one ``<interface>`` (``resource`` from the metadata)."""
    kind = node.get("type", "")
    if kind not in ("bridge", "network", "direct", "hostdev", "vhostuser", "user"):
        raise UnsupportedXML(f"{at}/@type", "not supported by the VM spec", kind)
    for child in node:
        if isinstance(child.tag, str) and child.tag not in ("mac", "source", "model", "address", "alias", "target",
                                                            "driver", "link", "rom"):
            raise UnsupportedXML(f"{at}/{child.tag}", "not supported by the VM spec")
    mac = node.find("mac")
    model = node.find("model")
    source = node.find("source")
    src: str | None
    mode: str | None = None
    if kind == "bridge":
        src = source.get("bridge") if source is not None else None
    elif kind == "network":
        src = source.get("network") if source is not None else None
    elif kind == "direct":
        src, mode = (source.get("dev"), source.get("mode", "vepa")) if source is not None else (None, None)
    elif kind == "hostdev":
        src = read_pci_address(source, at)
    elif kind == "vhostuser":
        src, mode = (source.get("path"), source.get("mode")) if source is not None else (None, None)
    else:
        src = None
    return Nic(kind=kind, source=src, model=model.get("type", "virtio") if model is not None else "virtio",
               mac=mac.get("address") if mac is not None else None, mode=mode, resource=resource)
