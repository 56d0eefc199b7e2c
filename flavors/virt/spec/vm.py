"""The VM: :class:`VMSpec`, its derived properties and the rules that join several fields."""

from __future__ import annotations

import re
import uuid as uuidlib
from typing import Any

import attrs

from clustercore.errors import ValidationError
from clustercore.fields import attrs_to_dict, bounded, choices, pattern, read_attrs
from clustercore.resources import Resources
from flavors.virt.spec.parts import (
    MAX_VCPUS,
    NAME_RE,
    PATH_RE,
    PCI_RE,
    UUID_RE,
    CloudInit,
    Cpu,
    Disk,
    Firmware,
    Graphics,
    HostDevice,
    KernelBoot,
    Memory,
    Nic,
    NumaCell,
    Pin,
    Topology,
    Watchdog,
    cpuset,
    endpoint_problem,
    hugepage_resource,
)

KIND = "vm"

# --------------------------------------------------------------------------- the VM


def _by_target(disks: Any) -> tuple[Disk, ...]:
    """Disks in target order: libvirt groups them by bus, and order carries no meaning
    (boot order is each disk's ``boot``)."""
    return tuple(sorted(disks, key=lambda d: d.target))


@attrs.frozen
class VMSpec:
    """A virtual machine, everything the flavor needs to define and run it.

    ``boot`` is a direct kernel boot (else the firmware boots from the disks).
    ``console_log`` sends the serial console to that host file, appended to (a
    migration's destination reopens the same file), instead of a pty; it needs
    ``serial``."""

    name: str = attrs.field(metadata=pattern(NAME_RE))
    uuid: str = attrs.field(metadata=pattern(UUID_RE))
    memory: Memory
    vcpus: int = attrs.field(default=1, metadata=bounded(1, MAX_VCPUS))
    max_vcpus: int | None = attrs.field(default=None, metadata=bounded(1, MAX_VCPUS))
    topology: Topology | None = None
    cpu: Cpu = Cpu()  # noqa: RUF009 (frozen: one shared default is safe)
    numa: tuple[NumaCell, ...] = ()
    pins: tuple[Pin, ...] = ()
    domain_type: str = attrs.field(default="kvm", metadata=choices("kvm", "qemu"))
    arch: str = attrs.field(default="x86_64", metadata=choices("x86_64"))
    machine: str = attrs.field(default="pc", metadata=pattern(re.compile(r"\A(pc|q35)([A-Za-z0-9_.-]{0,60})\Z")))
    firmware: Firmware = Firmware()  # noqa: RUF009 (frozen, as above)
    boot: KernelBoot | None = None
    clock: str = attrs.field(default="utc", metadata=choices("utc", "localtime"))
    disks: tuple[Disk, ...] = attrs.field(default=(), converter=_by_target)
    nics: tuple[Nic, ...] = ()
    graphics: tuple[Graphics, ...] = ()
    serial: bool = True
    console_log: str | None = attrs.field(default=None, metadata=pattern(PATH_RE))
    guest_agent: bool = False
    balloon: bool = True
    watchdog: Watchdog | None = None
    rng: bool = False
    tpm: bool = False
    hostdevs: tuple[HostDevice, ...] = ()
    cloud_init: CloudInit | None = None

    # ------------------------------------------------------------------ derived

    def __attrs_post_init__(self) -> None:
        if self.max_vcpus == self.vcpus:  # no room to hotplug: the same VM as without a maximum
            object.__setattr__(self, "max_vcpus", None)

    @property
    def q35(self) -> bool:
        """The machine type is a q35 chipset (``q35``, ``pc-q35-7.2``...)."""
        return "q35" in self.machine

    @property
    def vcpu_max(self) -> int:
        return self.max_vcpus or self.vcpus

    @property
    def passthrough(self) -> bool:
        """True when a host device is passed through (such a VM cannot live-migrate)."""
        return bool(self.hostdevs) or any(n.kind == "hostdev" for n in self.nics)

    @property
    def migratable(self) -> bool:
        return not self.passthrough and self.cpu.mode != "host-passthrough"

    def device_requests(self) -> dict[str, int]:
        """Extended resources asked for by name (``pci/...``, ``usb/...``, ``mdev/...``)."""
        wanted: dict[str, int] = {}
        names = [d.resource for d in self.hostdevs] + [n.resource for n in self.nics]
        for name in names:
            if name:
                wanted[name] = wanted.get(name, 0) + 1
        return wanted

    def requests(self) -> Resources:
        """What the scheduler counts: vCPUs, memory (MiB), hugepages (``hugepages-2M`` or
        ``hugepages-1G``, in pages) and devices asked for by resource name."""
        extended = self.device_requests()
        if self.memory.hugepages:
            page_mib = self.memory.hugepages // 1024
            extended[hugepage_resource(self.memory.hugepages)] = -(-self.memory.size // page_mib)
        return Resources(self.vcpus, self.memory.size, extended)

    # ------------------------------------------------------------------ rules across fields

    def check(self) -> VMSpec:
        """Raise :class:`ValidationError` naming the field when a field is out of its
        bounds or patterns (as :meth:`from_dict` checks them: objects built in Python and
        parsed domain XML go through the same checks) or when fields disagree."""
        read_attrs(VMSpec, self.to_dict(), "", "vm")
        return self._check_rules()

    def _check_rules(self) -> VMSpec:
        def fail(field: str, problem: str, value: object) -> ValidationError:
            return ValidationError("vm", field, problem, value)

        if self.max_vcpus is not None and self.max_vcpus < self.vcpus:
            raise fail("max_vcpus", f"must be >= vcpus ({self.vcpus})", self.max_vcpus)
        if self.topology is not None and self.topology.total != self.vcpu_max:
            raise fail("topology", f"sockets*cores*threads must equal the maximum vCPU count ({self.vcpu_max})",
                       attrs.asdict(self.topology))
        if self.cpu.mode == "custom" and not self.cpu.model:
            raise fail("cpu.model", "is required with mode custom", None)
        if self.cpu.mode != "custom" and (self.cpu.model or self.cpu.features):
            raise fail("cpu.mode", "only mode custom takes a model and features", self.cpu.mode)
        features = [f.name for f in self.cpu.features]
        if len(set(features)) != len(features):
            raise fail("cpu.features", "names a feature twice", features)
        mem = self.memory
        if mem.maximum is not None:
            if mem.maximum < mem.size:
                raise fail("memory.maximum", f"must be >= memory.size ({mem.size})", mem.maximum)
            if mem.slots < 1:
                raise fail("memory.slots", "memory hotplug needs at least one slot", mem.slots)
            if not self.numa:
                raise fail("numa", "memory hotplug (memory.maximum) needs at least one guest NUMA cell", ())
        elif mem.slots:
            raise fail("memory.slots", "slots need memory.maximum", mem.slots)
        if mem.guaranteed is not None and mem.guaranteed > mem.size:
            raise fail("memory.guaranteed", f"must be <= memory.size ({mem.size})", mem.guaranteed)
        if mem.hugepages is not None and mem.size * 1024 % mem.hugepages:
            raise fail("memory.size", f"must be a multiple of the hugepage size ({mem.hugepages} KiB)", mem.size)
        if self.numa:
            seen: set[int] = set()
            for i, cell in enumerate(self.numa):
                cpus = cpuset(cell.cpus)
                if seen & cpus or max(cpus) >= self.vcpu_max:
                    raise fail(f"numa[{i}].cpus", f"must be distinct vCPUs below {self.vcpu_max}", cell.cpus)
                seen |= cpus
            if seen != set(range(self.vcpu_max)):
                raise fail("numa", f"cells must cover every vCPU 0-{self.vcpu_max - 1}", [c.cpus for c in self.numa])
            if sum(c.memory for c in self.numa) + sum(d.size for d in mem.dimms) != mem.size:
                raise fail("numa", f"cell memory plus DIMMs must add up to memory.size ({mem.size})",
                           [c.memory for c in self.numa])
        if len(mem.dimms) > mem.slots:
            raise fail("memory.dimms", f"more DIMMs than slots ({mem.slots})", len(mem.dimms))
        for i, dimm in enumerate(mem.dimms):
            if dimm.node >= len(self.numa):
                raise fail(f"memory.dimms[{i}].node", f"no guest NUMA cell {dimm.node}", dimm.node)
        pinned = [p.vcpu for p in self.pins]
        if len(set(pinned)) != len(pinned) or any(v >= self.vcpu_max for v in pinned):
            raise fail("pins", f"each vCPU below {self.vcpu_max} at most once", pinned)
        if self.firmware.secure_boot and self.firmware.kind != "uefi":
            raise fail("firmware.secure_boot", "needs firmware kind uefi", True)
        if self.firmware.secure_boot and not self.q35:
            raise fail("machine", "secure boot needs a q35 machine", self.machine)
        if self.console_log is not None and not self.serial:
            raise fail("console_log", "needs serial (the serial console is what goes to the file)",
                       self.console_log)
        targets = [d.target for d in self.disks]
        if len(set(targets)) != len(targets):
            raise fail("disks", "two disks share a target", targets)
        volumes = [d.volume for d in self.disks if d.volume is not None]
        if len(set(volumes)) != len(volumes):
            raise fail("disks", "two disks are the same volume", volumes)
        for i, d in enumerate(self.disks):
            self._check_disk(d, f"disks[{i}]", fail)
        if self.cloud_init is not None and "sdz" in targets:
            raise fail("disks", "target sdz is kept for the cloud-init seed", targets)
        macs = [n.mac for n in self.nics if n.mac]
        if len(set(macs)) != len(macs):
            raise fail("nics", "two NICs share a MAC address", macs)
        for i, n in enumerate(self.nics):
            self._check_nic(n, f"nics[{i}]", fail)
        for i, h in enumerate(self.hostdevs):
            self._check_hostdev(h, f"hostdevs[{i}]", fail)
        devices = [h.address or (h.vendor, h.product) for h in self.hostdevs if h.address or h.vendor]
        devices += [n.source for n in self.nics if n.kind == "hostdev" and n.source]
        if len(set(devices)) != len(devices):
            raise fail("hostdevs", "a host device is passed through twice (hostdevs and SR-IOV NICs)", devices)
        return self

    def _check_disk(self, d: Disk, at: str, fail: Any) -> None:
        if d.kind == "network":
            if d.protocol is None or not d.hosts:
                raise fail(f"{at}.protocol", "network disks need a protocol and hosts", d.protocol)
            if d.protocol == "iscsi" and len(d.hosts) != 1:
                raise fail(f"{at}.hosts", "an iSCSI disk has one portal", list(d.hosts))
        elif d.protocol is not None or d.hosts:
            raise fail(f"{at}.protocol", f"only network disks take a protocol and hosts (kind is {d.kind})",
                       d.protocol)
        elif not PATH_RE.match(d.source):
            raise fail(f"{at}.source", "must be an absolute path", d.source)
        if d.device == "cdrom" and (d.bus == "virtio" or not d.readonly):
            raise fail(f"{at}.bus", "a cdrom is read-only on a sata or scsi bus", d.bus)
        if d.storage is not None and d.volume is None:
            raise fail(f"{at}.storage", "only a cluster volume (volume) has a storage", d.storage)
        if d.volume is not None and d.kind != "file":
            raise fail(f"{at}.volume", f"a cluster volume is a file disk (kind is {d.kind})", d.volume)
        want = {"virtio": "vd", "scsi": "sd", "sata": "sd"}[d.bus]
        if not d.target.startswith(want):
            raise fail(f"{at}.target", f"a {d.bus} disk is named {want}*", d.target)

    def _check_nic(self, n: Nic, at: str, fail: Any) -> None:
        if n.resource is not None and (n.kind != "hostdev" or not n.resource.startswith("pci/")):
            raise fail(f"{at}.resource", "only an SR-IOV VF (kind hostdev) is asked for as pci/VVVV:PPPP",
                       n.resource)
        if n.kind == "user":
            if n.source is not None:
                raise fail(f"{at}.source", "user networking has no source", n.source)
        elif n.source is None and n.resource is None:
            raise fail(f"{at}.source", f"is required for kind {n.kind}", None)
        if n.kind == "hostdev" and n.source is not None and not PCI_RE.match(n.source):
            raise fail(f"{at}.source", "an SR-IOV VF's source is its PCI address", n.source)
        if n.kind == "vhostuser" and not PATH_RE.match(n.source or ""):
            raise fail(f"{at}.source", "a vhost-user socket is an absolute path", n.source)
        if n.kind == "udp":
            problem = endpoint_problem(n.source or "")
            if problem is not None:
                raise fail(f"{at}.source", f"a udp NIC's peer: {problem}", n.source)
            if n.local is None:
                raise fail(f"{at}.local", "is required for kind udp (this NIC's own ADDR:PORT)", None)
        elif n.local is not None:
            raise fail(f"{at}.local", f"only a udp NIC has a local endpoint (kind is {n.kind})", n.local)
        modes = {"direct": {"bridge", "vepa", "private", "passthrough"}, "vhostuser": {"client", "server"}}
        allowed = modes.get(n.kind, set())
        if (n.mode is None) == bool(allowed) or (n.mode is not None and n.mode not in allowed):
            raise fail(f"{at}.mode", f"kind {n.kind} takes {'/'.join(sorted(allowed)) or 'no mode'}", n.mode)
        if n.kind in ("hostdev", "vhostuser") and n.model != "virtio":
            raise fail(f"{at}.model", f"kind {n.kind} has no emulated model", n.model)

    def _check_hostdev(self, h: HostDevice, at: str, fail: Any) -> None:
        if h.resource is not None and not h.resource.startswith(h.kind + "/"):
            raise fail(f"{at}.resource", f"a {h.kind} device is asked for as {h.kind}/...", h.resource)
        if h.kind == "usb":
            if h.address is not None:
                raise fail(f"{at}.address", "USB devices are chosen by vendor and product", h.address)
            if (h.vendor is None) != (h.product is None) or (h.vendor is None) == (h.resource is None):
                raise fail(f"{at}.vendor", "needs vendor and product, or else a resource", h.vendor)
            if h.vendor == "0000":
                raise fail(f"{at}.vendor", "USB vendor id 0 is not a device", h.vendor)
            return
        if h.vendor is not None or h.product is not None:
            raise fail(f"{at}.vendor", "only USB devices take vendor and product", h.vendor)
        if h.address is None and h.resource is None:
            raise fail(f"{at}.address", "needs an address or a resource", None)
        if h.address is not None:
            pattern = PCI_RE if h.kind == "pci" else UUID_RE
            if not pattern.match(h.address):
                raise fail(f"{at}.address", f"not a {h.kind} address", h.address)

    # ------------------------------------------------------------------ dicts

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = attrs_to_dict(self)
        return out

    @classmethod
    def from_dict(cls, data: object, path: str = "") -> VMSpec:
        spec = read_attrs(cls, data, path, "vm")
        return spec._check_rules()

    @classmethod
    def new(cls, name: str, memory: int, vcpus: int = 1, **fields: Any) -> VMSpec:
        """A VM with a fresh uuid (fields as keyword arguments, parts as objects)."""
        return cls(name=name, uuid=str(uuidlib.uuid4()), memory=Memory(memory), vcpus=vcpus, **fields).check()
