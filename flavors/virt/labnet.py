"""The ports of the lab's hosts (:mod:`flavors.virt.lab`): how each is derived from the
host's TCP port, checked at construction (every one in 1..65535, or libvirtd refuses to
start long after), and checked free before a host starts (a port another server holds
would leave the lab waiting on a server that never speaks libvirt's protocol).

Host k (k = its TCP port - :data:`BASE_PORT`) has its TCP port, migration ports
``49400+20k..+19``, VNC/SPICE display ports ``20000+50k..+49``, websocket ports
``35000+50k..+49`` and its BMC's UDP port ``6230+k``. Hosts with k below 250 never
share a port; every k up to 609 stays within 65535.

A lab (k of its base port) has a block of 16 UDP ports ``10000+16k..+15``
(:func:`lab_udp_ports`): its guest networks' switches (the first 4) and its guests' NIC
endpoints (the other 12), see :mod:`flavors.virt.labswitch`. Two labs never share it.

Errors::

    LabError (RuntimeError)
    ├── PortOutOfRange (also ValueError): a derived port outside 1..65535
    ├── PortInUse: a host's TCP port (or a lab's UDP port) already held by another process
    └── PortsExhausted: every port of a kind in a lab's UDP block handed out
"""

from __future__ import annotations

import contextlib
import errno
import socket
import time

BASE_PORT = 16600
MIGRATION_BASE = 49400
BMC_BASE = 6230
DISPLAY_BASE = 20000
WEBSOCKET_BASE = 35000
UDP_BASE = 10000
UDP_BLOCK = 16  # per lab: SWITCHES switch ports, then NIC endpoints
SWITCHES = 4
MAX_PORT = 65535


class LabError(RuntimeError):
    pass


class PortOutOfRange(LabError, ValueError):
    def __init__(self, what: str, port: int, base_port: int) -> None:
        super().__init__(f"lab {what} port {port} (from base_port {base_port}) is outside 1..{MAX_PORT}")
        self.what = what
        self.port = port
        self.base_port = base_port


class PortInUse(LabError):
    def __init__(self, host: str, port: int, error: OSError, protocol: str = "TCP") -> None:
        super().__init__(f"{host}: {protocol} port 127.0.0.1:{port} is already in use by another process ({error})")
        self.host = host
        self.port = port
        self.protocol = protocol


class PortsExhausted(LabError):
    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"lab {what}: all {limit} handed out")
        self.what = what
        self.limit = limit


def host_ports(port: int) -> dict[str, tuple[int, int]]:
    """The port ranges (lowest, highest) of the lab host whose TCP port is ``port``."""
    k = port - BASE_PORT
    return {
        "TCP": (port, port),
        "migration": (MIGRATION_BASE + 20 * k, MIGRATION_BASE + 20 * k + 19),
        "display": (DISPLAY_BASE + 50 * k, DISPLAY_BASE + 50 * k + 49),  # VNC/SPICE: the hosts share one network
        "websocket": (WEBSOCKET_BASE + 50 * k, WEBSOCKET_BASE + 50 * k + 49),
        "BMC": (BMC_BASE + k, BMC_BASE + k),
    }


def lab_udp_ports(base_port: int) -> tuple[int, int]:
    """The UDP port block (lowest, highest) of the lab whose base port is ``base_port``."""
    low = UDP_BASE + UDP_BLOCK * (base_port - BASE_PORT)
    return low, low + UDP_BLOCK - 1


def check_ports(base_port: int, n: int) -> None:
    """Raise :class:`PortOutOfRange` unless every port of ``n`` hosts from ``base_port``
    and the lab's UDP block are valid."""
    ranges = [(what, span) for port in range(base_port, base_port + n) for what, span in host_ports(port).items()]
    for what, (low, high) in [*ranges, ("UDP", lab_udp_ports(base_port))]:
        for value in (low, high):
            if not 1 <= value <= MAX_PORT:
                raise PortOutOfRange(what, value, base_port)


def check_free_udp(what: str, port: int) -> None:
    """Raise :class:`PortInUse` when UDP 127.0.0.1:``port`` cannot be bound."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise PortInUse(what, port, exc, "UDP") from exc


def check_free(host: str, port: int, wait: float = 2.0) -> None:
    """Raise :class:`PortInUse` when 127.0.0.1:``port`` cannot be bound: another server
    holds it. Retried for ``wait`` seconds (a powered-off host's sockets close shortly
    after its processes are killed)."""
    deadline = time.monotonic() + wait
    while True:
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
                return
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                    raise PortInUse(host, port, exc) from exc
        time.sleep(0.1)
