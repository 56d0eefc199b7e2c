"""flavors.virt.leases.held: sees a POSIX or OFD record lock another process holds on a
file, takes none itself, and says False for a missing file. (On the lab, with a guest's
disk lease, in tests/test_lab_storage.py.)"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flavors.virt.leases import held

HOLDER = textwrap.dedent("""
    import fcntl, os, struct, sys, time
    path, kind, start, length = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    fd = os.open(path, os.O_RDWR)
    lock = fcntl.F_WRLCK if kind.endswith("write") else fcntl.F_RDLCK
    command = fcntl.F_OFD_SETLK if kind.startswith("ofd") else fcntl.F_SETLK
    fcntl.fcntl(fd, command, struct.pack("hhqqi4x", lock, os.SEEK_SET, start, length, 0))
    print("locked", flush=True)
    time.sleep(60)
""")


@contextmanager
def holding(path: Path, kind: str, start: int = 0, length: int = 1) -> Iterator[subprocess.Popen[str]]:
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), kind, str(start), str(length)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "locked\n"
        yield child
    finally:
        child.kill()
        child.wait()


def test_a_missing_file_is_not_held(tmp_path: Path) -> None:
    assert held(tmp_path / "missing") is False
    assert held(str(tmp_path / "missing")) is False


def test_an_unlocked_file_is_not_held(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 4096)
    assert held(disk) is False


def test_held_while_a_child_holds_a_lock_and_not_after_it_dies(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 4096)
    # virtlockd's direct lease: a POSIX write lock on byte 0; QEMU's image locks: OFD read
    # locks on single bytes past 100; any byte anywhere counts, also past the end of the file.
    for kind, start in (("posix-write", 0), ("posix-read", 0), ("ofd-read", 201), ("ofd-write", 8192)):
        with holding(disk, kind, start) as child:
            assert held(disk) is True, kind
            assert held(disk) is True, kind  # asking twice changes nothing
        assert child.returncode is not None
        assert held(disk) is False, kind


def test_held_takes_no_lock(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 4096)
    assert held(disk) is False
    # a child can still take a write lock over the whole file, so held() left none behind
    with holding(disk, "posix-write", 0, 0):
        assert held(disk) is True
    fd = os.open(disk, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # would raise if anyone still held a lock
    finally:
        os.close(fd)
