"""``<hostdev>``: PCI, USB and mediated devices passed through, and the PCI addresses that
SR-IOV interfaces share; each writer beside its reader."""

from __future__ import annotations

from lxml import etree

from flavors.virt.domxml.common import UnboundDevice, UnsupportedXML, el, integer
from flavors.virt.spec import HostDevice


def write_pci_address(parent: etree._Element, address: str, typed: bool) -> None:
    """``typed``: an interface's source address says ``type='pci'``, a hostdev's must not."""
    domain, bus, rest = address.split(":")
    slot, function = rest.split(".")
    node = el(parent, "address", domain=f"0x{domain}", bus=f"0x{bus}", slot=f"0x{slot}", function=f"0x{function}")
    if typed:
        node.set("type", "pci")


def read_pci_address(source: etree._Element | None, at: str) -> str:
    """The PCI address (``0000:65:00.0``) in ``source/address``."""
    address = source.find("address") if source is not None else None
    if address is None:
        raise UnsupportedXML(f"{at}/source/address", "is required")
    parts = [integer(address.get(k, "0"), f"{at}/source/address/@{k}", 0, high, base=16)
             for k, high in (("domain", 0xFFFF), ("bus", 0xFF), ("slot", 0x1F), ("function", 7))]
    return f"{parts[0]:04x}:{parts[1]:02x}:{parts[2]:02x}.{parts[3]:x}"


def hostdev_element(d: HostDevice, at: str = "hostdev") -> etree._Element:
    """One ``<hostdev>`` (also for hotplug)."""
    if d.kind == "usb":
        vendor, product = d.vendor, d.product
        if vendor is None and d.resource:
            vendor, product = d.resource.split("/")[1].split(":")
        dev = etree.Element("hostdev", mode="subsystem", type="usb", managed="yes")
        source = el(dev, "source")
        el(source, "vendor", id=f"0x{vendor}")
        el(source, "product", id=f"0x{product}")
        return dev
    if d.address is None:
        raise UnboundDevice(f"{at}.address", str(d.resource))
    if d.kind == "pci":
        dev = etree.Element("hostdev", mode="subsystem", type="pci", managed="yes")
        write_pci_address(el(dev, "source"), d.address, typed=False)
        return dev
    dev = etree.Element("hostdev", mode="subsystem", type="mdev", model="vfio-pci")
    el(el(dev, "source"), "address", uuid=d.address)
    return dev


def read_hostdev(node: etree._Element, at: str, resource: str | None) -> HostDevice:
    """The :class:`HostDevice` of one ``<hostdev>`` (``resource`` from the metadata)."""
    kind = node.get("type")
    if node.get("mode", "subsystem") != "subsystem" or kind not in ("pci", "usb", "mdev"):
        raise UnsupportedXML(at, f"hostdev {node.get('mode')}/{kind} is not supported")
    source = node.find("source")
    if kind == "pci":
        return HostDevice("pci", address=read_pci_address(source, at), resource=resource)
    if kind == "mdev":
        address = source.find("address") if source is not None else None
        return HostDevice("mdev", address=address.get("uuid") if address is not None else None, resource=resource)
    vendor = node.find("source/vendor")
    product = node.find("source/product")
    if vendor is None or product is None:
        raise UnsupportedXML(f"{at}/source", "USB devices by vendor and product only")
    v = f"{integer(vendor.get('id'), f'{at}/source/vendor/@id', 0, 0xFFFF, base=16):04x}"
    p = f"{integer(product.get('id'), f'{at}/source/product/@id', 0, 0xFFFF, base=16):04x}"
    if resource == f"usb/{v}:{p}":
        return HostDevice("usb", resource=resource)
    return HostDevice("usb", vendor=v, product=p, resource=resource)
