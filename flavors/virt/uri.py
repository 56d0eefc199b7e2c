"""Which host addresses are libvirt URIs this flavor opens.

A host belongs to the virt flavor when its address is empty or names a libvirt driver as
its scheme (``qemu``, ``qemu+tcp``, ``test``, ``xen``...); the flavor then checks the
whole URI before anything opens it (:func:`uri_problem`), so a mistyped address
(``qemu+tcp:/10.0.0.9/system``) or an empty one, which ``libvirt.open`` would take as
"this process's default hypervisor", is refused with the reason. Other addresses (the
process flavor's directories) are left to their flavors.

Accepted forms::

    qemu:///system   qemu:///session   qemu+unix:///system?socket=/run/x.sock
    qemu+tcp://HOST[:PORT]/system   qemu+tls://HOST[:PORT]/system
    qemu+ssh://[USER@]HOST[:PORT]/system   (also libssh, libssh2)
    test:///default   test:///ABSOLUTE/PATH.xml
"""

from __future__ import annotations

import re

LOCAL_TRANSPORTS = ("", "unix")
REMOTE_TRANSPORTS = ("tcp", "tls", "ssh", "libssh", "libssh2")
LIBVIRT_DRIVERS = frozenset({"qemu", "test", "xen", "lxc", "libxl", "vbox", "bhyve", "ch", "vz", "esx", "vpx",
                             "hyperv", "openvz", "vmwarews", "vmwareplayer", "vmwarefusion", "parallels"})

_SCHEME_RE = re.compile(r"\A([A-Za-z][A-Za-z0-9+.-]*):")
_CLAIM_RE = re.compile(r"\A\s*([A-Za-z][A-Za-z0-9.-]*)(\+[A-Za-z0-9]*)?(:|/|\Z)")
_HOST = r"(?:[A-Za-z0-9_.-]{1,64}@)?(?:[A-Za-z0-9.-]{1,253}|\[[0-9a-fA-F:.]{2,45}\])(?::\d{1,5})?"
_QUERY = r"(?:\?[A-Za-z0-9_=&/.,%+-]{0,512})?"
_QEMU_LOCAL_RE = re.compile(r"\Aqemu(?:\+unix)?:///(system|session)" + _QUERY + r"\Z")
_QEMU_REMOTE_RE = re.compile(r"\Aqemu\+(" + "|".join(REMOTE_TRANSPORTS) + r")://(" + _HOST + r")/(system|session)"
                             + _QUERY + r"\Z")
_TEST_RE = re.compile(r"\Atest:///(default|[A-Za-z0-9_./-]{1,4096}\.xml)\Z")


def claims(address: str) -> bool:
    """Whether a host of this address is the virt flavor's to judge: empty, or starting
    with a libvirt driver's name (``qemu+tcp//host`` too: a typo is still ours to refuse)."""
    if not address.strip():
        return True
    match = _CLAIM_RE.match(address)
    return match is not None and match.group(1).lower() in LIBVIRT_DRIVERS


def uri_problem(address: str) -> str | None:
    """Why ``address`` is not a libvirt URI this flavor opens (None when it is one)."""
    if not address:
        return "the host's address is empty: not a libvirt URI (libvirt would open this process's default " \
               "hypervisor); give one such as qemu+tcp://HOST/system"
    shown = address[:200].encode("unicode_escape").decode()
    if _QEMU_LOCAL_RE.match(address) or _TEST_RE.match(address):
        return None
    remote = _QEMU_REMOTE_RE.match(address)
    if remote:
        port = re.search(r":(\d+)\Z", remote.group(2))
        if port and not 0 < int(port.group(1)) <= 65535:
            return f"{shown} is not a libvirt URI this flavor opens: port {port.group(1)} is out of range"
        return None
    match = _SCHEME_RE.match(address)
    scheme = match.group(1).lower() if match else ""
    driver, _, transport = scheme.partition("+")
    if driver and driver not in ("qemu", "test"):
        return f"{shown}: libvirt driver {driver!r} is not supported by the virt flavor (qemu or test)"
    if transport and transport not in LOCAL_TRANSPORTS + REMOTE_TRANSPORTS:
        return f"{shown}: unknown libvirt transport {transport!r}"
    return (f"{shown} is not a libvirt URI this flavor opens (expected qemu:///system, "
            f"qemu+tcp://HOST[:PORT]/system, qemu+tls://..., qemu+ssh://[USER@]HOST/system or test:///default)")


def is_libvirt_uri(address: str) -> bool:
    return uri_problem(address) is None
