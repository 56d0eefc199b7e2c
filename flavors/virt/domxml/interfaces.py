"""``<interface>``: bridges, libvirt networks, macvtap, SR-IOV VFs, vhost-user, user-mode
networking and UDP tunnels (QEMU's socket backend: two guests, or a guest and a lab switch,
linked without a bridge or tap); the writer beside its reader."""

from __future__ import annotations

from lxml import etree

from flavors.virt.domxml.common import UnboundDevice, UnsupportedXML, attributes, el, integer, only
from flavors.virt.domxml.hostdevs import read_pci_address, write_pci_address
from flavors.virt.spec import Nic, endpoint

KINDS = ("bridge", "network", "direct", "hostdev", "vhostuser", "user", "udp")


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
    elif n.kind == "udp":
        address, port = endpoint(str(n.source))
        source = el(nic, "source", address=address, port=str(port))
        address, port = endpoint(str(n.local))
        el(source, "local", address=address, port=str(port))
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
    if kind not in KINDS:
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
    local: str | None = None
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
    elif kind == "udp":
        src, local = _read_udp(source, f"{at}/source")
    else:
        src = None
    return Nic(kind=kind, source=src, model=model.get("type", "virtio") if model is not None else "virtio",
               mac=mac.get("address") if mac is not None else None, mode=mode, resource=resource, local=local)


def _read_udp(source: etree._Element | None, at: str) -> tuple[str, str]:
    """The peer and local ``ADDR:PORT`` of a udp ``<source>`` and its ``<local>``."""
    if source is None:
        raise UnsupportedXML(at, "a udp interface needs a source")
    attributes(source, {"address", "port"}, at)
    only(source, {"local"}, at)
    locals_ = source.findall("local")
    if len(locals_) != 1:
        raise UnsupportedXML(f"{at}/local", "a udp interface has one local address and port", len(locals_))
    local = locals_[0]
    attributes(local, {"address", "port"}, f"{at}/local")
    only(local, set(), f"{at}/local")
    return (f"{source.get('address', '')}:{integer(source.get('port'), f'{at}/@port', 1, 65535)}",
            f"{local.get('address', '')}:{integer(local.get('port'), f'{at}/local/@port', 1, 65535)}")
