"""What a VM needs to run the real guest: the domain essentials from the GUEST notes.

Direct kernel boot (kernel, initrd, command line with the guest program's words), the
VM's qcow2 clone as a virtio disk with ``cache='none'``, the serial console to a file with
``append='on'`` (a migration's destination QEMU reopens the same file) and no memory
balloon. :func:`console_lines`, :func:`counter_values`, :func:`lost_pages` and
:func:`ping_results` read what the guest said.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import attrs

from flavors.virt.guest.build import GuestImage

PREFIX = "clustercore-guest: "
_WORD = re.compile(r"[A-Za-z0-9_.-]+\Z")
_ADDRESS = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}\Z")
_IFACE = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}\Z")


@attrs.frozen
class GuestBoot:
    """The domain essentials of one real guest VM."""

    kernel: Path
    initrd: Path
    cmdline: str
    disk: Path  # the VM's qcow2 clone: virtio bus, target vda, driver qcow2, cache none
    console: Path  # serial console log file, append on
    disk_bus: str = "virtio"
    disk_format: str = "qcow2"
    disk_cache: str = "none"
    console_append: bool = True
    memballoon: str = "none"


def guest_cmdline(counter: str | None = None, dirty_mib: int = 0, burn: bool = False, *, ip: str | None = None,
                  ping: str | None = None) -> str:
    """``console=ttyS0 quiet`` and the guest program's words: ``counter=FILE`` (a file at
    the disk's root), ``dirty=MIB``, ``burn=1``; and the init script's: ``ip=ADDR/PREFIX``
    (eth0 up with that IPv4 address) and ``ping=ADDR`` (ping it once a second forever)."""
    words = ["console=ttyS0", "quiet", "panic=-1"]
    if counter is not None:
        if not _WORD.match(counter):
            raise ValueError(f"counter file name {counter!r}: letters, digits, '_', '.', '-' only")
        words.append(f"counter={counter}")
    if dirty_mib < 0:
        raise ValueError(f"dirty_mib {dirty_mib}: must be >= 0")
    if dirty_mib:
        words.append(f"dirty={dirty_mib}")
    if burn:
        words.append("burn=1")
    if ip is not None:
        if not _IFACE.match(ip) or not _canonical(ip, ipaddress.IPv4Interface):
            raise ValueError(f"ip {ip!r}: an IPv4 address with its prefix length, such as 10.15.0.1/24")
        words.append(f"ip={ip}")
    if ping is not None:
        if not _ADDRESS.match(ping) or not _canonical(ping, ipaddress.IPv4Address):
            raise ValueError(f"ping {ping!r}: an IPv4 address, such as 10.15.0.2")
        words.append(f"ping={ping}")
    return " ".join(words)


def _canonical(text: str, kind: type[ipaddress.IPv4Interface] | type[ipaddress.IPv4Address]) -> bool:
    """Whether ``text`` is an address (or interface) written the way Python writes it back."""
    try:
        return str(kind(text)) == text
    except ValueError:
        return False


def guest_boot(image: GuestImage, disk: Path, console: Path, counter: str | None = "counter",
               dirty_mib: int = 0, burn: bool = False) -> GuestBoot:
    """The essentials for a VM whose disk is ``disk`` (a :func:`clone` of ``image``)."""
    return GuestBoot(kernel=image.kernel, initrd=image.initrd, cmdline=guest_cmdline(counter, dirty_mib, burn),
                     disk=disk, console=console)


def console_lines(console: Path) -> list[str]:
    """The guest program's lines in a console log, without their prefix."""
    try:
        text = console.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [line.partition(PREFIX)[2].strip() for line in text.splitlines() if PREFIX in line]


def counter_values(lines: list[str]) -> list[int]:
    """The counter ticks (``counter N``) among :func:`console_lines`."""
    return [int(m.group(1)) for line in lines if (m := re.fullmatch(r"counter (\d+)", line))]


def lost_pages(lines: list[str]) -> list[int]:
    """The total of lost pages after each reported dirtier pass, in order."""
    return [int(m.group(1)) for line in lines if (m := re.fullmatch(r"dirty pass \d+ lost \d+ total lost (\d+)", line))]


def ping_results(lines: list[str], address: str | None = None) -> list[bool]:
    """The ping attempts (``ping ADDR ok|fail``) among :func:`console_lines`, in order, True
    for ok; only those to ``address`` when given."""
    return [m.group(2) == "ok" for line in lines
            if (m := re.fullmatch(r"ping (\S+) (ok|fail)", line)) and address in (None, m.group(1))]
