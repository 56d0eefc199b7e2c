"""The parts of a VM spec: CPU (topology, model, NUMA cells, pinning), memory (DIMMs,
hugepages), firmware, direct kernel boot, disks, NICs, graphics, host devices, cloud-init
and watchdog."""

from __future__ import annotations

import re

import attrs

from clustercore.errors import ValidationError
from clustercore.fields import bounded, checked, choices, pattern

# Every pattern is anchored with \A...\Z (``$`` lets a trailing newline through) and none
# admits a control character.
NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
UUID_RE = re.compile(r"\A[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}\Z")
PCI_RE = re.compile(r"\A[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]\Z")
MAC_RE = re.compile(r"\A[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")
HEX4_RE = re.compile(r"\A[0-9a-f]{4}\Z")
RESOURCE_RE = re.compile(r"\A(?:(pci|usb)/[0-9a-f]{4}:[0-9a-f]{4}|mdev/[A-Za-z0-9_.-]{1,64})\Z")
CPUSET_RE = re.compile(r"\A\d{1,4}(-\d{1,4})?(,\d{1,4}(-\d{1,4})?)*\Z")
TARGET_RE = re.compile(r"\A(vd|sd|hd)[a-z]{1,2}\Z")
WORD_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}\Z")
PATH_RE = re.compile(r"\A/[^\x00-\x20\x7f<>&'\"]{0,4095}\Z")
SOURCE_RE = re.compile(r"\A[^\x00-\x20\x7f<>&'\"]{1,4096}\Z")
ADDRESS_RE = re.compile(r"\A[0-9a-fA-F.:]{1,45}\Z")
PASSWORD_RE = re.compile(r"\A[\x21-\x7e]{1,64}\Z")
CLUSTER_NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,252}\Z")
"""A name in the cluster's store (a volume, a logical network): the core's ``NAME_RE``, anchored."""
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
ENDPOINT_RE = re.compile(rf"\A({_OCTET}(?:\.{_OCTET}){{3}}):([0-9]{{1,5}})\Z")
"""``ADDR:PORT`` of a UDP NIC: a dotted IPv4 address (libvirt's schema takes no host name
there) and a port, checked 1..65535 by :func:`endpoint_problem`."""
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

MAX_CPU = 4096
"""Host CPU ids and vCPU numbers are below this (libvirt's own limit for a cpuset is 8192 bits)."""
MAX_CPU_RANGES = 256
"""At most this many comma-separated parts in a cpuset."""
MAX_VCPUS = 4096
MAX_MEMORY_MIB = 16 * 1024 * 1024
"""16 TiB: the most memory one VM (or one of its NUMA cells or DIMMs) may have."""
MAX_SLOTS = 256
MAX_NODES = 1024
MAX_TEXT = 1 << 20
"""A cloud-init document holds at most this many characters."""
MAX_CMDLINE = 4096
"""A kernel command line holds at most this many characters (x86 Linux reads 2048 bytes)."""


def cpu_ranges(text: str) -> tuple[tuple[int, int], ...]:
    """``"0-2,5"`` -> ((0, 2), (5, 5)), never expanded: ValidationError (field ``cpuset``)
    past :data:`MAX_CPU_RANGES` parts, for ids at or over :data:`MAX_CPU`, or reversed ranges."""
    problem = cpuset_problem(text)
    if problem is not None:
        raise ValidationError("vm", "cpuset", problem, text[:200] if isinstance(text, str) else text)
    out = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        out.append((int(low), int(high or low)))
    return tuple(out)


def cpuset_problem(text: str) -> str | None:
    """What is wrong with a cpuset (None when it is one), without expanding it."""
    if not isinstance(text, str) or len(text) > MAX_CPU_RANGES * 10 or not CPUSET_RE.match(text):
        return "must be a cpuset such as 0-3,6"
    parts = text.split(",")
    if len(parts) > MAX_CPU_RANGES:
        return f"at most {MAX_CPU_RANGES} ranges"
    for part in parts:
        low, _, high = part.partition("-")
        lo, hi = int(low), int(high or low)
        if hi >= MAX_CPU:
            return f"CPU ids must be below {MAX_CPU}"
        if lo > hi:
            return f"range {part} is reversed"
    return None


def xml_text_problem(text: str) -> str | None:
    """Free text that goes into the domain XML: bounded, and only characters XML can hold."""
    if len(text) > MAX_TEXT:
        return f"at most {MAX_TEXT} characters"
    if _NOT_XML.search(text):
        return "holds a control character XML cannot carry"
    return None


def cmdline_problem(text: str) -> str | None:
    """A kernel command line: bounded, one line without control characters (C0, DEL, C1)."""
    if len(text) > MAX_CMDLINE:
        return f"at most {MAX_CMDLINE} characters"
    if _CONTROL.search(text):
        return "holds a control character"
    return None


def endpoint_problem(text: str) -> str | None:
    """What is wrong with a UDP endpoint ``ADDR:PORT`` (None when it is one)."""
    match = ENDPOINT_RE.match(text) if len(text) <= 21 else None
    if match is None:
        return "must be ADDR:PORT with a dotted IPv4 address, such as 127.0.0.1:5000"
    port = match.group(2)
    if port != str(int(port)) or not 1 <= int(port) <= 65535:
        return "port must lie in 1..65535, without leading zeros"
    return None


def endpoint(text: str) -> tuple[str, int]:
    """``"127.0.0.1:5000"`` -> ``("127.0.0.1", 5000)`` (a checked endpoint)."""
    address, _, port = text.rpartition(":")
    return address, int(port)


def canonical_cpuset(text: str) -> str:
    """A cpuset as libvirt writes it: sorted, runs as ranges (``"3,2,0-1"`` -> ``"0-3"``)."""
    if cpuset_problem(text) is not None:
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
    """``"0-2,5"`` -> {0, 1, 2, 5}: at most :data:`MAX_CPU` ids (a cpuset past the caps is
    a ValidationError, see :func:`cpu_ranges`)."""
    out: set[int] = set()
    for low, high in cpu_ranges(text):
        out.update(range(low, high + 1))
    return out


CPUSET = checked(cpuset_problem)
XML_TEXT = checked(xml_text_problem)
CMDLINE = checked(cmdline_problem)
ENDPOINT = checked(endpoint_problem)


# --------------------------------------------------------------------------- parts


@attrs.frozen
class Topology:
    """Guest CPU topology; ``sockets * cores * threads`` is the maximum vCPU count."""

    sockets: int = attrs.field(default=1, metadata=bounded(1, MAX_VCPUS))
    cores: int = attrs.field(default=1, metadata=bounded(1, MAX_VCPUS))
    threads: int = attrs.field(default=1, metadata=bounded(1, MAX_VCPUS))

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

    cpus: str = attrs.field(converter=canonical_cpuset, metadata=CPUSET)
    memory: int = attrs.field(metadata=bounded(1, MAX_MEMORY_MIB))
    host_node: int | None = attrs.field(default=None, metadata=bounded(0, MAX_NODES - 1))


@attrs.frozen
class Pin:
    """vCPU ``vcpu`` runs only on the host CPUs of ``cpuset``."""

    vcpu: int = attrs.field(metadata=bounded(0, MAX_VCPUS - 1))
    cpuset: str = attrs.field(converter=canonical_cpuset, metadata=CPUSET)


@attrs.frozen
class Dimm:
    """Memory hotplugged into a running VM: ``size`` MiB on guest NUMA cell ``node``."""

    size: int = attrs.field(metadata=bounded(1, MAX_MEMORY_MIB))
    node: int = attrs.field(default=0, metadata=bounded(0, MAX_NODES - 1))


@attrs.frozen
class Memory:
    """``size`` is the memory the VM boots with (MiB). ``maximum`` and ``slots`` allow
    DIMM hotplug up to ``maximum``; ``hugepages`` backs the memory with pages of that size
    (KiB); ``guaranteed`` is the part that must be physically there (the rest may be
    overcommitted and ballooned; defaults to all of it). ``size`` includes the ``dimms``
    hotplugged so far; the NUMA cells hold the rest."""

    size: int = attrs.field(metadata=bounded(1, MAX_MEMORY_MIB))
    maximum: int | None = attrs.field(default=None, metadata=bounded(1, MAX_MEMORY_MIB))
    slots: int = attrs.field(default=0, metadata=bounded(0, MAX_SLOTS))
    dimms: tuple[Dimm, ...] = ()
    hugepages: int | None = attrs.field(default=None, metadata=choices("2048", "1048576"))
    guaranteed: int | None = attrs.field(default=None, metadata=bounded(0, MAX_MEMORY_MIB))


@attrs.frozen
class Firmware:
    kind: str = attrs.field(default="bios", metadata=choices("bios", "uefi"))
    secure_boot: bool = False


@attrs.frozen
class KernelBoot:
    """Direct kernel boot: QEMU loads ``kernel`` (and ``initrd``) from host paths and
    passes ``cmdline`` to it; no bootloader runs."""

    kernel: str = attrs.field(metadata=pattern(PATH_RE))
    initrd: str | None = attrs.field(default=None, metadata=pattern(PATH_RE))
    cmdline: str = attrs.field(default="", metadata=CMDLINE)


@attrs.frozen
class Disk:
    """A disk or CD-ROM. ``source`` is a path (``file``, ``block``) or, for ``network``,
    ``pool/image`` (rbd) or ``iqn.../lun`` (iscsi) on ``hosts`` (``name:port``).
    ``volume`` names the cluster volume a file disk is (its ``source`` is that volume's
    file) and ``storage`` says where it lives: ``shared`` (every attached host sees it) or
    ``local`` (on one host); both None for a disk that is no cluster volume."""

    target: str = attrs.field(metadata=pattern(TARGET_RE))
    source: str = attrs.field(metadata=pattern(SOURCE_RE))
    kind: str = attrs.field(default="file", metadata=choices("file", "block", "network"))
    protocol: str | None = attrs.field(default=None, metadata=choices("rbd", "iscsi"))
    hosts: tuple[str, ...] = attrs.field(default=(), metadata=pattern(re.compile(r"\A[A-Za-z0-9.-]{1,253}:\d{1,5}\Z")))
    device: str = attrs.field(default="disk", metadata=choices("disk", "cdrom"))
    bus: str = attrs.field(default="virtio", metadata=choices("virtio", "scsi", "sata"))
    format: str = attrs.field(default="raw", metadata=choices("raw", "qcow2"))
    cache: str | None = attrs.field(default=None, metadata=choices("none", "writeback", "writethrough",
                                                                    "directsync", "unsafe"))
    io: str | None = attrs.field(default=None, metadata=choices("native", "threads", "io_uring"))
    discard: str | None = attrs.field(default=None, metadata=choices("unmap", "ignore"))
    readonly: bool = False
    shareable: bool = False
    boot: int | None = attrs.field(default=None, metadata=bounded(1, 1024))
    serial: str | None = attrs.field(default=None, metadata=pattern(re.compile(r"\A[A-Za-z0-9_-]{1,20}\Z")))
    volume: str | None = attrs.field(default=None, metadata=pattern(CLUSTER_NAME_RE))
    storage: str | None = attrs.field(default=None, metadata=choices("shared", "local"))


@attrs.frozen
class Nic:
    """A NIC. ``source`` by kind: ``bridge`` a bridge, ``network`` a libvirt network,
    ``direct`` a host interface (macvtap, ``mode`` bridge/vepa/private/passthrough),
    ``hostdev`` an SR-IOV VF (its PCI address, or ``resource`` such as ``pci/8086:154c``
    and the address once bound),
    ``vhostuser`` a socket path (``mode`` client/server), ``user`` none (user-mode
    networking, for labs), ``udp`` the peer's ``ADDR:PORT`` (a guest or a switch) with
    ``local`` this NIC's own ``ADDR:PORT`` (QEMU's UDP socket backend: no bridge or tap).
    ``network`` names the cluster's logical network the NIC is on (a kind ``network``
    NIC's ``source`` is a libvirt network, another thing)."""

    kind: str = attrs.field(metadata=choices("bridge", "network", "direct", "hostdev", "vhostuser", "user", "udp"))
    source: str | None = attrs.field(default=None, metadata=pattern(SOURCE_RE))
    model: str = attrs.field(default="virtio", metadata=choices("virtio", "e1000", "e1000e", "rtl8139"))
    mac: str | None = attrs.field(default=None, metadata=pattern(MAC_RE))
    mode: str | None = attrs.field(default=None, metadata=choices("bridge", "vepa", "private", "passthrough",
                                                                   "client", "server"))
    resource: str | None = attrs.field(default=None, metadata=pattern(RESOURCE_RE))
    local: str | None = attrs.field(default=None, metadata=ENDPOINT)
    network: str | None = attrs.field(default=None, metadata=pattern(CLUSTER_NAME_RE))


@attrs.frozen
class Graphics:
    kind: str = attrs.field(default="vnc", metadata=choices("vnc", "spice"))
    listen: str = attrs.field(default="127.0.0.1", metadata=pattern(ADDRESS_RE))
    password: str | None = attrs.field(default=None, repr=False, metadata=pattern(PASSWORD_RE))


@attrs.frozen
class HostDevice:
    """A device passed through: ``pci`` (``address`` or ``resource``), ``usb`` (``vendor``
    and ``product`` ids, or ``resource``), ``mdev`` (``address`` = the mdev's uuid, or
    ``resource`` = ``mdev/TYPE``)."""

    kind: str = attrs.field(metadata=choices("pci", "usb", "mdev"))
    address: str | None = attrs.field(default=None, metadata=pattern(re.compile(r"\A[0-9a-f:.-]{1,36}\Z")))
    resource: str | None = attrs.field(default=None, metadata=pattern(RESOURCE_RE))
    vendor: str | None = attrs.field(default=None, metadata=pattern(HEX4_RE))
    product: str | None = attrs.field(default=None, metadata=pattern(HEX4_RE))


@attrs.frozen
class CloudInit:
    """A NoCloud seed: attached as a CD-ROM (``seed``, an ISO path on the host) built from
    these documents when the VM starts (:mod:`flavors.virt.cloudinit`; on hosts of this
    machine, a remote host must have the image already)."""

    seed: str = attrs.field(metadata=pattern(PATH_RE))
    user_data: str = attrs.field(default="", metadata=XML_TEXT)
    meta_data: str = attrs.field(default="", metadata=XML_TEXT)
    network_config: str | None = attrs.field(default=None, metadata=XML_TEXT)


@attrs.frozen
class Watchdog:
    model: str = attrs.field(default="i6300esb", metadata=choices("i6300esb", "ib700"))
    action: str = attrs.field(default="reset", metadata=choices("reset", "poweroff", "pause", "dump", "none"))

