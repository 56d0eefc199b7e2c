"""Guest networking for the lab without bridges or taps: a learning Ethernet switch over UDP.

A QEMU NIC of ``<interface type='udp'>`` (``-netdev socket,udp=SWITCH,localaddr=LOCAL``)
sends each Ethernet frame it transmits as one UDP datagram to its ``source`` address and
delivers each datagram it receives on its ``local`` address to the guest as one frame:
no length prefix (that framing is the stream mode's, ``-netdev socket,connect=``; checked
here: the first datagram of a booting guest is its 42-byte ARP request, broadcast
destination in bytes 0-5). :class:`LabSwitch` is the other end for any number of such
NICs: it learns which sender address each source MAC comes from, forwards unicast frames
to the learned sender, and floods broadcast, multicast and unknown destinations to every
other sender it has heard from. The lab's hosts share this machine's loopback, so guests
on different hosts (and a guest after a live migration, which keeps its NIC's local
address) reach each other through it; nothing on the machine's network changes.

:class:`LabSwitches` hands out one lab's switches (one per network name) and its guests'
NIC endpoints from the lab's UDP port block (:func:`flavors.virt.labnet.lab_udp_ports`).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

import attrs

from flavors.virt.labnet import SWITCHES, PortsExhausted, check_free_udp, lab_udp_ports

__all__ = ["LabSwitch", "LabSwitches", "SwitchCounters"]

Address = tuple[str, int]
ETHERNET_HEADER = 14  # destination MAC, source MAC, EtherType


@attrs.frozen
class SwitchCounters:
    """What a switch has done so far: datagrams (frames) received and sent, frames flooded
    (sent to every other port), frames dropped (shorter than an Ethernet header, or with
    nowhere to go: back to their own port, or no other port heard from yet), and MACs learned."""

    frames_in: int = 0
    frames_out: int = 0
    flooded: int = 0
    dropped: int = 0
    macs: int = 0


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


class LabSwitch:
    """A learning L2 switch on UDP ``address:port``, served by a daemon thread until
    :meth:`close` (also a context manager)."""

    def __init__(self, port: int, address: str = "127.0.0.1") -> None:
        self.port = port
        self.host = address
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._sock.bind((address, port))
        except OSError:
            self._sock.close()
            raise
        self._sock.settimeout(0.2)  # how soon the thread sees close()
        self._lock = threading.Lock()
        self._macs: dict[bytes, Address] = {}  # source MAC -> the sender it came from
        self._ports: dict[Address, None] = {}  # every sender heard from, in order
        self._counts = SwitchCounters()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"lab-switch-{port}", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """``ADDR:PORT``: the ``source`` of a udp NIC attached to this switch."""
        return f"{self.host}:{self.port}"

    def counters(self) -> SwitchCounters:
        with self._lock:
            return attrs.evolve(self._counts, macs=len(self._macs))

    def table(self) -> dict[str, str]:
        """The learned MACs: ``aa:bb:..`` -> the ``ADDR:PORT`` frames from it came from."""
        with self._lock:
            return {_mac(mac): f"{host}:{port}" for mac, (host, port) in self._macs.items()}

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                frame, sender = self._sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue  # an ICMP error from a gone port, reported on a later call
            self._forward(frame, sender)

    def _forward(self, frame: bytes, sender: Address) -> None:
        with self._lock:
            counts = self._counts
            if len(frame) < ETHERNET_HEADER:
                self._counts = attrs.evolve(counts, frames_in=counts.frames_in + 1, dropped=counts.dropped + 1)
                return
            destination, source = frame[:6], frame[6:12]
            self._ports[sender] = None
            if not source[0] & 1:  # a unicast source: learn (or move) it
                self._macs[source] = sender
            target = None if destination[0] & 1 else self._macs.get(destination)
            flood = target is None
            targets = [port for port in self._ports if port != sender] if target is None else \
                [] if target == sender else [target]
        sent = 0
        for port in targets:
            with contextlib.suppress(OSError):
                self._sock.sendto(frame, port)
                sent += 1
        with self._lock:
            counts = self._counts
            self._counts = attrs.evolve(counts, frames_in=counts.frames_in + 1, frames_out=counts.frames_out + sent,
                                        flooded=counts.flooded + flood, dropped=counts.dropped + (not targets))

    def close(self) -> None:
        """Stop forwarding and free the port."""
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def __enter__(self) -> LabSwitch:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class LabSwitches:
    """One lab's switches, by network name, and its guests' NIC endpoints, all from the
    lab's UDP block: switch ``i`` (in the order asked for) on its ``i``-th port, NIC
    endpoints on the ports after the :data:`~flavors.virt.labnet.SWITCHES` switch ports.
    Each port is checked free when handed out."""

    def __init__(self, base_port: int) -> None:
        self.low, self.high = lab_udp_ports(base_port)
        self.switches: dict[str, LabSwitch] = {}
        self._nics = 0

    def switch(self, name: str) -> LabSwitch:
        """The switch of network ``name``, started on first use."""
        if name not in self.switches:
            if len(self.switches) >= SWITCHES:
                raise PortsExhausted("switches", SWITCHES)
            port = self.low + len(self.switches)
            check_free_udp(f"switch {name}", port)
            self.switches[name] = LabSwitch(port)
        return self.switches[name]

    def nic_endpoint(self) -> str:
        """A fresh ``127.0.0.1:PORT`` for one NIC's ``local`` end (never handed out twice)."""
        limit = self.high - self.low + 1 - SWITCHES
        if self._nics >= limit:
            raise PortsExhausted("NIC endpoints", limit)
        port = self.low + SWITCHES + self._nics
        self._nics += 1
        check_free_udp("NIC endpoint", port)
        return f"127.0.0.1:{port}"

    def close(self) -> None:
        for switch in self.switches.values():
            switch.close()
        self.switches.clear()
