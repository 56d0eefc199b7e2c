"""``<os>``: guest type, arch, machine type and firmware (BIOS or UEFI, secure boot), the
writer beside its reader."""

from __future__ import annotations

from typing import Any

from lxml import etree

from flavors.virt.domxml.common import UnsupportedXML, el
from flavors.virt.spec import Firmware, VMSpec


def write_os(root: etree._Element, spec: VMSpec) -> None:
    """``<os>``: guest type, arch, machine and firmware (UEFI, secure boot)."""
    os_ = el(root, "os")
    el(os_, "type", "hvm", arch=spec.arch, machine=spec.machine)
    if spec.firmware.kind == "uefi":
        os_.set("firmware", "efi")
        if spec.firmware.secure_boot:
            fw = el(os_, "firmware")
            el(fw, "feature", enabled="yes", name="enrolled-keys")
            el(fw, "feature", enabled="yes", name="secure-boot")
            el(os_, "loader", secure="yes")


def read_os(root: etree._Element, fields: dict[str, Any]) -> None:
    """``arch``, ``machine`` and ``firmware`` from ``<os>``."""
    os_ = root.find("os")
    if os_ is None:
        raise UnsupportedXML("/domain/os", "is required")
    type_ = os_.find("type")
    if type_ is None or (type_.text or "").strip() != "hvm":
        raise UnsupportedXML("/domain/os/type", "only hvm guests")
    fields["arch"] = type_.get("arch", "x86_64")
    fields["machine"] = type_.get("machine", "pc")
    for node in os_:
        if isinstance(node.tag, str) and node.tag not in ("type", "firmware", "loader", "nvram", "boot", "bootmenu",
                                                          "smbios"):
            raise UnsupportedXML(f"/domain/os/{node.tag}", "not supported by the VM spec")
    loader = os_.find("loader")
    efi = os_.get("firmware") == "efi" or (loader is not None and loader.get("type") == "pflash")
    secure = loader is not None and loader.get("secure") == "yes"
    for feature in os_.findall("firmware/feature"):
        if feature.get("name") == "secure-boot":
            secure = feature.get("enabled") == "yes"
    fields["firmware"] = Firmware("uefi" if efi else "bios", secure and efi)
