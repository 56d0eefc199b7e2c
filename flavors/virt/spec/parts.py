"""The parts of a VM spec: CPU (topology, model, NUMA cells, pinning), memory (DIMMs,
hugepages), firmware, disks, NICs, graphics, host devices, cloud-init and watchdog."""

from __future__ import annotations

import re

import attrs

from flavors.virt.spec.fields import choices, minimum, pattern

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
PCI_RE = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
HEX4_RE = re.compile(r"^[0-9a-f]{4}$")
RESOURCE_RE = re.compile(r"^(pci|usb)/[0-9a-f]{4}:[0-9a-f]{4}$|^mdev/[A-Za-z0-9_.-]+$")
CPUSET_RE = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
TARGET_RE = re.compile(r"^(vd|sd|hd)[a-z]{1,2}$")
WORD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
PATH_RE = re.compile(r"^/[^\s<>&'\"]*$")


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


def hugepage_resource(size_kib: int) -> str:
    return "hugepages-1G" if size_kib == 1048576 else "hugepages-2M"


def cpuset(text: str) -> set[int]:
    """``"0-2,5"`` -> {0, 1, 2, 5}."""
    out: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        out.update(range(int(low), int(high or low) + 1))
    return out


# --------------------------------------------------------------------------- parts


@attrs.frozen
class Topology:
    """Guest CPU topology; ``sockets * cores * threads`` is the maximum vCPU count."""

    sockets: int = attrs.field(default=1, metadata=minimum(1))
    cores: int = attrs.field(default=1, metadata=minimum(1))
    threads: int = attrs.field(default=1, metadata=minimum(1))

    @property
    def total(self) -> int:
        return self.sockets * self.cores * self.threads


@attrs.frozen
class CpuFeature:
    name: str = attrs.field(metadata=pattern(WORD_RE))
    policy: str = attrs.field(default="require", metadata=choices("require", "disable", "optional", "force",
                                                                   "forbid"))


@attrs.frozen
class Cpu:
    """``default`` (the hypervisor's baseline model: runs and migrates anywhere),
    ``host-model`` (this host's CPU, migratable to alike hosts), ``host-passthrough``
    (fastest, pins the VM to identical hosts) or ``custom`` with a named ``model`` and
    ``features`` (for a cluster-wide baseline)."""

    mode: str = attrs.field(default="default", metadata=choices("default", "host-model", "host-passthrough",
                                                                "custom"))
    model: str | None = attrs.field(default=None, metadata=pattern(WORD_RE))
    features: tuple[CpuFeature, ...] = ()


@attrs.frozen
class NumaCell:
    """A guest NUMA cell: its vCPUs (a cpuset such as ``0-3``), its memory (MiB), and
    optionally the host node whose memory backs it (strict)."""

    cpus: str = attrs.field(converter=canonical_cpuset, metadata=pattern(CPUSET_RE))
    memory: int = attrs.field(metadata=minimum(1))
    host_node: int | None = attrs.field(default=None, metadata=minimum(0))


@attrs.frozen
class Pin:
    """vCPU ``vcpu`` runs only on the host CPUs of ``cpuset``."""

    vcpu: int = attrs.field(metadata=minimum(0))
    cpuset: str = attrs.field(converter=canonical_cpuset, metadata=pattern(CPUSET_RE))


@attrs.frozen
class Dimm:
    """Memory hotplugged into a running VM: ``size`` MiB on guest NUMA cell ``node``."""

    size: int = attrs.field(metadata=minimum(1))
    node: int = attrs.field(default=0, metadata=minimum(0))


@attrs.frozen
class Memory:
    """``size`` is the memory the VM boots with (MiB). ``maximum`` and ``slots`` allow
    DIMM hotplug up to ``maximum``; ``hugepages`` backs the memory with pages of that size
    (KiB); ``guaranteed`` is the part that must be physically there (the rest may be
    overcommitted and ballooned; defaults to all of it). ``size`` includes the ``dimms``
    hotplugged so far; the NUMA cells hold the rest."""

    size: int = attrs.field(metadata=minimum(1))
    maximum: int | None = attrs.field(default=None, metadata=minimum(1))
    slots: int = attrs.field(default=0, metadata=minimum(0))
    dimms: tuple[Dimm, ...] = ()
    hugepages: int | None = attrs.field(default=None, metadata=choices("2048", "1048576"))
    guaranteed: int | None = attrs.field(default=None, metadata=minimum(0))


@attrs.frozen
class Firmware:
    kind: str = attrs.field(default="bios", metadata=choices("bios", "uefi"))
    secure_boot: bool = False


@attrs.frozen
class Disk:
    """A disk or CD-ROM. ``source`` is a path (``file``, ``block``) or, for ``network``,
    ``pool/image`` (rbd) or ``iqn.../lun`` (iscsi) on ``hosts`` (``name:port``)."""

    target: str = attrs.field(metadata=pattern(TARGET_RE))
    source: str = attrs.field(metadata=pattern(re.compile(r"^[^\s<>&'\"]+$")))
    kind: str = attrs.field(default="file", metadata=choices("file", "block", "network"))
    protocol: str | None = attrs.field(default=None, metadata=choices("rbd", "iscsi"))
    hosts: tuple[str, ...] = attrs.field(default=(), metadata=pattern(re.compile(r"^[A-Za-z0-9.-]+:\d{1,5}$")))
    device: str = attrs.field(default="disk", metadata=choices("disk", "cdrom"))
    bus: str = attrs.field(default="virtio", metadata=choices("virtio", "scsi", "sata"))
    format: str = attrs.field(default="raw", metadata=choices("raw", "qcow2"))
    cache: str | None = attrs.field(default=None, metadata=choices("none", "writeback", "writethrough",
                                                                    "directsync", "unsafe"))
    io: str | None = attrs.field(default=None, metadata=choices("native", "threads", "io_uring"))
    discard: str | None = attrs.field(default=None, metadata=choices("unmap", "ignore"))
    readonly: bool = False
    shareable: bool = False
    boot: int | None = attrs.field(default=None, metadata=minimum(1))
    serial: str | None = attrs.field(default=None, metadata=pattern(re.compile(r"^[A-Za-z0-9_-]{1,20}$")))


@attrs.frozen
class Nic:
    """A NIC. ``source`` by kind: ``bridge`` a bridge, ``network`` a libvirt network,
    ``direct`` a host interface (macvtap, ``mode`` bridge/vepa/private/passthrough),
    ``hostdev`` an SR-IOV VF (its PCI address, or ``resource`` such as ``pci/8086:154c``
    and the address once bound),
    ``vhostuser`` a socket path (``mode`` client/server), ``user`` none (user-mode
    networking, for labs)."""

    kind: str = attrs.field(metadata=choices("bridge", "network", "direct", "hostdev", "vhostuser", "user"))
    source: str | None = attrs.field(default=None, metadata=pattern(re.compile(r"^[^\s<>&'\"]+$")))
    model: str = attrs.field(default="virtio", metadata=choices("virtio", "e1000", "e1000e", "rtl8139"))
    mac: str | None = attrs.field(default=None, metadata=pattern(MAC_RE))
    mode: str | None = attrs.field(default=None, metadata=choices("bridge", "vepa", "private", "passthrough",
                                                                   "client", "server"))
    resource: str | None = attrs.field(default=None, metadata=pattern(RESOURCE_RE))


@attrs.frozen
class Graphics:
    kind: str = attrs.field(default="vnc", metadata=choices("vnc", "spice"))
    listen: str = attrs.field(default="127.0.0.1", metadata=pattern(re.compile(r"^[0-9a-fA-F.:]+$")))


@attrs.frozen
class HostDevice:
    """A device passed through: ``pci`` (``address`` or ``resource``), ``usb`` (``vendor``
    and ``product`` ids, or ``resource``), ``mdev`` (``address`` = the mdev's uuid, or
    ``resource`` = ``mdev/TYPE``)."""

    kind: str = attrs.field(metadata=choices("pci", "usb", "mdev"))
    address: str | None = attrs.field(default=None, metadata=pattern(re.compile(r"^[0-9a-f:.-]+$")))
    resource: str | None = attrs.field(default=None, metadata=pattern(RESOURCE_RE))
    vendor: str | None = attrs.field(default=None, metadata=pattern(HEX4_RE))
    product: str | None = attrs.field(default=None, metadata=pattern(HEX4_RE))


@attrs.frozen
class CloudInit:
    """A NoCloud seed: attached as a CD-ROM (``seed``, an ISO path on the host) built from
    these documents when the VM starts (:mod:`flavors.virt.cloudinit`; on hosts of this
    machine, a remote host must have the image already)."""

    seed: str = attrs.field(metadata=pattern(PATH_RE))
    user_data: str = ""
    meta_data: str = ""
    network_config: str | None = None


@attrs.frozen
class Watchdog:
    model: str = attrs.field(default="i6300esb", metadata=choices("i6300esb", "ib700"))
    action: str = attrs.field(default="reset", metadata=choices("reset", "poweroff", "pause", "dump", "none"))

