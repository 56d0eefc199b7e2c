"""The project's real guest (flavors.virt.guest): built from Debian packages and cached,
booted under TCG on a lab host (kvm-pvm cannot boot Linux, see GUEST.md): it mounts its
disk, ticks its counter with no gap or duplicate (also across a restart) and its memory
dirtier loses no page. The domain is :func:`guest_spec` written by ``domxml.build``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest

from flavors.virt import domxml
from flavors.virt.guest import (
    GuestImage,
    build_guest,
    clone,
    console_lines,
    counter_values,
    guest_spec,
    lost_pages,
    read_disk_file,
)
from flavors.virt.lab import Lab

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def guest_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp().parent / "clustercore-guest-cache"


@pytest.fixture(scope="session")
def image(guest_cache: Path) -> GuestImage:
    return build_guest(guest_cache)


@pytest.fixture(scope="module")
def conn() -> Iterator[libvirt.virConnect]:
    with Lab(1, base_port=17160) as lab:
        c = libvirt.open(lab.hosts[0].uri)
        try:
            yield c
        finally:
            c.close()


def wait_for(what: str, check: Callable[[], bool], timeout: float, console: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tail = console.read_text(errors="replace")[-3000:] if console.exists() else "(no console file)"
            raise AssertionError(f"{what} not within {timeout} s; console:\n{tail}")
        time.sleep(0.2)


def test_build_is_cached(guest_cache: Path, image: GuestImage) -> None:
    assert image.kernel.is_file() and image.initrd.is_file() and image.template.is_file()
    assert image.kernel_version.endswith("-cloud-amd64")
    started = time.monotonic()
    assert build_guest(guest_cache) == image
    assert time.monotonic() - started < 0.5


def test_guest_counts_and_keeps_its_memory(conn: libvirt.virConnect, image: GuestImage, tmp_path: Path) -> None:
    disk = clone(image, tmp_path / "vm.qcow2")
    console = tmp_path / "console.log"
    spec = guest_spec(image, "guest-counter", disk, console, counter="counter", dirty_mib=32, volume="guest-counter",
                      storage="local")
    xml = domxml.build(spec)
    dom = conn.createXML(xml, 0)
    started = time.monotonic()
    try:
        live = domxml.parse(dom.XMLDesc(0))  # the running domain as QEMU's driver renders it (CPU, machine expanded)
        assert (live.boot, live.console_log, live.disks, live.balloon) == (spec.boot, spec.console_log, spec.disks,
                                                                           spec.balloon)
        wait_for("first tick", lambda: bool(counter_values(console_lines(console))), 30, console)
        first_tick = time.monotonic() - started
        def enough() -> bool:
            lines = console_lines(console)
            return len(counter_values(lines)) >= 4 and len(lost_pages(lines)) >= 3

        wait_for("4 ticks and 3 dirtier passes", enough, 30, console)
        lines = console_lines(console)
        assert "disk mounted" in lines
        ticks = counter_values(lines)
        assert ticks == list(range(1, len(ticks) + 1))
        assert lost_pages(lines)[-1] == 0
        on_disk = [int(v) for v in read_disk_file(disk, "counter").split()]
        assert on_disk and on_disk == list(range(1, len(on_disk) + 1))
        assert len(on_disk) >= len(ticks) - 1  # fsync'd before the console says so
        print(f"\nfirst counter tick {first_tick:.1f} s after create; ticks {ticks}; disk {on_disk}")
    finally:
        dom.destroy()

    # Started again on the same disk: the counter continues from the file, no gap, no duplicate.
    last_said = counter_values(console_lines(console))[-1]
    dom = conn.createXML(xml, 0)
    try:
        wait_for("ticks after the restart", lambda: len(counter_values(console_lines(console))) >= last_said + 2,
                 30, console)
        lines = console_lines(console)
        resumed = [int(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("counter counter continues after")]
        assert resumed[0] == 0 and resumed[1] >= last_said  # every tick said was on the disk
        ticks = counter_values(lines)
        assert ticks[last_said:] == list(range(resumed[1] + 1, resumed[1] + 1 + len(ticks) - last_said))
        values = [int(v) for v in read_disk_file(disk, "counter").split()]
        assert values == list(range(1, len(values) + 1)) and values[-1] >= ticks[-1]
    finally:
        dom.destroy()
