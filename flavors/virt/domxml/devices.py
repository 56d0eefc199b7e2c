"""``<devices>``: the disks (and the cloud-init seed), interfaces, consoles, guest agent
channel, graphics, watchdog, balloon, RNG, TPM, host devices and DIMMs, in the order
libvirt keeps them; the writer beside its reader."""

from __future__ import annotations

from typing import Any

from lxml import etree

from flavors.virt.domxml.common import UnsupportedXML, el, only
from flavors.virt.domxml.disks import read_disk, write_disk
from flavors.virt.domxml.hostdevs import hostdev_element, read_hostdev
from flavors.virt.domxml.interfaces import read_nic, write_nic
from flavors.virt.domxml.memory import dimm_element
from flavors.virt.spec import (
    CloudInit,
    Disk,
    Graphics,
    HostDevice,
    Nic,
    VMSpec,
    Watchdog,
)

SEED_TARGET = "sdz"
AGENT = "org.qemu.guest_agent.0"
IGNORED_DEVICES = {"emulator", "controller", "input", "video", "audio"}


def write_devices(root: etree._Element, spec: VMSpec) -> None:
    """``<devices>``, in the order libvirt keeps them."""
    devices = el(root, "devices")
    for disk in spec.disks:
        write_disk(devices, disk)
    if spec.cloud_init is not None:
        write_disk(devices, Disk(SEED_TARGET, spec.cloud_init.seed, device="cdrom", bus="sata", readonly=True))
    for i, nic in enumerate(spec.nics):
        write_nic(devices, nic, f"nics[{i}]")
    if spec.serial:
        el(el(devices, "serial", type="pty"), "target", port="0")
        el(el(devices, "console", type="pty"), "target", type="serial", port="0")
    if spec.guest_agent:
        el(el(devices, "channel", type="unix"), "target", type="virtio", name=AGENT)
    for g in spec.graphics:
        graphics = el(devices, "graphics", type=g.kind, autoport="yes", listen=g.listen)
        el(graphics, "listen", type="address", address=g.listen)
    if spec.watchdog is not None:
        el(devices, "watchdog", model=spec.watchdog.model, action=spec.watchdog.action)
    el(devices, "memballoon", model="virtio" if spec.balloon else "none")
    if spec.rng:
        el(el(devices, "rng", model="virtio"), "backend", "/dev/urandom", model="random")
    if spec.tpm:
        tpm = el(devices, "tpm", model="tpm-crb" if spec.q35 else "tpm-tis")
        el(tpm, "backend", type="emulator", version="2.0")
    for i, dev in enumerate(spec.hostdevs):
        devices.append(hostdev_element(dev, f"hostdevs[{i}]"))
    for dimm in spec.memory.dimms:
        devices.append(dimm_element(dimm))


def read_devices(root: etree._Element, fields: dict[str, Any], meta: dict[str, Any]) -> None:
    """The devices' fields (disks, NICs, consoles, graphics, host devices...) from ``<devices>``."""
    devices = root.find("devices")
    if devices is None:
        devices = etree.Element("devices")
    known = {"disk", "interface", "serial", "console", "channel", "graphics", "watchdog", "memballoon", "rng", "tpm",
             "hostdev", "memory"} | IGNORED_DEVICES
    disks: list[Disk] = []
    nics: list[Nic] = []
    graphics: list[Graphics] = []
    hostdevs: list[HostDevice] = []
    fields["serial"] = fields["guest_agent"] = fields["rng"] = fields["tpm"] = False
    fields["balloon"] = True  # libvirt adds a virtio balloon unless told "none"
    seed: str | None = None
    only(devices, known, "/domain/devices")
    for node in devices:
        if not isinstance(node.tag, str) or node.tag in IGNORED_DEVICES:
            continue
        at = f"/domain/devices/{node.tag}"
        if node.tag == "disk":
            disk = read_disk(node, f"{at}[{len(disks) + 1}]")
            if disk.target == SEED_TARGET and "cloud_init" in meta:
                seed = disk.source
            else:
                disks.append(disk)
        elif node.tag == "interface":
            nics.append(read_nic(node, f"{at}[{len(nics) + 1}]", meta["vfs"].get(len(nics))))
        elif node.tag in ("serial", "console"):
            if node.get("type") != "pty":
                raise UnsupportedXML(f"{at}/@type", "only pty serial consoles", node.get("type"))
            fields["serial"] = True
        elif node.tag == "channel":
            target = node.find("target")
            if target is None or target.get("name") != AGENT:
                raise UnsupportedXML(at, "only the guest agent channel", etree.tostring(node, encoding="unicode"))
            fields["guest_agent"] = True
        elif node.tag == "graphics":
            listen = node.get("listen") or node.find("listen").get("address", "127.0.0.1")  # type: ignore[union-attr]
            graphics.append(Graphics(str(node.get("type")), str(listen)))
        elif node.tag == "watchdog":
            fields["watchdog"] = Watchdog(node.get("model", "i6300esb"), node.get("action", "reset"))
        elif node.tag == "memballoon":
            fields["balloon"] = node.get("model") != "none"
        elif node.tag == "rng":
            fields["rng"] = True
        elif node.tag == "tpm":
            fields["tpm"] = True
        elif node.tag == "hostdev":
            hostdevs.append(read_hostdev(node, f"{at}[{len(hostdevs) + 1}]",
                                          meta["resources"].get(len(hostdevs))))
        elif node.tag == "memory" and node.get("model") != "dimm":
            raise UnsupportedXML(f"{at}/@model", "only DIMM memory devices", node.get("model"))
    fields["disks"], fields["nics"] = tuple(disks), tuple(nics)
    fields["graphics"], fields["hostdevs"] = tuple(graphics), tuple(hostdevs)
    if "cloud_init" in meta:
        if seed is None:
            raise UnsupportedXML("/domain/devices/disk", f"cloud-init metadata without its seed disk ({SEED_TARGET})")
        fields["cloud_init"] = CloudInit(seed=seed, **meta["cloud_init"])
