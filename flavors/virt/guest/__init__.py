"""The project's real test guest: a Debian cloud kernel, busybox and a tiny static
program of the project's own (``guest_prog.c``), with a disk. Built and cached by
:func:`build_guest`, cloned per VM by :func:`clone`, described as a VM by
:func:`guest_spec` (a ``VMSpec`` with :func:`guest_boot`'s domain essentials). Under
kvm-pvm it needs ``<domain type='qemu'>`` (see the GUEST notes).
"""

from flavors.virt.guest.build import GuestBuildError, GuestImage, build_guest, clone, kernel_package, read_disk_file
from flavors.virt.guest.domain import (
    GuestBoot,
    console_lines,
    counter_values,
    guest_boot,
    guest_cmdline,
    lost_pages,
    ping_results,
)
from flavors.virt.guest.spec import guest_spec

__all__ = ["GuestBoot", "GuestBuildError", "GuestImage", "build_guest", "clone", "console_lines", "counter_values",
           "guest_boot", "guest_cmdline", "guest_spec", "kernel_package", "lost_pages", "ping_results",
           "read_disk_file"]
