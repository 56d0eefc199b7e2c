"""``<os>``: guest type, arch, machine type, firmware (BIOS or UEFI, secure boot) and
direct kernel boot (``<kernel>``, ``<initrd>``, ``<cmdline>``), the writer beside its reader."""

from __future__ import annotations

from typing import Any

from lxml import etree

from flavors.virt.domxml.common import UnsupportedXML, attributes, el, only
from flavors.virt.spec import Firmware, KernelBoot, VMSpec

_KERNEL_BOOT = ("kernel", "initrd", "cmdline")


def write_os(root: etree._Element, spec: VMSpec) -> None:
    """``<os>``: guest type, arch, machine, firmware (UEFI, secure boot) and direct kernel boot."""
    os_ = el(root, "os")
    el(os_, "type", "hvm", arch=spec.arch, machine=spec.machine)
    if spec.firmware.kind == "uefi":
        os_.set("firmware", "efi")
        if spec.firmware.secure_boot:
            fw = el(os_, "firmware")
            el(fw, "feature", enabled="yes", name="enrolled-keys")
            el(fw, "feature", enabled="yes", name="secure-boot")
            el(os_, "loader", secure="yes")
    if spec.boot is not None:
        el(os_, "kernel", spec.boot.kernel)
        if spec.boot.initrd is not None:
            el(os_, "initrd", spec.boot.initrd)
        if spec.boot.cmdline:  # libvirt drops an empty one
            el(os_, "cmdline", spec.boot.cmdline)


def read_os(root: etree._Element, fields: dict[str, Any]) -> None:
    """``arch``, ``machine``, ``firmware`` and ``boot`` from ``<os>``."""
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
                                                          "smbios", *_KERNEL_BOOT):
            raise UnsupportedXML(f"/domain/os/{node.tag}", "not supported by the VM spec")
    fields["boot"] = _read_kernel_boot(os_)
    loader = os_.find("loader")
    efi = os_.get("firmware") == "efi" or (loader is not None and loader.get("type") == "pflash")
    secure = loader is not None and loader.get("secure") == "yes"
    for feature in os_.findall("firmware/feature"):
        if feature.get("name") == "secure-boot":
            secure = feature.get("enabled") == "yes"
    fields["firmware"] = Firmware("uefi" if efi else "bios", secure and efi)


def _read_kernel_boot(os_: etree._Element) -> KernelBoot | None:
    """The :class:`KernelBoot` of ``<kernel>``, ``<initrd>`` and ``<cmdline>`` (None without a
    kernel); each text is taken as written (libvirt keeps a command line's spaces)."""
    texts: dict[str, str] = {}
    for tag in _KERNEL_BOOT:
        nodes = os_.findall(tag)
        if len(nodes) > 1:
            raise UnsupportedXML(f"/domain/os/{tag}", "appears twice")
        if nodes:
            attributes(nodes[0], set(), f"/domain/os/{tag}")
            only(nodes[0], set(), f"/domain/os/{tag}")
            texts[tag] = nodes[0].text or ""
    if "kernel" not in texts:
        if texts:
            raise UnsupportedXML(f"/domain/os/{next(iter(texts))}", "without a <kernel> to boot")
        return None
    return KernelBoot(texts["kernel"], texts.get("initrd"), texts.get("cmdline", ""))
