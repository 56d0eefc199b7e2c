"""The ports of the lab's hosts (:mod:`flavors.virt.lab`): how each is derived from the
host's TCP port, checked at construction (every one in 1..65535, or libvirtd refuses to
start long after), and checked free before a host starts (a port another server holds
would leave the lab waiting on a server that never speaks libvirt's protocol).

Host k (k = its TCP port - :data:`BASE_PORT`) has its TCP port, migration ports
``49400+20k..+19``, VNC/SPICE display ports ``20000+50k..+49``, websocket ports
``35000+50k..+49`` and its BMC's UDP port ``6230+k``. Hosts with k below 250 never
share a port; every k up to 610 stays within 65535.

Errors::

    LabError (RuntimeError)
    ├── PortOutOfRange (also ValueError): a derived port outside 1..65535
    └── PortInUse: a host's TCP port already held by another server
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
    def __init__(self, host: str, port: int, error: OSError) -> None:
        super().__init__(f"{host}: TCP port 127.0.0.1:{port} is already in use by another process ({error})")
        self.host = host
        self.port = port


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


def check_ports(base_port: int, n: int) -> None:
    """Raise :class:`PortOutOfRange` unless every port of ``n`` hosts from ``base_port`` is valid."""
    for port in range(base_port, base_port + n):
        for what, (low, high) in host_ports(port).items():
            for value in (low, high):
                if not 1 <= value <= MAX_PORT:
                    raise PortOutOfRange(what, value, base_port)


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
