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

The spec lives in :mod:`~flavors.virt.spec.vm` (``VMSpec`` and the rules across fields),
:mod:`~flavors.virt.spec.parts` (its parts), read by :mod:`clustercore.fields` (the field
metadata and the dict reader they drive, shared with every flavor's spec); every name is
importable from here.
"""

from flavors.virt.spec.parts import (
    ADDRESS_RE,
    CLUSTER_NAME_RE,
    CPUSET_RE,
    ENDPOINT_RE,
    HEX4_RE,
    MAC_RE,
    MAX_CMDLINE,
    MAX_CPU,
    MAX_CPU_RANGES,
    MAX_MEMORY_MIB,
    MAX_VCPUS,
    NAME_RE,
    PASSWORD_RE,
    PATH_RE,
    PCI_RE,
    RESOURCE_RE,
    SOURCE_RE,
    TARGET_RE,
    UUID_RE,
    WORD_RE,
    CloudInit,
    Cpu,
    CpuFeature,
    Dimm,
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
    canonical_cpuset,
    cmdline_problem,
    cpu_ranges,
    cpuset,
    cpuset_problem,
    endpoint,
    endpoint_problem,
    hugepage_resource,
)
from flavors.virt.spec.vm import KIND, VMSpec

__all__ = [
    "ADDRESS_RE",
    "CLUSTER_NAME_RE",
    "CPUSET_RE",
    "ENDPOINT_RE",
    "HEX4_RE",
    "KIND",
    "MAC_RE",
    "MAX_CMDLINE",
    "MAX_CPU",
    "MAX_CPU_RANGES",
    "MAX_MEMORY_MIB",
    "MAX_VCPUS",
    "NAME_RE",
    "PASSWORD_RE",
    "PATH_RE",
    "PCI_RE",
    "RESOURCE_RE",
    "SOURCE_RE",
    "TARGET_RE",
    "UUID_RE",
    "WORD_RE",
    "CloudInit",
    "Cpu",
    "CpuFeature",
    "Dimm",
    "Disk",
    "Firmware",
    "Graphics",
    "HostDevice",
    "KernelBoot",
    "Memory",
    "Nic",
    "NumaCell",
    "Pin",
    "Topology",
    "VMSpec",
    "Watchdog",
    "canonical_cpuset",
    "cmdline_problem",
    "cpu_ranges",
    "cpuset",
    "cpuset_problem",
    "endpoint",
    "endpoint_problem",
    "hugepage_resource",
]
