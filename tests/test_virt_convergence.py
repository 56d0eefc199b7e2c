"""Migration that never corrupts, on the project's real guest (flavors.virt.guest) under
TCG between lab hosts: 256 MiB, its dirtier rewriting 176 MiB and checking every page
(lost pages), its counter (said, and in the file on its disk) checked for gaps after every
migration.

What they show (see flavors.virt.migration_policy for the measurements): a pre-copy that
cannot converge walks the downtime schedule and ends in post-copy, but on TCG copying
memory while the guest writes it loses pages (QEMU 7.2), so the default policy never does:
post-copy at the first memory sample, or a paused copy, both without a lost page; a
deadline aborts and leaves the guest on its source, intact; a local disk is copied with
the guest (NON_SHARED_DISK) and its counter goes on.

Lab hosts use TCP ports 17500.. (this module's share: 17500-17560); labnet derives their
migration, display and websocket ports (no guest networks here: the lab's UDP block is
unused)."""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest

from flavors.virt.domxml import build
from flavors.virt.guest import (
    GuestImage,
    clone,
    console_lines,
    counter_values,
    guest_spec,
    read_disk_file,
)
from flavors.virt.lab import Lab, linux_domain_type
from flavors.virt.migration import MigrationFailed, MigrationPolicy, Migrator, Progress, Sample

PORT = 17500  # this module's lab ports: 17500-17560
MIGRATION_URI = "tcp://127.0.0.1"  # the destination takes a port of its migration range
MEMORY_MIB = 256
DIRTY_MIB = 176  # as much as the 256 MiB guest holds: 200 MiB gets the dirtier OOM-killed


def domain_xml(image: GuestImage, name: str, disk: Path, console: Path, dirty_mib: int = DIRTY_MIB) -> str:
    """The real guest (256 MiB, dirtying ``dirty_mib``, its counter on ``disk``) as
    domain XML: :func:`guest_spec` written by :func:`domxml.build`."""
    spec = guest_spec(image, name, disk, console, memory=MEMORY_MIB, dirty_mib=dirty_mib,
                      uuid=str(uuid.uuid5(uuid.NAMESPACE_DNS, f"convergence-{name}")))
    return build(spec)


def wait_for(what: str, check: Callable[[], bool], timeout: float, console: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tail = console.read_text(errors="replace")[-3000:] if console.exists() else "(no console file)"
            raise AssertionError(f"{what} not within {timeout} s; console:\n{tail}")
        time.sleep(0.2)


def ticking(console: Path, ticks: int = 2) -> Callable[[], bool]:
    before = len(counter_values(console_lines(console)))
    return lambda: len(counter_values(console_lines(console))) >= before + ticks


def state(hosts: Lab, index: int, name: str) -> str:
    """What lab host ``index``'s libvirt says of domain ``name``: 'running', 'paused',
    'shutoff'... or 'absent'."""
    conn = libvirt.open(hosts.hosts[index].uri)
    try:
        dom = conn.lookupByName(name)
        code = dom.state()[0]
    except libvirt.libvirtError:
        return "absent"
    finally:
        conn.close()
    names = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_PAUSED: "paused",
             libvirt.VIR_DOMAIN_SHUTOFF: "shutoff"}
    return names.get(code, f"state {code}")


@pytest.fixture(scope="module")
def hosts() -> Iterator[Lab]:
    with Lab(2, base_port=PORT) as made:
        yield made


def dirty_passes(console: Path) -> list[tuple[int, int]]:
    """(pass, pages lost in it) for every pass the dirtier reported: a lost page can also
    hit the dirtier's own counters, so each pass's count is checked, not only the total."""
    return [(int(m.group(1)), int(m.group(2))) for line in console_lines(console)
            if (m := re.fullmatch(r"dirty pass (\d+) lost (\d+) total lost \d+", line))]


def memory_intact(console: Path, since: int) -> tuple[int, int]:
    """(passes reported after the first ``since`` ones, pages lost in them), once three
    more passes are reported; the pass numbers must go on rising."""
    wait_for("three dirtier passes", lambda: len(dirty_passes(console)) >= since + 3, 60, console)
    passes = dirty_passes(console)
    numbers = [n for n, _ in passes]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), numbers
    return len(passes) - since, sum(lost for _, lost in passes[since:])


def counter_continues(console: Path, shared_disk: bool = True) -> list[int]:
    """The counter ticks said on the console so far: 1, 2, 3... without gap or repeat; and
    (``shared_disk``) the counter file on the guest's disk, its clone beside the console on
    the shared directory, likewise, holding every tick said (written and synced first)."""
    ticks = counter_values(console_lines(console))
    assert ticks == list(range(1, len(ticks) + 1)), ticks
    if not shared_disk:
        return ticks
    on_disk = [int(v) for v in read_disk_file(console.with_suffix(".qcow2"), "counter").split()]
    assert on_disk == list(range(1, len(on_disk) + 1)) and on_disk[-1] >= ticks[-1], (on_disk, ticks[-1])
    return ticks


@pytest.fixture
def guest(image: GuestImage, hosts: Lab, request: pytest.FixtureRequest) -> Iterator[tuple[libvirt.virDomain, Path]]:
    """The dirtying guest running on lab1, its disk a clone on the lab's shared directory."""
    name = request.node.name.removeprefix("test_")[:40]
    disk = clone(image, hosts.shared / f"{name}.qcow2")
    console = hosts.shared / f"{name}.log"
    conns = [libvirt.open(h.uri) for h in hosts.hosts]
    dom = conns[0].createXML(domain_xml(image, name, disk, console), 0)
    try:
        wait_for("the dirtier's first passes", lambda: len(dirty_passes(console)) >= 2, 60, console)
        yield dom, console
    finally:
        for conn in conns:
            with contextlib.suppress(libvirt.libvirtError):
                conn.lookupByName(name).destroy()
            conn.close()


def migrate(hosts: Lab, dom: libvirt.virDomain, policy: MigrationPolicy, source: int = 0, target: int = 1,
            **kw: object) -> tuple[list[Sample], list[Progress], float]:
    """Migrate ``dom`` from lab host ``source`` to ``target``; the samples, the progress
    reports and the time taken."""
    dest = libvirt.open(hosts.hosts[target].uri)
    seen: list[Progress] = []
    started = time.monotonic()
    try:
        samples = Migrator(policy).migrate(dom, dest, vm=dom.name(), source=hosts.hosts[source].name,
                                           target=hosts.hosts[target].name, memory_mib=MEMORY_MIB,
                                           passthrough=False, uri=MIGRATION_URI, progress=seen.append,
                                           **kw)  # type: ignore[arg-type]
    finally:
        dest.close()
    return samples, seen, time.monotonic() - started


def pass_starts(samples: list[Sample], prompt: float = 0.5) -> list[tuple[int, int]]:
    """(pass, MiB left) at the first sample of each memory-copy pass: the dirty set. Only
    passes whose first sample came within ``prompt`` s of the one before (the poll is
    0.2 s): on a loaded machine a late sample sees a pass nearly copied, or none at all."""
    out: list[tuple[int, int]] = []
    previous: Sample | None = None
    for s in samples:
        if (s.iteration and previous is not None and s.iteration != previous.iteration
                and s.elapsed - previous.elapsed <= prompt):
            out.append((s.iteration, s.remaining // 2**20))
        previous = s
    return out


@pytest.mark.slow
def test_stalled_pre_copy_escalates_the_downtime_then_post_copy_completes(
        hosts: Lab, guest: tuple[libvirt.virDomain, Path]) -> None:
    """The schedule on a guest that never converges. Shortened (3 steps, one stalled pass
    each) so that it runs in about 15 s: the default's 9 steps of 2 passes take about 58 s
    at 3 s a pass (tests/test_virt_migration.py checks the default schedule's timing).
    ``tcg_pre_copy`` lets pre-copy run on this TCG guest as it would on KVM: QEMU 7.2's
    TCG then misses writes made after each dirty-bitmap sync (see migration_policy), so
    its memory is checked here only where the guest runs on KVM."""
    dom, console = guest
    since = len(dirty_passes(console))
    policy = MigrationPolicy(post_copy=True, tcg_pre_copy=True, downtime_schedule=(50, 100, 200), stall_iterations=1)
    samples, seen, took = migrate(hosts, dom, policy, shared_disks=True)
    starts = pass_starts(samples)
    switched = next(i for i, p in enumerate(seen) if p.post_copy)
    before = [p.iteration for p in seen[:switched]]
    # Pre-copy does not converge: pass after pass the dirty set stays at the dirtier's size.
    measured = [mib for n, mib in starts if 1 < n <= max(before)]
    assert max(before) >= 4 and len(measured) >= 2 and all(mib > 100 for mib in measured), (starts, samples)
    limits = [p.downtime_limit for p in seen[:switched + 1]]
    assert sorted(set(limits)) == [50, 100, 200] and limits == sorted(limits)  # raised step by step
    assert seen[switched].downtime_limit == 200 and all(p.post_copy for p in seen[switched:])
    assert state(hosts, 1, dom.name()) == "running"
    assert state(hosts, 0, dom.name()) == "absent"
    passes, lost = memory_intact(console, since)
    ticks_then = len(counter_continues(console))
    wait_for("the counter on lab2", ticking(console, 2), 30, console)
    assert len(counter_continues(console)) >= ticks_then + 2
    print(f"\nescalation: {took:.1f} s, dirty set per pass (pass, MiB) {starts}, downtime limits "
          f"{sorted(set(limits))} ms, post-copy at pass {seen[switched].iteration} after "
          f"{seen[switched].elapsed:.1f} s; {passes} passes on lab2 lost {lost} pages")
    if linux_domain_type() == "kvm":
        assert lost == 0


@pytest.mark.slow
def test_the_defaults_move_a_dirtying_tcg_guest_without_losing_a_page(
        hosts: Lab, guest: tuple[libvirt.virDomain, Path]) -> None:
    """The default policy never pre-copies a TCG guest: with post-copy allowed it switches
    at its first memory sample, without it the guest is paused for the copy. Both keep
    every page and every counter tick, there and back."""
    dom, console = guest
    name = dom.name()
    since = len(dirty_passes(console))
    _, seen, there = migrate(hosts, dom, MigrationPolicy(post_copy=True), shared_disks=True)
    assert seen and seen[-1].post_copy and max(p.iteration for p in seen if not p.post_copy) <= 1
    assert (state(hosts, 0, name), state(hosts, 1, name)) == ("absent", "running")
    passes_there, lost_there = memory_intact(console, since)
    assert lost_there == 0
    wait_for("the counter on lab2", ticking(console, 2), 30, console)
    counter_continues(console)
    since = len(dirty_passes(console))
    conn = libvirt.open(hosts.hosts[1].uri)
    try:
        _, seen, back = migrate(hosts, conn.lookupByName(name), MigrationPolicy(), 1, 0, shared_disks=True)
    finally:
        conn.close()
    assert not any(p.post_copy for p in seen)
    assert (state(hosts, 0, name), state(hosts, 1, name)) == ("running", "absent")
    passes_back, lost_back = memory_intact(console, since)
    assert lost_back == 0
    wait_for("the counter back on lab1", ticking(console, 2), 30, console)
    counter_continues(console)
    print(f"\ndefaults: post-copy at once {there:.1f} s ({passes_there} passes, {lost_there} lost); paused copy "
          f"back {back:.1f} s ({passes_back} passes, {lost_back} lost)")


@pytest.mark.slow
def test_without_post_copy_the_deadline_aborts_and_the_guest_stays_on_its_source(
        hosts: Lab, guest: tuple[libvirt.virDomain, Path]) -> None:
    """Pre-copy that cannot converge (``tcg_pre_copy``, as on KVM) and no post-copy:
    aborted at the 12 s deadline (48 s per GiB, a 256 MiB guest counts as 1 GiB: 48 s
    would do, shortened to keep the test short); then the default paused copy of a TCG
    guest, aborted at its 2 s deadline while paused. Each time libvirt still runs the
    guest on lab1 only, and it keeps every page."""
    dom, console = guest
    name = dom.name()
    # 8 MiB/s: 256 MiB cannot be copied within either deadline (at the default 64 MiB/s a
    # TCG pre-copy can complete at 12 s: it "converges" while it loses pages).
    for policy, deadline in ((MigrationPolicy(bandwidth=8, tcg_pre_copy=True, completion_timeout_per_gib=12), 12.0),
                             (MigrationPolicy(bandwidth=8, completion_timeout_per_gib=2), 2.0)):
        since = len(dirty_passes(console))
        started = time.monotonic()
        with pytest.raises(MigrationFailed, match="not complete") as failed:
            migrate(hosts, dom, policy, shared_disks=True)
        took = time.monotonic() - started
        assert deadline < took < deadline + 10 and not failed.value.post_copy
        assert (state(hosts, 0, name), state(hosts, 1, name)) == ("running", "absent")
        passes, lost = memory_intact(console, since)
        assert lost == 0
        wait_for("the counter on lab1", ticking(console, 2), 30, console)
        counter_continues(console)
        print(f"\naborted after {took:.1f} s ({failed.value.samples} samples, {failed.value.reason}); "
              f"{passes} passes on lab1 lost {lost}")
    counter_continues(console)


@pytest.mark.slow
def test_storage_migration_copies_a_local_disk_and_the_counter_goes_on(image: GuestImage, hosts: Lab) -> None:
    """The disk is a qcow2 clone in lab1's own /var/lib/libvirt/images (the same path on
    lab2 is another directory): NON_SHARED_DISK copies it into a file that lab2's ``dir``
    pool on that path creates; the guest's counter continues on lab2's copy."""
    a, b = hosts.hosts
    name = "storage-mover"
    inside = Path("/var/lib/libvirt/images") / f"{name}.qcow2"  # the path inside each host's namespace
    clone(image, a.local_dir / inside.name)
    assert not (b.local_dir / inside.name).exists()
    console = hosts.shared / f"{name}.log"
    src, dst = libvirt.open(a.uri), libvirt.open(b.uri)
    pool = dst.storagePoolCreateXML(f"<pool type='dir'><name>images</name><target><path>{inside.parent}</path>"
                                    "</target></pool>", 0)
    dom = src.createXML(domain_xml(image, name, inside, console, dirty_mib=32), 0)
    try:
        wait_for("ticks on lab1", lambda: len(counter_values(console_lines(console))) >= 3, 60, console)
        since = len(dirty_passes(console))
        samples, seen, took = migrate(hosts, dom, MigrationPolicy(), copy_disks=("vda",))
        assert (state(hosts, 0, name), state(hosts, 1, name)) == ("absent", "running")
        disk_phase = [s for s in samples if s.total == 0 and s.disk_total]
        assert disk_phase and any(p.disk_remaining_mib > 0 for p in seen)  # mirrored before the memory
        wait_for("ticks on lab2", ticking(console, 3), 30, console)
        ticks = counter_continues(console, shared_disk=False)  # its disk, on lab2 now, is read below
        on_lab2 = [int(v) for v in read_disk_file(b.local_dir / inside.name, "counter").split()]
        assert on_lab2 == list(range(1, len(on_lab2) + 1)) and on_lab2[-1] >= ticks[-1] - 1
        on_lab1 = [int(v) for v in read_disk_file(a.local_dir / inside.name, "counter").split()]
        assert on_lab1 == on_lab2[:len(on_lab1)] and len(on_lab1) < len(on_lab2)  # lab1's file stayed behind
        passes, lost = memory_intact(console, since)
        assert lost == 0
        mirror = max(s.elapsed for s in disk_phase)
        print(f"\nstorage migration: {took:.1f} s, disk ({disk_phase[0].disk_total >> 20} MiB) mirrored in "
              f"{mirror:.1f} s; counter {on_lab1[-1]} on lab1's file, {on_lab2[-1]} on lab2's; {passes} passes "
              f"lost {lost} pages")
    finally:
        for conn in (src, dst):
            with contextlib.suppress(libvirt.libvirtError):
                conn.lookupByName(name).destroy()
        with contextlib.suppress(libvirt.libvirtError):
            pool.destroy()
        src.close()
        dst.close()
