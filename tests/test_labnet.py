"""The lab's port layout (flavors.virt.labnet), checked for every host it admits: no two
hosts share a TCP port (their own, migration, display, websocket), no two share a UDP port
(BMCs, labs' UDP blocks), every port is in 1..65535, and every base port the tests use
(16600..17599) takes a lab of 10 hosts. Pure arithmetic: no lab is started."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flavors.virt.labnet import (
    BASE_PORT,
    HOSTS,
    MAX_PORT,
    PortOutOfRange,
    check_ports,
    host_ports,
    lab_udp_ports,
)

LAST = BASE_PORT + HOSTS - 1  # the highest host TCP port of the layout
TCP_KINDS = ("TCP", "migration", "display", "websocket", "TLS", "SSH", "Redfish")


def spans(ports: range) -> list[tuple[int, int, int, str]]:
    """(low, high, host port, kind) of every TCP range of the hosts on ``ports``."""
    return [(*host_ports(port)[kind], port, kind) for port in ports for kind in TCP_KINDS]


def udp_spans(ports: range) -> list[tuple[int, int, int, str]]:
    """(low, high, port, kind) of every UDP range: each host's BMC port and the UDP block
    of a lab based on each port."""
    return [(*span, port, kind) for port in ports
            for kind, span in (("BMC", host_ports(port)["BMC"]), ("UDP block", lab_udp_ports(port)))]


def assert_disjoint(ranges: list[tuple[int, int, int, str]]) -> None:
    ordered = sorted(ranges)
    for (low, high, port, kind), (next_low, next_high, next_port, next_kind) in itertools.pairwise(ordered):
        assert low <= high
        assert high < next_low, (f"{kind} {low}..{high} of host {port} meets "
                                 f"{next_kind} {next_low}..{next_high} of host {next_port}")
    assert ordered[0][0] >= 1 and ordered[-1][1] <= MAX_PORT


def test_the_layout_admits_at_least_the_first_1000_hosts() -> None:
    assert HOSTS >= 1000 + 9  # base ports 16600..17599, each with up to 10 hosts


def test_no_two_hosts_share_a_tcp_port_and_all_are_valid() -> None:
    ranges = spans(range(BASE_PORT, LAST + 1))  # every k in [0, HOSTS)
    assert len(ranges) == len(TCP_KINDS) * HOSTS
    assert_disjoint(ranges)
    for low, high, _, kind in ranges:
        if kind in ("migration", "display", "websocket"):
            assert high - low + 1 == 10
        else:
            assert low == high
            assert not (low <= 23899 and high >= 23790), "the tests' etcd clusters listen there"
        if kind in ("TLS", "SSH", "Redfish"):
            assert low > 60999, "above the kernel's ephemeral ports"


def test_no_two_hosts_or_labs_share_a_udp_port_and_all_are_valid() -> None:
    assert_disjoint(udp_spans(range(BASE_PORT, LAST + 1)))


def test_every_base_port_up_to_17599_takes_ten_hosts() -> None:
    for base in range(BASE_PORT, LAST - 9 + 1):  # up to 17790
        check_ports(base, 10)


@pytest.mark.parametrize(("base", "n", "port"), [(LAST - 8, 10, LAST + 1), (LAST + 1, 1, LAST + 1),
                                                 (BASE_PORT - 1, 2, BASE_PORT - 1), (100, 1, 100)])
def test_a_host_outside_the_layout_is_refused_naming_its_port(base: int, n: int, port: int) -> None:
    with pytest.raises(PortOutOfRange, match=rf"lab TCP port {port} \(from base_port {base}\) is outside "
                                             rf"{BASE_PORT}\.\.{LAST}") as info:
        check_ports(base, n)
    assert (info.value.what, info.value.port, info.value.base_port) == ("TCP", port, base)
    assert (info.value.low, info.value.high) == (BASE_PORT, LAST)


@st.composite
def two_labs(draw: st.DrawFn) -> tuple[range, range]:
    """Two labs of 1 to 10 hosts within the layout, no host on both."""
    first_n, second_n = draw(st.integers(1, 10)), draw(st.integers(1, 10))
    first = draw(st.integers(BASE_PORT, LAST - first_n + 1))
    second = draw(st.integers(BASE_PORT, LAST - second_n + 1).filter(
        lambda base: base + second_n <= first or base >= first + first_n))
    return range(first, first + first_n), range(second, second + second_n)


@given(two_labs())
def test_two_labs_on_different_hosts_never_share_a_port(labs: tuple[range, range]) -> None:
    first, second = labs
    for lab in labs:
        check_ports(lab.start, len(lab))
    tcp = [{p for low, high, _, _ in spans(lab) for p in range(low, high + 1)} for lab in labs]
    udp = [set(range(lab_udp_ports(lab.start)[0], lab_udp_ports(lab.start)[1] + 1))
           | {host_ports(port)["BMC"][0] for port in lab} for lab in labs]
    assert not tcp[0] & tcp[1], (first, second)
    assert not udp[0] & udp[1], (first, second)
