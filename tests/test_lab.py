"""The lab itself (issue 15, item 5): ports checked at construction, a held port refused
at once, same-named domains on two hosts without shared cgroups, and no process left
behind after SIGTERM or SIGINT."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import libvirt
import pytest

from flavors.virt.lab import Lab, LabError, domain_type, linux_domain_type
from flavors.virt.labnet import PortInUse, PortOutOfRange

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def osless(name: str) -> str:
    """A guest that boots nothing and keeps running, as LAB.md verified."""
    return (f"<domain type='{domain_type()}'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64'>hvm</type><boot dev='network'/></os>"
            "<devices><serial type='pty'/></devices></domain>")


def test_too_high_base_port_raises_at_once_naming_the_port() -> None:
    started = time.monotonic()
    with pytest.raises(ValueError, match=r"TCP port 18000 \(from base_port 18000\) is outside 16600\.\.17799") as info:
        Lab(2, base_port=18000)  # beyond the layout: its ports would meet other hosts' (labnet.py)
    assert time.monotonic() - started < 1
    assert isinstance(info.value, PortOutOfRange) and info.value.port == 18000 and info.value.what == "TCP"
    with pytest.raises(PortOutOfRange, match="base_port 100"):
        Lab(1, base_port=100)  # below BASE_PORT: negative derived ports
    Lab(10, base_port=17590)  # refused by the old layout (websocket ports past 65535)
    Lab(10, base_port=17790)  # the highest 10 hosts of the layout: 17790..17799
    with pytest.raises(PortOutOfRange, match=r"lab TCP port 17800 \(from base_port 17791\)") as info:
        Lab(10, base_port=17791)  # one past the new maximum
    assert info.value.port == 17800


def test_a_held_port_fails_fast_naming_it(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.0.1", 16981))
        held.listen()
        started = time.monotonic()
        lab = Lab(2, root=tmp_path, base_port=16980)
        with pytest.raises(PortInUse, match=r"127\.0\.0\.1:16981") as info, lab:
            pass
        assert time.monotonic() - started < 5
        assert isinstance(info.value, LabError) and info.value.port == 16981 and info.value.host == "lab2"
        assert not any(h.running for h in lab.hosts)  # lab1, already up, was torn down


def test_two_hosts_run_a_same_named_domain_without_shared_cgroups(tmp_path: Path) -> None:
    with Lab(2, root=tmp_path, base_port=16983) as lab:
        for host in lab.hosts:
            conn = libvirt.open(host.uri)
            try:
                conn.createXML(osless("samename"), 0)
            finally:
                conn.close()
        cgroups = []
        for host in lab.hosts:
            assert host.active_domains(paused=False) == ["samename"]
            assert host.qemu_guests() == ["samename"]
            (pid,) = host.pids("qemu-system-x86")
            cgroups.append(Path(f"/proc/{pid}/cgroup").read_text())
        for text in cgroups:  # once both in /machine/qemu-1-samename.libvirt-qemu
            assert "samename" not in text and "machine" not in text, text


CHILD = """
import sys, time, libvirt
sys.path.insert(0, {repo!r})
from pathlib import Path
from flavors.virt.lab import Lab
from tests.test_lab import osless
with Lab(1, root=Path({root!r}), base_port={port}) as lab:
    conn = libvirt.open(lab.hosts[0].uri)
    conn.createXML(osless({name!r}), 0)
    conn.close()
    print("ready", flush=True)
    time.sleep(120)
"""


def lab_processes(root: Path, name: str) -> list[int]:
    """Processes of a lab under ``root`` (its mounts in their namespace) or its guest ``name``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if str(root) in (proc / "mountinfo").read_text() or f"guest={name}".encode() in (
                    proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize(("sig", "port"), [(signal.SIGTERM, 16986), (signal.SIGINT, 16988)])
def test_a_signal_tears_the_lab_down(tmp_path: Path, sig: signal.Signals, port: int) -> None:
    root, name = tmp_path / "lab", f"sig{sig.value}-{os.getpid()}"
    script = textwrap.dedent(CHILD.format(repo=str(REPO), root=str(root), port=port, name=name))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=REPO)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        assert lab_processes(root, name), "the lab and its guest run"
        child.send_signal(sig)
        code = child.wait(30)
    finally:
        child.kill()
    assert code == -sig  # SIGINT: KeyboardInterrupt, which Python turns into death by SIGINT
    deadline = time.monotonic() + 5
    while lab_processes(root, name) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert lab_processes(root, name) == []
    assert subprocess.run(["pgrep", "-f", str(root)], capture_output=True).returncode == 1
    with socket.socket() as free:
        free.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        free.bind(("127.0.0.1", port))  # no libvirtd holds it


def test_handlers_are_restored_and_chained(tmp_path: Path) -> None:
    seen = []

    def mine(sig: int, frame: object) -> None:
        seen.append(sig)

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with Lab(1, root=tmp_path, base_port=16989) as lab:
            assert signal.getsignal(signal.SIGTERM) is not mine
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen == [signal.SIGTERM] and not lab.hosts[0].running
        assert signal.getsignal(signal.SIGTERM) is mine
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM] * 2
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_linux_domain_type_avoids_kvm_pvm() -> None:
    pvm = Path("/sys/module/kvm_pvm").exists()
    kvm = os.access("/dev/kvm", os.R_OK | os.W_OK)
    assert linux_domain_type() == ("kvm" if kvm and not pvm else "qemu")
    assert domain_type() == ("kvm" if kvm else "qemu")  # unchanged for the OS-less guests
