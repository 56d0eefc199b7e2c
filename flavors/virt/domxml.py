"""Libvirt domain XML: :func:`build` writes a :class:`VMSpec` in XML order, :func:`parse`
reads back everything ``build`` writes, and libvirt's own rendering of it, so VMs already
running on a host can be adopted.

Builder code is explicit and follows the document (Nova style): one function per part.
What libvirt adds on its own (controllers, addresses, aliases, the emulator path, a video
card for graphics, clock and lifecycle defaults) is ignored when parsing; anything else
the spec cannot express is rejected with :class:`UnsupportedXML` naming where it is, so
adopting a domain never silently loses a device.

What libvirt's XML has no room for (the guaranteed memory, which host devices were asked
for by resource name, cloud-init documents) is kept in ``<metadata>`` under
:data:`NAMESPACE`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from lxml import etree

from clustercore.errors import ValidationError
from flavors.virt.spec import (
    CloudInit,
    Cpu,
    CpuFeature,
    Dimm,
    Disk,
    Firmware,
    Graphics,
    HostDevice,
    Memory,
    Nic,
    NumaCell,
    Pin,
    Topology,
    VMSpec,
    Watchdog,
)

NAMESPACE = "urn:clustercore:vm:1"
NS = f"{{{NAMESPACE}}}"
SCHEMA = Path("/usr/share/libvirt/schemas/domain.rng")
SEED_TARGET = "sdz"
AGENT = "org.qemu.guest_agent.0"


class UnsupportedXML(ValidationError):
    """The domain XML holds something a VMSpec cannot express; ``field`` is its path."""

    def __init__(self, field: str, problem: str, value: Any = None) -> None:
        super().__init__("domain XML", field, problem, value)


class UnboundDevice(ValidationError):
    """A host device asked for by resource name has no concrete device yet."""

    def __init__(self, field: str, resource: str) -> None:
        super().__init__("vm", field, "asked for by resource name and not bound to a device yet; "
                         "allocate it on the host first (flavors.virt.devices)", resource)


# --------------------------------------------------------------------------- building


def _el(parent: etree._Element, tag: str, text: str | None = None, **attrib: str) -> etree._Element:
    node = etree.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrib.items()})
    if text is not None:
        node.text = text
    return node


def build(spec: VMSpec) -> str:
    """The domain XML of ``spec`` (every host device must be bound to an address)."""
    spec.check()
    root = etree.Element("domain", type=spec.domain_type)
    _el(root, "name", spec.name)
    _el(root, "uuid", spec.uuid)
    _metadata(root, spec)
    _memory(root, spec)
    _vcpus(root, spec)
    _os(root, spec)
    features = _el(root, "features")
    _el(features, "acpi")
    _el(features, "apic")
    if spec.firmware.secure_boot:
        _el(features, "smm", state="on")
    _cpu(root, spec)
    _el(root, "clock", offset=spec.clock)
    _devices(root, spec)
    return str(etree.tostring(root, pretty_print=True, encoding="unicode"))


def _metadata(root: etree._Element, spec: VMSpec) -> None:
    resources = [(i, d.resource) for i, d in enumerate(spec.hostdevs) if d.resource and d.kind != "usb"]
    resources_usb = [(i, d.resource) for i, d in enumerate(spec.hostdevs) if d.resource and d.kind == "usb"]
    vfs = [(i, n.resource) for i, n in enumerate(spec.nics) if n.resource]
    if not (spec.memory.guaranteed is not None or resources or resources_usb or vfs or spec.cloud_init):
        return
    vm = etree.SubElement(_el(root, "metadata"), f"{NS}vm", nsmap={"clustercore": NAMESPACE})
    if spec.memory.guaranteed is not None:
        _el(vm, f"{NS}guaranteed", str(spec.memory.guaranteed), unit="MiB")
    for i, name in resources + resources_usb:
        _el(vm, f"{NS}hostdev", index=str(i), resource=str(name))
    for i, name in vfs:
        _el(vm, f"{NS}vf", index=str(i), resource=str(name))
    if spec.cloud_init:
        ci = _el(vm, f"{NS}cloud-init")
        _el(ci, f"{NS}user-data", spec.cloud_init.user_data)
        _el(ci, f"{NS}meta-data", spec.cloud_init.meta_data)
        if spec.cloud_init.network_config is not None:
            _el(ci, f"{NS}network-config", spec.cloud_init.network_config)


def _memory(root: etree._Element, spec: VMSpec) -> None:
    mem = spec.memory
    if mem.maximum is not None:
        _el(root, "maxMemory", str(mem.maximum * 1024), slots=str(mem.slots), unit="KiB")
    _el(root, "memory", str(mem.size * 1024), unit="KiB")
    _el(root, "currentMemory", str(mem.size * 1024), unit="KiB")
    if mem.hugepages:
        _el(_el(_el(root, "memoryBacking"), "hugepages"), "page", size=str(mem.hugepages), unit="KiB")


def _vcpus(root: etree._Element, spec: VMSpec) -> None:
    vcpu = _el(root, "vcpu", str(spec.vcpu_max), placement="static")
    if spec.max_vcpus is not None:
        vcpu.set("current", str(spec.vcpus))
    if spec.pins:
        tune = _el(root, "cputune")
        for pin in spec.pins:
            _el(tune, "vcpupin", vcpu=str(pin.vcpu), cpuset=pin.cpuset)
    bound = [(i, c) for i, c in enumerate(spec.numa) if c.host_node is not None]
    if bound:
        tune = _el(root, "numatune")
        for i, cell in bound:
            _el(tune, "memnode", cellid=str(i), mode="strict", nodeset=str(cell.host_node))


def _os(root: etree._Element, spec: VMSpec) -> None:
    os_ = _el(root, "os")
    _el(os_, "type", "hvm", arch=spec.arch, machine=spec.machine)
    if spec.firmware.kind == "uefi":
        os_.set("firmware", "efi")
        if spec.firmware.secure_boot:
            fw = _el(os_, "firmware")
            _el(fw, "feature", enabled="yes", name="enrolled-keys")
            _el(fw, "feature", enabled="yes", name="secure-boot")
            _el(os_, "loader", secure="yes")


def _cpu(root: etree._Element, spec: VMSpec) -> None:
    if spec.cpu.mode == "default" and spec.topology is None and not spec.numa:
        return
    cpu = _el(root, "cpu")
    if spec.cpu.mode != "default":
        cpu.set("mode", spec.cpu.mode)
    if spec.cpu.mode == "custom":
        cpu.set("match", "exact")
        _el(cpu, "model", spec.cpu.model, fallback="forbid")
    if spec.topology is not None:
        t = spec.topology
        _el(cpu, "topology", sockets=str(t.sockets), dies="1", cores=str(t.cores), threads=str(t.threads))
    for feature in spec.cpu.features:
        _el(cpu, "feature", policy=feature.policy, name=feature.name)
    if spec.numa:
        numa = _el(cpu, "numa")
        for i, cell in enumerate(spec.numa):
            _el(numa, "cell", id=str(i), cpus=cell.cpus, memory=str(cell.memory * 1024), unit="KiB")


def _devices(root: etree._Element, spec: VMSpec) -> None:
    devices = _el(root, "devices")
    for disk in spec.disks:
        _disk(devices, disk)
    if spec.cloud_init is not None:
        _disk(devices, Disk(SEED_TARGET, spec.cloud_init.seed, device="cdrom", bus="sata", readonly=True))
    for i, nic in enumerate(spec.nics):
        _nic(devices, nic, f"nics[{i}]")
    if spec.serial:
        _el(_el(devices, "serial", type="pty"), "target", port="0")
        _el(_el(devices, "console", type="pty"), "target", type="serial", port="0")
    if spec.guest_agent:
        _el(_el(devices, "channel", type="unix"), "target", type="virtio", name=AGENT)
    for g in spec.graphics:
        graphics = _el(devices, "graphics", type=g.kind, autoport="yes", listen=g.listen)
        _el(graphics, "listen", type="address", address=g.listen)
    if spec.watchdog is not None:
        _el(devices, "watchdog", model=spec.watchdog.model, action=spec.watchdog.action)
    _el(devices, "memballoon", model="virtio" if spec.balloon else "none")
    if spec.rng:
        _el(_el(devices, "rng", model="virtio"), "backend", "/dev/urandom", model="random")
    if spec.tpm:
        tpm = _el(devices, "tpm", model="tpm-crb" if spec.q35 else "tpm-tis")
        _el(tpm, "backend", type="emulator", version="2.0")
    for i, dev in enumerate(spec.hostdevs):
        devices.append(hostdev_element(dev, f"hostdevs[{i}]"))
    for dimm in spec.memory.dimms:
        devices.append(dimm_element(dimm))


def _disk(devices: etree._Element, d: Disk) -> None:
    disk = _el(devices, "disk", type=d.kind, device=d.device)
    driver = _el(disk, "driver", name="qemu", type=d.format)
    if d.cache:
        driver.set("cache", d.cache)
    if d.io:
        driver.set("io", d.io)
    if d.discard:
        driver.set("discard", d.discard)
    if d.kind == "file":
        _el(disk, "source", file=d.source)
    elif d.kind == "block":
        _el(disk, "source", dev=d.source)
    else:
        source = _el(disk, "source", protocol=str(d.protocol), name=d.source)
        for host in d.hosts:
            name, _, port = host.rpartition(":")
            _el(source, "host", name=name, port=port)
    _el(disk, "target", dev=d.target, bus=d.bus)
    if d.boot is not None:
        _el(disk, "boot", order=str(d.boot))
    if d.readonly:
        _el(disk, "readonly")
    if d.shareable:
        _el(disk, "shareable")
    if d.serial:
        _el(disk, "serial", d.serial)


def disk_element(d: Disk) -> str:
    """One ``<disk>`` (for hotplug)."""
    holder = etree.Element("devices")
    _disk(holder, d)
    return str(etree.tostring(holder[0], encoding="unicode"))


def _pci_address(parent: etree._Element, address: str, typed: bool) -> None:
    """``typed``: an interface's source address says ``type='pci'``, a hostdev's must not."""
    domain, bus, rest = address.split(":")
    slot, function = rest.split(".")
    node = _el(parent, "address", domain=f"0x{domain}", bus=f"0x{bus}", slot=f"0x{slot}", function=f"0x{function}")
    if typed:
        node.set("type", "pci")


def _nic(devices: etree._Element, n: Nic, at: str) -> None:
    nic = _el(devices, "interface", type=n.kind)
    if n.kind == "hostdev":
        nic.set("managed", "yes")
    if n.mac:
        _el(nic, "mac", address=n.mac)
    if n.kind == "bridge":
        _el(nic, "source", bridge=str(n.source))
    elif n.kind == "network":
        _el(nic, "source", network=str(n.source))
    elif n.kind == "direct":
        _el(nic, "source", dev=str(n.source), mode=str(n.mode))
    elif n.kind == "hostdev":
        if n.source is None:
            raise UnboundDevice(f"{at}.source", str(n.resource))
        _pci_address(_el(nic, "source"), str(n.source), typed=True)
    elif n.kind == "vhostuser":
        _el(nic, "source", type="unix", path=str(n.source), mode=str(n.mode))
    if n.kind != "hostdev":
        _el(nic, "model", type=n.model)


def nic_element(n: Nic) -> str:
    """One ``<interface>`` (for hotplug)."""
    holder = etree.Element("devices")
    _nic(holder, n, "nic")
    return str(etree.tostring(holder[0], encoding="unicode"))


def hostdev_element(d: HostDevice, at: str = "hostdev") -> etree._Element:
    """One ``<hostdev>`` (also for hotplug)."""
    if d.kind == "usb":
        vendor, product = d.vendor, d.product
        if vendor is None and d.resource:
            vendor, product = d.resource.split("/")[1].split(":")
        dev = etree.Element("hostdev", mode="subsystem", type="usb", managed="yes")
        source = _el(dev, "source")
        _el(source, "vendor", id=f"0x{vendor}")
        _el(source, "product", id=f"0x{product}")
        return dev
    if d.address is None:
        raise UnboundDevice(f"{at}.address", str(d.resource))
    if d.kind == "pci":
        dev = etree.Element("hostdev", mode="subsystem", type="pci", managed="yes")
        _pci_address(_el(dev, "source"), d.address, typed=False)
        return dev
    dev = etree.Element("hostdev", mode="subsystem", type="mdev", model="vfio-pci")
    _el(_el(dev, "source"), "address", uuid=d.address)
    return dev


def dimm_element(d: Dimm) -> etree._Element:
    dev = etree.Element("memory", model="dimm")
    target = _el(dev, "target")
    _el(target, "size", str(d.size * 1024), unit="KiB")
    _el(target, "node", str(d.node))
    return dev


@functools.cache
def _schema() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(SCHEMA)))


def validate(xml: str) -> None:
    """Check ``xml`` against libvirt's RelaxNG schema; raise UnsupportedXML with its log."""
    schema = _schema()
    if not schema.validate(etree.fromstring(xml.encode())):
        raise UnsupportedXML("<domain>", f"does not validate against {SCHEMA}: {schema.error_log.last_error}")


# --------------------------------------------------------------------------- parsing

_UNITS = {"b": 1, "bytes": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
          "g": 1024**3, "gib": 1024**3, "gb": 1000**3, "t": 1024**4, "tib": 1024**4, "tb": 1000**4}
# What libvirt adds by itself or what the spec leaves to libvirt's defaults.
_IGNORED_TOP = {"on_poweroff", "on_reboot", "on_crash", "pm", "resource", "seclabel", "genid", "title",
                "description", "vcpus", "iothreads"}
_IGNORED_DEVICES = {"emulator", "controller", "input", "video", "audio"}
_IGNORED_FEATURES = {"acpi", "apic", "pae", "vmport", "smm", "vmcoreinfo"}


def _mib(node: etree._Element, where: str) -> int:
    unit = (node.get("unit") or "KiB").lower()
    if unit not in _UNITS:
        raise UnsupportedXML(where, "unknown unit", unit)
    value = int((node.text or "0").strip()) * _UNITS[unit]
    if value % (1024**2):
        raise UnsupportedXML(where, "memory must be a whole number of MiB", node.text)
    return value // (1024**2)


def _only(parent: etree._Element | None, known: set[str], where: str) -> None:
    """Reject any child of ``parent`` not in ``known``, naming where it is."""
    for node in parent if parent is not None else ():
        if isinstance(node.tag, str) and node.tag not in known:  # comments have no str tag
            raise UnsupportedXML(f"{where}/{node.tag}", "not supported by the VM spec",
                                 etree.tostring(node, encoding="unicode")[:200])


def parse(xml: str) -> VMSpec:
    """The :class:`VMSpec` of a domain XML (ours, or libvirt's rendering of any domain)."""
    try:
        root = etree.fromstring(xml.encode())
    except etree.XMLSyntaxError as exc:
        raise UnsupportedXML("<domain>", f"not well-formed XML: {exc}") from None
    if root.tag != "domain":
        raise UnsupportedXML("/", "the root element must be <domain>", root.tag)
    _only(root, {"name", "uuid", "metadata", "maxMemory", "memory", "currentMemory", "memoryBacking", "vcpu",
                 "cputune", "numatune", "os", "features", "cpu", "clock", "devices"} | _IGNORED_TOP, "/domain")
    fields: dict[str, Any] = {"name": _text(root, "name"), "uuid": _text(root, "uuid")}
    domain_type = root.get("type", "kvm")
    if domain_type not in ("kvm", "qemu"):
        raise UnsupportedXML("/domain/@type", "only kvm and qemu domains", domain_type)
    fields["domain_type"] = domain_type
    clock = root.find("clock")
    if clock is not None:
        offset = clock.get("offset", "utc")
        if offset not in ("utc", "localtime"):
            raise UnsupportedXML("/domain/clock/@offset", "only utc and localtime clocks", offset)
        fields["clock"] = offset  # its timers are tuning libvirt picks by itself
    meta = _read_metadata(root)
    fields["memory"] = _read_memory(root, meta)
    _read_vcpus(root, fields)
    _read_os(root, fields)
    _only(root.find("features"), _IGNORED_FEATURES, "/domain/features")
    _read_cpu(root, fields)
    _read_devices(root, fields, meta)
    try:
        return VMSpec(**fields).check()
    except ValidationError as exc:
        raise UnsupportedXML(exc.field, exc.problem, exc.value) from None
    except TypeError as exc:
        raise UnsupportedXML("/domain", str(exc)) from None


def _text(root: etree._Element, path: str) -> str:
    node = root.find(path)
    if node is None or not (node.text or "").strip():
        raise UnsupportedXML(f"/domain/{path}", "is required")
    return str(node.text).strip()


def _read_metadata(root: etree._Element) -> dict[str, Any]:
    meta: dict[str, Any] = {"resources": {}, "vfs": {}}
    vm = root.find(f"metadata/{NS}vm")
    if vm is None:
        return meta
    guaranteed = vm.find(f"{NS}guaranteed")
    if guaranteed is not None:
        meta["guaranteed"] = int(str(guaranteed.text))
    for dev in vm.findall(f"{NS}hostdev"):
        meta["resources"][int(dev.get("index", "-1"))] = dev.get("resource")
    for dev in vm.findall(f"{NS}vf"):
        meta["vfs"][int(dev.get("index", "-1"))] = dev.get("resource")
    ci = vm.find(f"{NS}cloud-init")
    if ci is not None:
        net = ci.find(f"{NS}network-config")
        meta["cloud_init"] = {"user_data": ci.findtext(f"{NS}user-data") or "",
                              "meta_data": ci.findtext(f"{NS}meta-data") or "",
                              "network_config": None if net is None else (net.text or "")}
    return meta


def _read_memory(root: etree._Element, meta: dict[str, Any]) -> Memory:
    memory = root.find("memory")
    if memory is None:
        raise UnsupportedXML("/domain/memory", "is required")
    size = _mib(memory, "/domain/memory")
    # currentMemory (a balloon target) is runtime state, not the definition.
    maximum = slots = None
    max_node = root.find("maxMemory")
    if max_node is not None:
        maximum, slots = _mib(max_node, "/domain/maxMemory"), int(max_node.get("slots", "0"))
    hugepages = None
    backing = root.find("memoryBacking")
    if backing is not None:
        for node in backing:
            if isinstance(node.tag, str) and node.tag != "hugepages":
                raise UnsupportedXML(f"/domain/memoryBacking/{node.tag}", "not supported by the VM spec")
        pages = backing.findall("hugepages/page")
        if len(pages) > 1:
            raise UnsupportedXML("/domain/memoryBacking/hugepages", "one page size per VM")
        if pages:
            kib = int(pages[0].get("size", "0")) * _UNITS[(pages[0].get("unit") or "KiB").lower()] // 1024
            hugepages = kib
        elif backing.find("hugepages") is not None:
            hugepages = 2048  # the host's default size
    dimms = tuple(Dimm(_mib(d.find("target/size"), "/domain/devices/memory/target/size"),  # type: ignore[arg-type]
                       int(d.findtext("target/node") or "0"))
                  for d in root.findall("devices/memory"))
    return Memory(size=size, maximum=maximum, slots=slots or 0, dimms=dimms, hugepages=hugepages,
                  guaranteed=meta.get("guaranteed"))


def _read_vcpus(root: etree._Element, fields: dict[str, Any]) -> None:
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


def _read_os(root: etree._Element, fields: dict[str, Any]) -> None:
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


def _read_cpu(root: etree._Element, fields: dict[str, Any]) -> None:
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
    fields["numa"] = tuple(NumaCell(str(c.get("cpus")), _mib(c, "/domain/cpu/numa/cell") if c.text else
                                    int(c.get("memory", "0")) * _UNITS[(c.get("unit") or "KiB").lower()] // 1024**2,
                                    nodes.get(int(c.get("id", "0"))))
                           for c in cells)


def _read_devices(root: etree._Element, fields: dict[str, Any], meta: dict[str, Any]) -> None:
    devices = root.find("devices")
    if devices is None:
        devices = etree.Element("devices")
    known = {"disk", "interface", "serial", "console", "channel", "graphics", "watchdog", "memballoon", "rng", "tpm",
             "hostdev", "memory"} | _IGNORED_DEVICES
    disks: list[Disk] = []
    nics: list[Nic] = []
    graphics: list[Graphics] = []
    hostdevs: list[HostDevice] = []
    fields["serial"] = fields["guest_agent"] = fields["rng"] = fields["tpm"] = False
    fields["balloon"] = True  # libvirt adds a virtio balloon unless told "none"
    seed: str | None = None
    _only(devices, known, "/domain/devices")
    for node in devices:
        if not isinstance(node.tag, str) or node.tag in _IGNORED_DEVICES:
            continue
        at = f"/domain/devices/{node.tag}"
        if node.tag == "disk":
            disk = _read_disk(node, f"{at}[{len(disks) + 1}]")
            if disk.target == SEED_TARGET and "cloud_init" in meta:
                seed = disk.source
            else:
                disks.append(disk)
        elif node.tag == "interface":
            nics.append(_read_nic(node, f"{at}[{len(nics) + 1}]", meta["vfs"].get(len(nics))))
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


def _read_disk(node: etree._Element, at: str) -> Disk:
    kind, device = node.get("type", "file"), node.get("device", "disk")
    if kind not in ("file", "block", "network") or device not in ("disk", "cdrom"):
        raise UnsupportedXML(at, f"disk type {kind} device {device} is not supported")
    driver = node.find("driver")
    source = node.find("source")
    target = node.find("target")
    if target is None or source is None:
        raise UnsupportedXML(at, "a disk needs a source and a target (empty CD-ROM drives are not supported)")
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
        bus=target.get("bus", "virtio"), format=driver.get("type", "raw") if driver is not None else "raw",
        cache=driver.get("cache") if driver is not None else None,
        io=driver.get("io") if driver is not None else None,
        discard=driver.get("discard") if driver is not None else None,
        readonly=node.find("readonly") is not None, shareable=node.find("shareable") is not None,
        boot=int(boot.get("order", "1")) if boot is not None else None,
        serial=node.findtext("serial"),
    )


def _pci(source: etree._Element | None, at: str) -> str:
    address = source.find("address") if source is not None else None
    if address is None:
        raise UnsupportedXML(f"{at}/source/address", "is required")
    parts = [int(address.get(k, "0"), 16) for k in ("domain", "bus", "slot", "function")]
    return f"{parts[0]:04x}:{parts[1]:02x}:{parts[2]:02x}.{parts[3]:x}"


def _read_nic(node: etree._Element, at: str, resource: str | None) -> Nic:
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
        src = _pci(source, at)
    elif kind == "vhostuser":
        src, mode = (source.get("path"), source.get("mode")) if source is not None else (None, None)
    else:
        src = None
    return Nic(kind=kind, source=src, model=model.get("type", "virtio") if model is not None else "virtio",
               mac=mac.get("address") if mac is not None else None, mode=mode, resource=resource)


def read_hostdev(node: etree._Element, at: str, resource: str | None) -> HostDevice:
    kind = node.get("type")
    if node.get("mode", "subsystem") != "subsystem" or kind not in ("pci", "usb", "mdev"):
        raise UnsupportedXML(at, f"hostdev {node.get('mode')}/{kind} is not supported")
    source = node.find("source")
    if kind == "pci":
        return HostDevice("pci", address=_pci(source, at), resource=resource)
    if kind == "mdev":
        address = source.find("address") if source is not None else None
        return HostDevice("mdev", address=address.get("uuid") if address is not None else None, resource=resource)
    vendor = node.find("source/vendor")
    product = node.find("source/product")
    if vendor is None or product is None:
        raise UnsupportedXML(f"{at}/source", "USB devices by vendor and product only")
    v, p = f"{int(str(vendor.get('id')), 16):04x}", f"{int(str(product.get('id')), 16):04x}"
    if resource == f"usb/{v}:{p}":
        return HostDevice("usb", resource=resource)
    return HostDevice("usb", vendor=v, product=p, resource=resource)
