"""The processes of a lab host (:mod:`flavors.virt.lab`), read from ``/proc``: the tree
under its ``unshare`` (the host's namespace, daemons that left their session included)
and whether a process seen once is still alive (same PID *and* start time, so a reused
PID is not mistaken for it). A zombie counts as gone: it holds no lock, port or file."""

from __future__ import annotations

import contextlib
from pathlib import Path

__all__ = ["Process", "alive", "tree"]

Process = tuple[str, str]  # (name, start time in clock ticks after boot)


def _stat(pid: int | str) -> tuple[str, list[str]]:
    """A process's name and the fields of its stat after the name (state first)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()


def tree(root: int) -> dict[int, Process]:
    """Every live process from ``root`` down: pid -> (name, start time)."""
    children: dict[int, list[int]] = {}
    info: dict[int, Process] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            name, fields = _stat(entry.name)
            pid = int(entry.name)
            if fields[0] not in "ZX":
                info[pid] = (name, fields[19])
            children.setdefault(int(fields[1]), []).append(pid)
    found: dict[int, Process] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in info:
            found[pid] = info[pid]
        todo.extend(children.get(pid, ()))
    return found


def alive(pid: int, process: Process) -> bool:
    """Whether ``process`` (as :func:`tree` saw it under ``pid``) still lives."""
    try:
        _, fields = _stat(pid)
    except (OSError, ValueError):
        return False
    return fields[0] not in "ZX" and fields[19] == process[1]
