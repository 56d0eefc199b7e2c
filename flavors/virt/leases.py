"""Is a disk's lease held? Asked of the kernel's lock table, without taking any lock.

libvirt's lockd plugin (``lock_manager = "lockd"``, direct leases) has ``virtlockd`` hold a
POSIX record lock on each disk image a running guest uses, and QEMU holds OFD locks on
its images too (its own image locking). Both go with the process that holds them: a host
whose power is cut releases every lease at once. :func:`held` tells whether any process
on this machine (any namespace: locks belong to the file, not to a mount) still holds
such a lock, which is how a lab test sees a lease come and go; oVirt reads a host's
storage leases the same way to tell whether it is still alive.

The probe is ``F_OFD_GETLK`` (``F_GETLK`` where the kernel lacks OFD locks) asking for a
write lock over the whole file on a read-only descriptor: the kernel answers with the
first conflicting lock, or "unlocked", and grants nothing. ``flock(2)`` locks are a
different table and are not seen.

One POSIX trap: closing any descriptor of a file drops the traditional (non-OFD) record
locks *this process* holds on it, so do not probe a file this process locks with
``fcntl.lockf``/``F_SETLK`` itself.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
from pathlib import Path

__all__ = ["held"]

_FLOCK = "hhqqi4x"  # struct flock on Linux x86_64/aarch64: l_type, l_whence, l_start, l_len, l_pid (+ padding)
_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)


def held(path: str | os.PathLike[str]) -> bool:
    """Whether any process holds a POSIX or OFD record lock on the file ``path`` (any byte,
    read or write lock); False when the file does not exist. Never takes a lock."""
    try:
        fd = os.open(Path(path), os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    with contextlib.closing(os.fdopen(fd, "rb", buffering=0)):
        probe = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)  # l_len 0: to the end of the file
        try:
            answer = fcntl.fcntl(fd, _OFD_GETLK, probe)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: no OFD locks in this kernel
                raise
            answer = fcntl.fcntl(fd, fcntl.F_GETLK, probe)
    kind: int = struct.unpack(_FLOCK, answer)[0]
    return kind != fcntl.F_UNLCK
