"""Redfish fencing for real: lab hosts (libvirtd + QEMU guests) with Redfish BMCs (sushy-tools'
emulator serving each host, :mod:`flavors.virt.labredfish`) over https with certificates
from a lab CA; ClusterLabs' ``fence_redfish`` and the built-in ``redfish`` agent (sushy)
verify the server against that CA, and a cluster fences through them."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
import requests

from clustercore import HostState
from clustercore.certs import LabCA
from clustercore.fence_agents import AgentError, ProcessAgent, RedfishAgent
from clustercore.model import FenceDevice
from flavors.virt.lab import Lab, LabHost, domain_type
from flavors.virt.labnet import PortInUse, check_free
from flavors.virt.labredfish import LabRedfish, redfish_port
from tests.test_fencing_lab import Harness

pytestmark = [pytest.mark.slow,  # webob, sushy-tools' dependency, imports cgi
              pytest.mark.filterwarnings("ignore:'cgi' is deprecated:DeprecationWarning")]
S = HostState


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LabCA:
    return LabCA(tmp_path_factory.mktemp("redfish-ca"))


@pytest.fixture(scope="module")
def lab(ca: LabCA) -> Iterator[tuple[Lab, LabRedfish]]:
    with Lab(2, base_port=17300) as lab, LabRedfish(lab.hosts, ca, password="redfish-secret") as redfish:
        yield lab, redfish


@pytest.fixture
def powered(lab: tuple[Lab, LabRedfish]) -> tuple[Lab, LabRedfish]:
    for host in lab[0].hosts:
        host.power_on()
        host.heal()
    return lab


def test_a_redfish_port_held_elsewhere_is_refused_and_nothing_is_left_serving(tmp_path: Path) -> None:
    """Runs before the module's lab exists: its hosts' Redfish ports are free."""
    unstarted = Lab(2, base_port=17300)  # not started: its hosts only name the ports
    try:
        lab1, lab2 = unstarted.hosts
        with contextlib.closing(socket.socket()) as holder:
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            holder.bind(("127.0.0.1", redfish_port(lab2)))
            holder.listen()
            with pytest.raises(PortInUse, match=f"lab2 Redfish BMC: TCP port 127.0.0.1:{redfish_port(lab2)}"):
                LabRedfish(unstarted.hosts, LabCA(tmp_path))
        check_free("lab1", redfish_port(lab1), wait=0)  # lab1's emulator was started, then closed
        assert [t.name for t in threading.enumerate() if t.name.startswith("redfish-")] == []
    finally:
        unstarted.stop()


def a_guest(host: LabHost, name: str) -> None:
    """An OS-less guest that keeps running (LAB.md), started on ``host`` directly."""
    conn = libvirt.open(host.uri)
    try:
        conn.createXML(f"<domain type='{domain_type()}'><name>{name}</name><memory unit='MiB'>64</memory>"
                       "<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type><boot dev='network'/></os>"
                       "<devices><serial type='pty'/></devices></domain>", 0)
    finally:
        conn.close()


def alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            out.append(pid)
        except ProcessLookupError:
            pass
    return out


def power_cycle(agent: ProcessAgent | RedfishAgent, device: FenceDevice, host: LabHost) -> None:
    """status, off (the host's libvirtd and its guest really die), status, on (it boots)."""
    a_guest(host, "victim")
    victims = host.pids("libvirtd") + host.pids("qemu-system-x86")
    assert len(victims) == 2, victims
    assert agent.power(device, "status", 20) == "on"
    agent.power(device, "off", 20)
    assert not host.running and alive(victims) == []
    assert agent.power(device, "status", 20) == "off"
    agent.power(device, "on", 20)  # the BMC answers at once; the host boots
    host.wait_ready(30)
    assert agent.power(device, "status", 20) == "on" and host.active_domains() == []


def test_fence_redfish_over_https_verified_by_the_lab_ca_powers_a_host_off_and_on(
        powered: tuple[Lab, LabRedfish]) -> None:
    lab, redfish = powered
    host = lab.host("lab1")
    device = FenceDevice.from_dict(redfish.device(host))
    offs = redfish.offs("lab1")
    with socket.create_connection(("127.0.0.1", redfish_port(host))):  # a client that never says hello
        power_cycle(ProcessAgent("fence_redfish"), device, host)
    assert redfish.offs("lab1") == offs + 1


def test_fence_redfish_refuses_a_wrong_password_and_a_server_the_ca_did_not_sign(
        powered: tuple[Lab, LabRedfish], tmp_path: Path) -> None:
    lab, redfish = powered
    host = lab.host("lab2")
    agent = ProcessAgent("fence_redfish")
    offs = redfish.offs("lab2")
    systems = f"{redfish.url(host)}/Systems"  # the emulator's answer, without a fence agent
    for password, status in (("wrong-password", 401), (redfish.password, 200)):
        answer = requests.get(systems, auth=("admin", password), verify=redfish.ca.cert, timeout=10)
        assert answer.status_code == status
    with pytest.raises(AgentError, match="fence_redfish off: exit 1") as info:  # a 401 it does not expect
        agent.power(FenceDevice.from_dict(redfish.device(host, password="wrong-password")), "off", 20)
    assert "wrong-password" not in str(info.value) and redfish.password not in str(info.value)
    stranger = LabCA(tmp_path / "other", name="another CA")
    with pytest.raises(AgentError, match="CERTIFICATE_VERIFY_FAILED"):
        agent.power(FenceDevice.from_dict(redfish.device(host, ca_file=stranger.cert)), "off", 20)
    no_ca = FenceDevice.from_dict({**redfish.device(host), "options": {}})  # the system's CAs: not ours
    with pytest.raises(AgentError, match="CERTIFICATE_VERIFY_FAILED"):
        agent.power(no_ca, "off", 20)
    assert host.running and redfish.offs("lab2") == offs


def test_the_sushy_agent_with_the_ca_option(powered: tuple[Lab, LabRedfish], tmp_path: Path) -> None:
    lab, redfish = powered
    host = lab.host("lab2")
    device = FenceDevice.from_dict(redfish.device(host, agent="redfish"))
    agent = RedfishAgent()
    offs = redfish.offs("lab2")
    stranger = LabCA(tmp_path / "other", name="another CA")
    with pytest.raises(AgentError, match="CERTIFICATE_VERIFY_FAILED"):
        agent.power(FenceDevice.from_dict(redfish.device(host, agent="redfish", ca_file=stranger.cert)), "off", 10)
    with pytest.raises(AgentError) as info:
        agent.power(FenceDevice.from_dict(redfish.device(host, agent="redfish", password="wrong-password")),
                    "off", 10)
    assert "wrong-password" not in str(info.value) and redfish.password not in str(info.value)
    assert host.running and redfish.offs("lab2") == offs
    power_cycle(agent, device, host)
    assert redfish.offs("lab2") == offs + 1


def test_a_host_that_loses_its_network_is_fenced_through_redfish_and_its_ha_guest_restarts_elsewhere(
        powered: tuple[Lab, LabRedfish]) -> None:
    lab, redfish = powered
    h = Harness(lab, device=redfish.device)  # test_fencing_lab's, the fence devices on the Redfish BMCs
    try:
        h.up("lab1", "lab2")
        h.cluster.start_maintenance("lab1")
        h.until(lambda: h.cluster.host("lab1").state is S.MAINTENANCE)
        names = h.guests(1)
        h.cluster.activate_host("lab1")
        h.up("lab1")
        assert h.running_once(names) == {"f0": "lab2"}
        qemu = lab.host("lab2").pids("qemu-system-x86")
        assert len(qemu) == 1
        offs = redfish.offs("lab2")
        lab.host("lab2").cut_network()  # its guest still runs there; nothing answers
        took = h.until(lambda: h.running_once(names) == {"f0": "lab1"})
        assert not lab.host("lab2").running and alive(qemu) == []  # powered off for real by its BMC
        assert redfish.offs("lab2") == offs + 1  # one power cut, through Redfish
        assert h.cluster.host("lab2").state is S.DOWN
        fenced = h.cluster.query_events(subject="host/lab2", kind="fenced")
        assert len(fenced) == 1 and "fence_redfish@127.0.0.1: status off" in fenced[0].reason, fenced
        restarted = h.cluster.query_events(kind="restarted")
        assert [(e.subject, e.old) for e in restarted] == [("workload/f0", "lab2")]
        for _ in range(5):
            h.tick()
        assert h.running_once(names) == {"f0": "lab1"} and len(h.cluster.query_events(kind="restarted")) == 1
        print(f"\nlab2 cut -> fenced through Redfish, its HA guest running on lab1 in {took:.1f} s")
    finally:
        h.close()
