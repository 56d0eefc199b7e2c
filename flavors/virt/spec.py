"""What a virtual machine is: ``VMSpec`` and its parts, frozen attrs value objects.

A VM workload carries its spec as a plain dict in ``Workload.spec`` (JSON in the store);
:meth:`VMSpec.from_dict` reads it back, naming the dotted field of anything wrong
(``disks[1].bus: must be one of virtio, scsi, sata``), and :meth:`VMSpec.check` enforces
the rules that join several fields (topology against vCPUs, NUMA cells against memory...).

Units: memory in MiB, hugepage sizes in KiB (as the kernel names pools: 2048, 1048576).

Host devices are asked for either by address (``0000:65:00.0``: that exact device, so the
VM is pinned to its host) or by resource name (``pci/10de:1eb8``, ``usb/046d:c52b``,
``mdev/nvidia-63``): any free one of that kind, chosen when the VM is bound to a host
(:mod:`flavors.virt.devices`). SR-IOV virtual functions are NICs of kind ``hostdev``,
asked for the same two ways.
"""

from __future__ import annotations

import re
import types
import typing
import uuid as uuidlib
from collections.abc import Mapping
from typing import Any, TypeVar

import attrs

from clustercore.errors import ValidationError
from clustercore.model import Reader, Resources

KIND = "vm"
T = TypeVar("T")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
PCI_RE = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
HEX4_RE = re.compile(r"^[0-9a-f]{4}$")
RESOURCE_RE = re.compile(r"^(pci|usb)/[0-9a-f]{4}:[0-9a-f]{4}$|^mdev/[A-Za-z0-9_.-]+$")
CPUSET_RE = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
TARGET_RE = re.compile(r"^(vd|sd|hd)[a-z]{1,2}$")
WORD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
PATH_RE = re.compile(r"^/[^\s<>&'\"]*$")


def _choices(*values: str) -> dict[str, Any]:
    return {"choices": values}


def _pattern(regex: re.Pattern[str]) -> dict[str, Any]:
    return {"pattern": regex}


def _minimum(value: int) -> dict[str, Any]:
    return {"minimum": value}


def canonical_cpuset(text: str) -> str:
    """A cpuset as libvirt writes it: sorted, runs as ranges (``"3,2,0-1"`` -> ``"0-3"``)."""
    if not isinstance(text, str) or not CPUSET_RE.match(text):
        return text  # left for validation to report
    cpus = sorted(cpuset(text))
    runs: list[str] = []
    start = prev = cpus[0]
    for cpu in [*cpus[1:], None]:
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if cpu is not None:
            start = prev = cpu
    return ",".join(runs)


# --------------------------------------------------------------------------- parts


@attrs.frozen
class Topology:
    """Guest CPU topology; ``sockets * cores * threads`` is the maximum vCPU count."""

    sockets: int = attrs.field(default=1, metadata=_minimum(1))
    cores: int = attrs.field(default=1, metadata=_minimum(1))
    threads: int = attrs.field(default=1, metadata=_minimum(1))

    @property
    def total(self) -> int:
        return self.sockets * self.cores * self.threads


@attrs.frozen
class CpuFeature:
    name: str = attrs.field(metadata=_pattern(WORD_RE))
    policy: str = attrs.field(default="require", metadata=_choices("require", "disable", "optional", "force",
                                                                    "forbid"))


@attrs.frozen
class Cpu:
    """``default`` (the hypervisor's baseline model: runs and migrates anywhere),
    ``host-model`` (this host's CPU, migratable to alike hosts), ``host-passthrough``
    (fastest, pins the VM to identical hosts) or ``custom`` with a named ``model`` and
    ``features`` (for a cluster-wide baseline)."""

    mode: str = attrs.field(default="default", metadata=_choices("default", "host-model", "host-passthrough",
                                                                 "custom"))
    model: str | None = attrs.field(default=None, metadata=_pattern(WORD_RE))
    features: tuple[CpuFeature, ...] = ()


@attrs.frozen
class NumaCell:
    """A guest NUMA cell: its vCPUs (a cpuset such as ``0-3``), its memory (MiB), and
    optionally the host node whose memory backs it (strict)."""

    cpus: str = attrs.field(converter=canonical_cpuset, metadata=_pattern(CPUSET_RE))
    memory: int = attrs.field(metadata=_minimum(1))
    host_node: int | None = attrs.field(default=None, metadata=_minimum(0))


@attrs.frozen
class Pin:
    """vCPU ``vcpu`` runs only on the host CPUs of ``cpuset``."""

    vcpu: int = attrs.field(metadata=_minimum(0))
    cpuset: str = attrs.field(converter=canonical_cpuset, metadata=_pattern(CPUSET_RE))


@attrs.frozen
class Dimm:
    """Memory hotplugged into a running VM: ``size`` MiB on guest NUMA cell ``node``."""

    size: int = attrs.field(metadata=_minimum(1))
    node: int = attrs.field(default=0, metadata=_minimum(0))


@attrs.frozen
class Memory:
    """``size`` is the memory the VM boots with (MiB). ``maximum`` and ``slots`` allow
    DIMM hotplug up to ``maximum``; ``hugepages`` backs the memory with pages of that size
    (KiB); ``guaranteed`` is the part that must be physically there (the rest may be
    overcommitted and ballooned; defaults to all of it). ``size`` includes the ``dimms``
    hotplugged so far; the NUMA cells hold the rest."""

    size: int = attrs.field(metadata=_minimum(1))
    maximum: int | None = attrs.field(default=None, metadata=_minimum(1))
    slots: int = attrs.field(default=0, metadata=_minimum(0))
    dimms: tuple[Dimm, ...] = ()
    hugepages: int | None = attrs.field(default=None, metadata=_choices("2048", "1048576"))
    guaranteed: int | None = attrs.field(default=None, metadata=_minimum(0))


@attrs.frozen
class Firmware:
    kind: str = attrs.field(default="bios", metadata=_choices("bios", "uefi"))
    secure_boot: bool = False


@attrs.frozen
class Disk:
    """A disk or CD-ROM. ``source`` is a path (``file``, ``block``) or, for ``network``,
    ``pool/image`` (rbd) or ``iqn.../lun`` (iscsi) on ``hosts`` (``name:port``)."""

    target: str = attrs.field(metadata=_pattern(TARGET_RE))
    source: str = attrs.field(metadata=_pattern(re.compile(r"^[^\s<>&'\"]+$")))
    kind: str = attrs.field(default="file", metadata=_choices("file", "block", "network"))
    protocol: str | None = attrs.field(default=None, metadata=_choices("rbd", "iscsi"))
    hosts: tuple[str, ...] = attrs.field(default=(), metadata=_pattern(re.compile(r"^[A-Za-z0-9.-]+:\d{1,5}$")))
    device: str = attrs.field(default="disk", metadata=_choices("disk", "cdrom"))
    bus: str = attrs.field(default="virtio", metadata=_choices("virtio", "scsi", "sata"))
    format: str = attrs.field(default="raw", metadata=_choices("raw", "qcow2"))
    cache: str | None = attrs.field(default=None, metadata=_choices("none", "writeback", "writethrough",
                                                                     "directsync", "unsafe"))
    io: str | None = attrs.field(default=None, metadata=_choices("native", "threads", "io_uring"))
    discard: str | None = attrs.field(default=None, metadata=_choices("unmap", "ignore"))
    readonly: bool = False
    shareable: bool = False
    boot: int | None = attrs.field(default=None, metadata=_minimum(1))
    serial: str | None = attrs.field(default=None, metadata=_pattern(re.compile(r"^[A-Za-z0-9_-]{1,20}$")))


@attrs.frozen
class Nic:
    """A NIC. ``source`` by kind: ``bridge`` a bridge, ``network`` a libvirt network,
    ``direct`` a host interface (macvtap, ``mode`` bridge/vepa/private/passthrough),
    ``hostdev`` an SR-IOV VF (its PCI address, or ``resource`` such as ``pci/8086:154c``
    and the address once bound),
    ``vhostuser`` a socket path (``mode`` client/server), ``user`` none (user-mode
    networking, for labs)."""

    kind: str = attrs.field(metadata=_choices("bridge", "network", "direct", "hostdev", "vhostuser", "user"))
    source: str | None = attrs.field(default=None, metadata=_pattern(re.compile(r"^[^\s<>&'\"]+$")))
    model: str = attrs.field(default="virtio", metadata=_choices("virtio", "e1000", "e1000e", "rtl8139"))
    mac: str | None = attrs.field(default=None, metadata=_pattern(MAC_RE))
    mode: str | None = attrs.field(default=None, metadata=_choices("bridge", "vepa", "private", "passthrough",
                                                                    "client", "server"))
    resource: str | None = attrs.field(default=None, metadata=_pattern(RESOURCE_RE))


@attrs.frozen
class Graphics:
    kind: str = attrs.field(default="vnc", metadata=_choices("vnc", "spice"))
    listen: str = attrs.field(default="127.0.0.1", metadata=_pattern(re.compile(r"^[0-9a-fA-F.:]+$")))


@attrs.frozen
class HostDevice:
    """A device passed through: ``pci`` (``address`` or ``resource``), ``usb`` (``vendor``
    and ``product`` ids, or ``resource``), ``mdev`` (``address`` = the mdev's uuid, or
    ``resource`` = ``mdev/TYPE``)."""

    kind: str = attrs.field(metadata=_choices("pci", "usb", "mdev"))
    address: str | None = attrs.field(default=None, metadata=_pattern(re.compile(r"^[0-9a-f:.-]+$")))
    resource: str | None = attrs.field(default=None, metadata=_pattern(RESOURCE_RE))
    vendor: str | None = attrs.field(default=None, metadata=_pattern(HEX4_RE))
    product: str | None = attrs.field(default=None, metadata=_pattern(HEX4_RE))


@attrs.frozen
class CloudInit:
    """A NoCloud seed: attached as a CD-ROM (``seed``, an ISO path on the host) built from
    these documents when the VM starts (:mod:`flavors.virt.cloudinit`; on hosts of this
    machine, a remote host must have the image already)."""

    seed: str = attrs.field(metadata=_pattern(PATH_RE))
    user_data: str = ""
    meta_data: str = ""
    network_config: str | None = None


@attrs.frozen
class Watchdog:
    model: str = attrs.field(default="i6300esb", metadata=_choices("i6300esb", "ib700"))
    action: str = attrs.field(default="reset", metadata=_choices("reset", "poweroff", "pause", "dump", "none"))


# --------------------------------------------------------------------------- the VM


def _by_target(disks: Any) -> tuple[Disk, ...]:
    """Disks in target order: libvirt groups them by bus, and order carries no meaning
    (boot order is each disk's ``boot``)."""
    return tuple(sorted(disks, key=lambda d: d.target))


@attrs.frozen
class VMSpec:
    """A virtual machine, everything the flavor needs to define and run it."""

    name: str = attrs.field(metadata=_pattern(NAME_RE))
    uuid: str = attrs.field(metadata=_pattern(re.compile(r"^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$")))
    memory: Memory
    vcpus: int = attrs.field(default=1, metadata=_minimum(1))
    max_vcpus: int | None = attrs.field(default=None, metadata=_minimum(1))
    topology: Topology | None = None
    cpu: Cpu = Cpu()
    numa: tuple[NumaCell, ...] = ()
    pins: tuple[Pin, ...] = ()
    domain_type: str = attrs.field(default="kvm", metadata=_choices("kvm", "qemu"))
    arch: str = attrs.field(default="x86_64", metadata=_choices("x86_64"))
    machine: str = attrs.field(default="pc", metadata=_pattern(re.compile(r"^(pc|q35)([A-Za-z0-9_.-]*)$")))
    firmware: Firmware = Firmware()
    clock: str = attrs.field(default="utc", metadata=_choices("utc", "localtime"))
    disks: tuple[Disk, ...] = attrs.field(default=(), converter=_by_target)
    nics: tuple[Nic, ...] = ()
    graphics: tuple[Graphics, ...] = ()
    serial: bool = True
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
        """Raise :class:`ValidationError` naming the field when fields disagree."""

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
        targets = [d.target for d in self.disks]
        if len(set(targets)) != len(targets):
            raise fail("disks", "two disks share a target", targets)
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
            pattern = PCI_RE if h.kind == "pci" else re.compile(r"^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$")
            if not pattern.match(h.address):
                raise fail(f"{at}.address", f"not a {h.kind} address", h.address)

    # ------------------------------------------------------------------ dicts

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _to_dict(self)
        return out

    @classmethod
    def from_dict(cls, data: object, path: str = "") -> VMSpec:
        spec = _read(cls, data, path)
        return spec.check()

    @classmethod
    def new(cls, name: str, memory: int, vcpus: int = 1, **fields: Any) -> VMSpec:
        """A VM with a fresh uuid (fields as keyword arguments, parts as objects)."""
        return cls(name=name, uuid=str(uuidlib.uuid4()), memory=Memory(memory), vcpus=vcpus, **fields).check()


def hugepage_resource(size_kib: int) -> str:
    return "hugepages-1G" if size_kib == 1048576 else "hugepages-2M"


def cpuset(text: str) -> set[int]:
    """``"0-2,5"`` -> {0, 1, 2, 5}."""
    out: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        out.update(range(int(low), int(high or low) + 1))
    return out


# --------------------------------------------------------------------------- generic (de)serialisation


def _to_dict(obj: Any) -> Any:
    if attrs.has(type(obj)):
        return {f.name: _to_dict(getattr(obj, f.name)) for f in attrs.fields(type(obj))}
    if isinstance(obj, tuple):
        return [_to_dict(v) for v in obj]
    return obj


def _read(cls: type[T], data: object, path: str) -> T:
    """Build ``cls`` (an attrs class of this module) from a dict, field by field, with
    :class:`Reader`'s errors (dotted field, what was wrong, the value)."""
    r = Reader("vm", data, path)
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in attrs.fields(cls):  # type: ignore[arg-type]
        if not r.has(f.name):
            if f.default is attrs.NOTHING:
                raise r.fail(f.name, "is required")
            r.seen.add(f.name)
            continue
        values[f.name] = _value(r, f.name, hints[f.name], f.metadata, r.get(f.name))
    r.done()
    return cls(**values)


def _value(r: Reader, name: str, hint: Any, meta: Mapping[str, Any], value: Any) -> Any:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = next(a for a in args if a is not type(None))
        return _value(r, name, inner, meta, value)
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            raise r.fail(name, "must be a list", value)
        return tuple(_value(r, f"{name}[{i}]", args[0], meta, v) for i, v in enumerate(value))
    if attrs.has(hint):
        return r.inner(lambda v, p: _read(hint, v, p), value, r.field(name))
    if hint is bool:
        if not isinstance(value, bool):
            raise r.fail(name, "must be true or false", value)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise r.fail(name, "must be an integer", value)
        if "minimum" in meta and value < meta["minimum"]:
            raise r.fail(name, f"must be >= {meta['minimum']}", value)
        if "choices" in meta and str(value) not in meta["choices"]:
            raise r.fail(name, f"must be one of {', '.join(meta['choices'])}", value)
        return value
    if hint is str:
        if not isinstance(value, str):
            raise r.fail(name, "must be a string", value)
        if "choices" in meta and value not in meta["choices"]:
            raise r.fail(name, f"must be one of {', '.join(meta['choices'])}", value)
        if "pattern" in meta and not meta["pattern"].match(value):
            raise r.fail(name, f"must match {meta['pattern'].pattern}", value)
        return value
    raise TypeError(f"no reader for {hint!r}")  # a programming error in this module
