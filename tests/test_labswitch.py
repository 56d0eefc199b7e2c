"""The lab's learning L2 switch over UDP (flavors.virt.labswitch), with plain UDP sockets
standing in for QEMU's udp NICs (one Ethernet frame per datagram): broadcasts flooded,
source MACs learned, unicast to the learned port only, unknown destinations flooded,
runts dropped; a lab's switches and NIC endpoints come from its UDP port block. (Real
guests pinging through it, also across a live migration: tests/test_lab_storage.py.)"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from flavors.virt.lab import Lab
from flavors.virt.labnet import PortInUse, PortsExhausted, lab_udp_ports
from flavors.virt.labswitch import LabSwitch, LabSwitches, SwitchCounters

BASE = 16890  # lab base port of this module: UDP block 14640..14655
BROADCAST = b"\xff" * 6


def mac(n: int) -> bytes:
    return bytes([0x52, 0x54, 0, 0x15, 0, n])


def frame(dst: bytes, src: bytes, payload: bytes = b"hello") -> bytes:
    return dst + src + b"\x08\x00" + payload


@pytest.fixture
def switch() -> Iterator[LabSwitch]:
    low, _ = lab_udp_ports(BASE)
    with LabSwitch(low) as sw:
        yield sw


@pytest.fixture
def nics() -> Iterator[list[socket.socket]]:
    socks = []
    for _ in range(3):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.3)
        socks.append(sock)
    yield socks
    for sock in socks:
        sock.close()


def received(sock: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(sock.recv(65536))
        except TimeoutError:
            return got


def settle(switch: LabSwitch, frames_in: int) -> SwitchCounters:
    deadline = time.monotonic() + 2
    while switch.counters().frames_in < frames_in and time.monotonic() < deadline:
        time.sleep(0.01)
    return switch.counters()


def test_floods_broadcasts_learns_and_forwards_unicast(switch: LabSwitch, nics: list[socket.socket]) -> None:
    a, b, c = nics
    dest = ("127.0.0.1", switch.port)
    assert switch.address == f"127.0.0.1:{switch.port}"
    for sock, n in ((b, 2), (c, 3)):  # B and C say something first: the switch knows their ports
        sock.sendto(frame(BROADCAST, mac(n)), dest)
    settle(switch, 2)
    received(b), received(c)

    a.sendto(frame(BROADCAST, mac(1), b"arp who-has"), dest)  # broadcast: to every other port
    assert received(b) == [frame(BROADCAST, mac(1), b"arp who-has")]
    assert received(c) == [frame(BROADCAST, mac(1), b"arp who-has")]
    assert received(a) == []  # never back to its sender

    b.sendto(frame(mac(1), mac(2), b"reply"), dest)  # unicast to a learned MAC: only there
    assert received(a) == [frame(mac(1), mac(2), b"reply")]
    assert received(c) == []

    c.sendto(frame(mac(9), mac(3), b"to nobody known"), dest)  # unknown destination: flooded
    assert received(a) == [frame(mac(9), mac(3), b"to nobody known")]
    assert received(b) == [frame(mac(9), mac(3), b"to nobody known")]

    c.sendto(b"\x01\x02\x03", dest)  # shorter than an Ethernet header
    counters = settle(switch, 6)
    assert counters == SwitchCounters(frames_in=6, frames_out=0 + 1 + 2 + 1 + 2, flooded=4, dropped=2, macs=3)
    # dropped: B's first broadcast (no other port known yet) and the runt
    table = switch.table()
    assert table["52:54:00:15:00:01"] == f"127.0.0.1:{a.getsockname()[1]}"
    assert set(table) == {"52:54:00:15:00:01", "52:54:00:15:00:02", "52:54:00:15:00:03"}


def test_a_mac_that_moves_is_learned_at_its_new_port(switch: LabSwitch, nics: list[socket.socket]) -> None:
    a, b, c = nics
    dest = ("127.0.0.1", switch.port)
    a.sendto(frame(BROADCAST, mac(1)), dest)
    b.sendto(frame(BROADCAST, mac(2)), dest)
    c.sendto(frame(BROADCAST, mac(1)), dest)  # mac 1 now behind C (a guest moved)
    settle(switch, 3)
    received(a), received(b), received(c)
    b.sendto(frame(mac(1), mac(2), b"where are you"), dest)
    assert received(c) == [frame(mac(1), mac(2), b"where are you")]
    assert received(a) == []


def test_close_frees_the_port() -> None:
    low, _ = lab_udp_ports(BASE)
    sw = LabSwitch(low + 1)
    with pytest.raises(OSError):
        LabSwitch(low + 1)
    sw.close()
    LabSwitch(low + 1).close()


def test_a_labs_switches_and_nic_endpoints_come_from_its_udp_block() -> None:
    low, high = lab_udp_ports(BASE)
    assert (low, high) == (10000 + 16 * (BASE - 16600), 10000 + 16 * (BASE - 16600) + 15)
    nets = LabSwitches(BASE)
    try:
        net0, net1 = nets.switch("net0"), nets.switch("net1")
        assert (net0.port, net1.port) == (low, low + 1)
        assert nets.switch("net0") is net0
        endpoints = [nets.nic_endpoint() for _ in range(12)]
        assert endpoints == [f"127.0.0.1:{port}" for port in range(low + 4, high + 1)]
        with pytest.raises(PortsExhausted, match="NIC endpoints: all 12"):
            nets.nic_endpoint()
        nets.switch("net2"), nets.switch("net3")
        with pytest.raises(PortsExhausted, match="switches: all 4") as info:
            nets.switch("net4")
        assert info.value.limit == 4
    finally:
        nets.close()
    assert nets.switches == {}


def test_a_held_switch_port_is_refused_naming_it() -> None:
    low, _ = lab_udp_ports(BASE)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", low))
        nets = LabSwitches(BASE)
        with pytest.raises(PortInUse, match=rf"switch net0: UDP port 127\.0\.0\.1:{low}") as info:
            nets.switch("net0")
        assert info.value.protocol == "UDP" and info.value.port == low
        nets.close()


def test_lab_switches_are_closed_by_stop() -> None:
    lab = Lab(1, base_port=BASE)
    sw = lab.switch("net0")
    assert lab.switch("net0") is sw and sw.port == lab_udp_ports(BASE)[0]
    assert lab.nic_endpoint() == f"127.0.0.1:{sw.port + 4}"
    lab.stop()
    LabSwitch(sw.port).close()  # the port is free again
