"""The ports of the lab's hosts (:mod:`flavors.virt.lab`): how each is derived from the
host's TCP port, checked at construction (every host within the layout below, so no two
hosts share a port, and every port within 1..65535, or libvirtd refuses to start long
after), and checked free before a host starts (a port another server holds would leave
the lab waiting on a server that never speaks libvirt's protocol).

Host k = its TCP port - :data:`BASE_PORT`, for k in 0..:data:`HOSTS`-1 (1200 hosts: base
ports 16600..17799, a lab of 10 hosts from any base port up to 17790). Each kind of port
has a region of its own and each host 10 ports of it, so no two hosts, and no two kinds,
ever share a port (``tests/test_labnet.py`` checks every k). TLS, SSH and Redfish ports are
above the kernel's ephemeral range (32768..60999), so no client socket ever holds one::

    kind                 ports of host k         region (k < 1200)  protocol
    host (libvirtd)      16600 + k               16600..17799       TCP
    migration            24000 + 10k .. +9       24000..35999       TCP
    display (VNC/SPICE)  36000 + 10k .. +9       36000..47999       TCP
    websocket (VNC)      48000 + 10k .. +9       48000..59999       TCP
    TLS (libvirtd)       61000 + k               61000..62199       TCP
    SSH (sshd)           62200 + k               62200..63399       TCP
    Redfish (https)      63400 + k               63400..64599       TCP
    BMC (IPMI)           6230 + k                6230..7429         UDP
    lab UDP block        10000 + 16k .. +15      10000..29199       UDP  (k of the lab's base port)

The hosts share one network namespace, so their display and websocket ranges must be
disjoint too (libvirt's own minimums, 5900 and 5700, are met). No TCP port but the hosts'
own is derived below 24000: the tests' etcd clusters (:class:`clustercore.testing.EtcdCluster`)
listen on 23790..23899. Migration ports, which every migration binds, come first: for
k < 876 they are below the kernel's ephemeral ports (32768..). A lab host runs a few
guests: 10 ports of each kind are plenty.

A lab's UDP block (:func:`lab_udp_ports`) holds its guest networks' switches (the first 4)
and its guests' NIC endpoints (the other 12), see :mod:`flavors.virt.labswitch`. Two labs
(two base ports) never share it, nor does it meet a BMC port.

Errors::

    LabError (RuntimeError)
    ├── PortOutOfRange (also ValueError): a host beyond the layout or a port outside 1..65535
    ├── PortInUse: a host's TCP port (or a lab's UDP port) already held by another process
    └── PortsExhausted: every port of a kind in a lab's UDP block handed out
"""

from __future__ import annotations

import contextlib
import errno
import socket
import time

BASE_PORT = 16600
HOSTS = 1200  # host k = TCP port - BASE_PORT, 0 <= k < HOSTS
PER_HOST = 10  # migration, display and websocket ports of each host
MIGRATION_BASE = 24000
DISPLAY_BASE = 36000
WEBSOCKET_BASE = 48000
BMC_BASE = 6230
TLS_BASE = 61000  # libvirtd's listen_tls port (qemu+tls://)
SSH_BASE = 62200  # the host's sshd (qemu+ssh://)
REDFISH_BASE = 63400  # the host's Redfish BMC (https)
UDP_BASE = 10000
UDP_BLOCK = 16  # per lab: SWITCHES switch ports, then NIC endpoints
SWITCHES = 4
MAX_PORT = 65535


class LabError(RuntimeError):
    pass


class PortOutOfRange(LabError, ValueError):
    def __init__(self, what: str, port: int, base_port: int, low: int = 1, high: int = MAX_PORT) -> None:
        super().__init__(f"lab {what} port {port} (from base_port {base_port}) is outside {low}..{high}")
        self.what = what
        self.port = port
        self.base_port = base_port
        self.low = low
        self.high = high


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

    def span(base: int) -> tuple[int, int]:
        return base + PER_HOST * k, base + PER_HOST * k + PER_HOST - 1

    return {
        "TCP": (port, port),
        "migration": span(MIGRATION_BASE),
        "display": span(DISPLAY_BASE),  # VNC/SPICE: the hosts share one network
        "websocket": span(WEBSOCKET_BASE),
        "TLS": (TLS_BASE + k, TLS_BASE + k),
        "SSH": (SSH_BASE + k, SSH_BASE + k),
        "Redfish": (REDFISH_BASE + k, REDFISH_BASE + k),
        "BMC": (BMC_BASE + k, BMC_BASE + k),
    }


def lab_udp_ports(base_port: int) -> tuple[int, int]:
    """The UDP port block (lowest, highest) of the lab whose base port is ``base_port``."""
    low = UDP_BASE + UDP_BLOCK * (base_port - BASE_PORT)
    return low, low + UDP_BLOCK - 1


def check_ports(base_port: int, n: int) -> None:
    """Raise :class:`PortOutOfRange` unless ``n`` hosts from ``base_port`` are all in the
    layout (TCP ports ``BASE_PORT..BASE_PORT+HOSTS-1``) and every port derived from them,
    and the lab's UDP block, is in 1..65535."""
    last = BASE_PORT + HOSTS - 1
    for port in range(base_port, base_port + n):
        if not BASE_PORT <= port <= last:
            raise PortOutOfRange("TCP", port, base_port, BASE_PORT, last)
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
