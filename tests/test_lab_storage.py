"""The lab's storage, disk leases and guest networking (issue 15), with real guests under
TCG: ``lab.shared`` seen by every host and ``local_dir`` by one; a host losing the shared
path alone (``lose_path``) and getting it back; a running guest's disk leased (virtlockd's
lock, :func:`flavors.virt.leases.held`), a second start refused, free after a power cut;
two guests on two hosts pinging each other through the lab's switch, also after one is
live-migrated to a third host (post-copy, by the project's engine: a live pre-copy of a TCG
guest loses memory), its memory (its dirtier) and disk (its counter file) checked after."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import libvirt
import pytest

from flavors.virt import domxml
from flavors.virt.guest import (
    GuestImage,
    clone,
    console_lines,
    counter_values,
    guest_cmdline,
    guest_spec,
    lost_pages,
    ping_results,
    read_disk_file,
)
from flavors.virt.lab import Lab, LabError, LabHost
from flavors.virt.labprocs import alive, tree
from flavors.virt.leases import held
from flavors.virt.migration import MigrationPolicy, Migrator
from flavors.virt.spec import Nic, VMSpec

pytestmark = pytest.mark.slow
BASE_PORT = 16870  # hosts 16870..16872, UDP block 14320..14335


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(3, base_port=BASE_PORT) as lab:
        yield lab


def connect(host: LabHost) -> libvirt.virConnect:
    return libvirt.open(host.uri)


def wait_for(what: str, check: Callable[[], bool], timeout: float, *consoles: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {c}:\n{c.read_text(errors='replace')[-2000:] if c.exists() else '(none)'}"
                              for c in consoles)
            raise AssertionError(f"{what} not within {timeout} s\n{tails}")
        time.sleep(0.2)


def visible(host: LabHost, path: Path | str) -> bool:
    return host.in_namespace("test", "-e", str(path)).returncode == 0


def lock_holders(path: Path) -> set[int]:
    """The PIDs holding a record lock on ``path``'s inode, from /proc/locks."""
    inode = os.stat(path).st_ino
    pids = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = [f for f in line.split() if f != "->"]
        if fields[5].rsplit(":", 1)[-1] == str(inode):
            pids.add(int(fields[4]))
    return pids


def test_shared_storage_is_seen_by_every_host_and_local_storage_by_its_own(lab: Lab) -> None:
    assert not any(lab.shared.is_relative_to(h.root) for h in lab.hosts)
    (lab.shared / "everyone.txt").write_text("shared\n")
    assert all(visible(h, lab.shared / "everyone.txt") for h in lab.hosts)
    first, second = lab.hosts[0], lab.hosts[1]
    assert first.local_dir == first.root / "lib" / "images" and first.local_dir.is_dir()
    (first.local_dir / "mine.txt").write_text("local\n")
    assert visible(first, "/var/lib/libvirt/images/mine.txt")
    assert not visible(second, "/var/lib/libvirt/images/mine.txt")
    assert second.local_dir != first.local_dir


def test_a_host_loses_the_shared_path_alone_and_gets_it_back(lab: Lab) -> None:
    (lab.shared / "probe.img").write_bytes(b"\0" * 4096)
    loser, others = lab.hosts[1], [lab.hosts[0], lab.hosts[2]]
    conn = connect(loser)
    pool = conn.storagePoolCreateXML(
        f"<pool type='dir'><name>shared</name><target><path>{lab.shared}</path></target></pool>", 0)
    try:
        def names() -> list[str]:
            pool.refresh(0)
            return sorted(v.name() for v in pool.listAllVolumes(0))

        assert "probe.img" in names() and visible(loser, lab.shared / "probe.img")
        loser.lose_path(lab.shared)
        assert names() == [] and not visible(loser, lab.shared / "probe.img")
        assert all(visible(h, lab.shared / "probe.img") for h in others)
        assert (lab.shared / "probe.img").exists()  # this process still sees it too
        loser.lose_path(lab.shared)  # twice: still one tmpfs over it
        loser.restore_path(lab.shared)
        assert "probe.img" in names() and visible(loser, lab.shared / "probe.img")
        assert loser.lost_paths == set()
    finally:
        pool.destroy()
        conn.close()


def spec_for(image: GuestImage, lab: Lab, name: str, nics: tuple[Nic, ...] = (), ip: str | None = None,
             ping: str | None = None, dirty_mib: int = 0) -> VMSpec:
    disk = clone(image, lab.shared / f"{name}.qcow2")
    spec = guest_spec(image, name, disk, lab.shared / f"{name}.log", nics=nics)
    assert spec.boot is not None
    cmdline = guest_cmdline("counter", dirty_mib, ip=ip, ping=ping)
    return attrs.evolve(spec, boot=attrs.evolve(spec.boot, cmdline=cmdline))


HOLDER = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
          "fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0); print('locked', flush=True); time.sleep(60)")


def test_a_running_disk_is_leased_refused_elsewhere_and_free_after_a_power_cut(lab: Lab, image: GuestImage) -> None:
    first, second = lab.hosts[0], lab.hosts[1]
    spec = spec_for(image, lab, "leased")
    disk, console = Path(spec.disks[0].source or ""), Path(spec.console_log or "")
    twin = attrs.evolve(spec, name="leased-twin", uuid="6f1e2c4a-15d0-4c2b-9a51-2f3e4d5c6b7a")
    c1, c2 = connect(first), connect(second)
    try:
        assert not held(disk)
        c1.createXML(domxml.build(spec), 0)
        wait_for("first tick", lambda: bool(counter_values(console_lines(console))), 60, console)
        assert held(disk)
        assert lock_holders(disk) & set(first.pids("virtlockd"))  # the lease: virtlockd's lock on the disk

        started = time.monotonic()
        with pytest.raises(libvirt.libvirtError) as refused:
            c2.createXML(domxml.build(twin), 0)
        # QEMU's own image lock refuses first: libvirt acquires lockd leases only when it
        # starts the CPUs (QEMU is started paused), after QEMU has opened the image.
        assert 'Failed to get "write" lock' in str(refused.value), refused.value
        print(f"\nsecond start refused in {time.monotonic() - started:.2f} s: {refused.value}")
        assert second.active_domains() == [] and first.active_domains() == ["leased"]

        # The lease alone, where QEMU's lock does not see the holder (a process holding the
        # lease the way another host's virtlockd does): lockd refuses the start.
        other = clone(image, lab.shared / "leased-other.qcow2")
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(other)], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            alone = attrs.evolve(twin, disks=(attrs.evolve(twin.disks[0], source=str(other)),))
            with pytest.raises(libvirt.libvirtError) as busy:
                c2.createXML(domxml.build(alone), 0)
            assert str(busy.value) == f"resource busy: Lockspace resource '{other}' is locked"
            assert busy.value.get_error_code() == libvirt.VIR_ERR_RESOURCE_BUSY
            assert busy.value.get_error_domain() == libvirt.VIR_FROM_LOCKSPACE
        finally:
            holder.kill()
            holder.wait()
        assert second.active_domains() == []

        last_said = counter_values(console_lines(console))[-1]
        started = time.monotonic()
        first.power_off()
        assert not held(disk)  # power_off returns when every process of the host is gone
        cut = time.monotonic() - started
        c2.createXML(domxml.build(twin), 0)
        print(f"power cut {cut:.3f} s; started on {second.name} {time.monotonic() - started - cut:.2f} s later")
        assert held(disk) and lock_holders(disk) & set(second.pids("virtlockd"))
        wait_for("ticks on the second host", lambda: len(counter_values(console_lines(console))) > last_said + 1,
                 60, console)
        resumed = [int(line.rsplit(" ", 1)[1]) for line in console_lines(console)
                   if line.startswith("counter counter continues after")]
        assert len(resumed) == 2 and resumed[1] >= last_said
    finally:
        for conn in (c1, c2):
            with_domains(conn, lambda d: d.destroy())
            conn.close()
        first.power_on()


def with_domains(conn: libvirt.virConnect, action: Callable[[libvirt.virDomain], object]) -> None:
    try:
        domains = conn.listAllDomains(0)
    except libvirt.libvirtError:
        return  # its host is off
    for dom in domains:
        with contextlib.suppress(libvirt.libvirtError):
            action(dom)


def recent_pings_ok(console: Path, after: int, n: int = 3) -> bool:
    results = ping_results(console_lines(console))
    return len(results) >= after + n and all(results[-n:])


def test_guests_ping_each_other_across_hosts_and_after_a_live_migration(lab: Lab, image: GuestImage) -> None:
    switch = lab.switch("net0")
    hosts = lab.hosts
    nic = {name: Nic("udp", source=switch.address, local=lab.nic_endpoint(), mac=f"52:54:00:15:00:0{i}")
           for i, name in enumerate(("ping-a", "ping-b"), 1)}
    a = spec_for(image, lab, "ping-a", (nic["ping-a"],), ip="10.15.0.1/24", ping="10.15.0.2", dirty_mib=16)
    b = spec_for(image, lab, "ping-b", (nic["ping-b"],), ip="10.15.0.2/24", ping="10.15.0.1")
    log_a, log_b = Path(a.console_log or ""), Path(b.console_log or "")
    conns = [connect(h) for h in hosts]
    try:
        dom_a = conns[0].defineXML(domxml.build(a))
        dom_a.create()
        conns[1].defineXML(domxml.build(b)).create()
        wait_for("pings ok both ways", lambda: recent_pings_ok(log_a, 0) and recent_pings_ok(log_b, 0), 90,
                 log_a, log_b)
        assert "eth0 10.15.0.1/24" in console_lines(log_a) and "eth0 10.15.0.2/24" in console_lines(log_b)
        assert set(switch.table()) == {"52:54:00:15:00:01", "52:54:00:15:00:02"}
        before = {log: len(ping_results(console_lines(log))) for log in (log_a, log_b)}
        ticks_before = counter_values(console_lines(log_a))
        passes = len(lost_pages(console_lines(log_a)))

        # Live, by the project's engine: post-copy at the first memory sample (a live pre-copy of
        # this TCG guest lost 939 pages of its dirtier in the two passes after it, see
        # migration_policy); 64 MiB/s, persistent on lab3, undefined on lab1, UNSAFE (the disk
        # is on lab.shared, one file for every host).
        started = time.monotonic()
        Migrator(MigrationPolicy(post_copy=True)).migrate(
            dom_a, conns[2], vm="ping-a", source=hosts[0].name, target=hosts[2].name, memory_mib=a.memory.size,
            passthrough=False, uri="tcp://127.0.0.1", shared_disks=True)
        took = time.monotonic() - started
        assert hosts[2].active_domains() == ["ping-a"] and hosts[0].active_domains() == []
        assert conns[0].listDefinedDomains() == [] and conns[2].lookupByName("ping-a").isPersistent()

        wait_for("pings ok both ways after the migration",
                 lambda: recent_pings_ok(log_a, before[log_a] + 2) and recent_pings_ok(log_b, before[log_b] + 2), 60,
                 log_a, log_b)
        ticks = counter_values(console_lines(log_a))
        assert len(ticks) > len(ticks_before) and ticks == list(range(1, len(ticks) + 1))  # no gap, no duplicate
        wait_for("two dirtier passes after the migration", lambda: len(lost_pages(console_lines(log_a))) >= passes + 2,
                 60, log_a)
        lost = [line for line in console_lines(log_a) if re.fullmatch(r"dirty pass \d+ lost [1-9]\d* .*", line)]
        assert not any(lost_pages(console_lines(log_a))), f"{log_a.name}: {lost}"  # its memory whole
        on_disk = [int(v) for v in read_disk_file(Path(a.disks[0].source or ""), "counter").split()]
        assert on_disk == list(range(1, len(on_disk) + 1)) and on_disk[-1] >= ticks[-1]  # its disk whole
        after = [r for log in (log_a, log_b) for r in ping_results(console_lines(log))[before[log]:]]
        counters = switch.counters()
        assert counters.frames_out > 0 and counters.macs == 2
        print(f"\nmigrated in {took:.2f} s; pings after it: {after.count(True)} ok, {after.count(False)} failed; "
              f"switch {counters}")
    finally:
        for conn in conns:
            with_domains(conn, lambda d: d.destroy())
            with_domains(conn, lambda d: d.undefine())
            conn.close()


def test_stop_leaves_no_process_virtlockd_included(tmp_path: Path) -> None:
    lab = Lab(1, root=tmp_path, base_port=BASE_PORT + 3).start()
    try:
        host = lab.hosts[0]
        assert host.process is not None
        seen = tree(host.process.pid)
        assert {"virtlogd", "virtlockd", "libvirtd"} <= {name for name, _ in seen.values()}
        host.lose_path(lab.shared)
    finally:
        lab.stop()
    assert [pid for pid, process in seen.items() if alive(pid, process)] == []  # gone when stop returns
    assert host.lost_paths == set()
    with pytest.raises(LabError, match="lab1: powered off"):
        host.lose_path(lab.shared)
