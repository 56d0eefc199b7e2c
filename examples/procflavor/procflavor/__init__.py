"""A clustercore flavor for plain processes: one directory per host, one process per workload.

Uses only clustercore's public API; loaded through the ``clustercore.flavors`` entry point.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import attrs

from clustercore import Host, HostDescription, Registry, Workload, WorkloadState, hookimpl
from clustercore.model import FrozenMap, Reader
from clustercore.scheduling import ForFlavor, HostView

log = logging.getLogger(__name__)

FLAVOR = "proc"
SLOTS = "proc/slots"
DEFAULT_SLOTS = 8


@attrs.frozen
class ProcessSpec:
    """What a ``proc`` workload runs: ``argv`` in its host's directory, with ``env`` added."""

    argv: tuple[str, ...]
    env: FrozenMap[str, str]

    @classmethod
    def of(cls, workload: Workload) -> ProcessSpec:
        r = Reader("workload", workload.spec, "spec")
        argv = r.get("argv")
        if not isinstance(argv, (list, tuple)) or not argv or not all(isinstance(a, str) and a for a in argv):
            raise r.fail("argv", "must be a non-empty list of non-empty strings", argv)
        spec = cls(tuple(argv), r.str_map("env"))
        r.done()
        return spec


def is_proc_host(host: Host) -> bool:
    """Hosts of this flavor are directories: their address is an absolute path."""
    return host.address.startswith("/")


def slots(host: Host) -> int:
    facts = host.facts.get(FLAVOR)
    if isinstance(facts, Mapping) and isinstance(facts.get("slots"), int):
        return int(facts["slots"])
    return int(host.labels.get(SLOTS, DEFAULT_SLOTS))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class ProcessDriver:
    flavor = FLAVOR
    live_migration = False

    def __init__(self, stop_timeout: float = 5.0) -> None:
        self.stop_timeout = stop_timeout
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    @staticmethod
    def _paths(workload: Workload, host: Host) -> tuple[Path, Path, Path]:
        directory = Path(host.address)
        return directory, directory / f"{workload.name}.pid", directory / f"{workload.name}.log"

    def _pid(self, pidfile: Path) -> int | None:
        try:
            return int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def _reap(self) -> None:
        for pid, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[pid]

    def inspect(self, workload: Workload, host: Host) -> WorkloadState:
        self._reap()
        _, pidfile, _ = self._paths(workload, host)
        pid = self._pid(pidfile)
        if pid is None:
            return WorkloadState.ABSENT
        return WorkloadState.RUNNING if _alive(pid) else WorkloadState.STOPPED

    def start(self, workload: Workload, host: Host) -> None:
        spec = ProcessSpec.of(workload)
        directory, pidfile, logfile = self._paths(workload, host)
        if not directory.is_dir():
            raise FileNotFoundError(f"host {host.name}: directory {directory} does not exist")
        if self.inspect(workload, host) is WorkloadState.RUNNING:
            return
        with open(logfile, "ab") as out:
            child = subprocess.Popen(spec.argv, cwd=directory, env={**os.environ, **spec.env}, stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self._children[child.pid] = child
        pidfile.write_text(f"{child.pid}\n")
        log.debug("started %s as pid %d on %s", workload.name, child.pid, host.name)

    def stop(self, workload: Workload, host: Host, force: bool = False) -> None:
        _, pidfile, _ = self._paths(workload, host)
        pid = self._pid(pidfile)
        if pid is not None and _alive(pid):
            self._signal(pid, signal.SIGKILL if force else signal.SIGTERM)
            deadline = time.monotonic() + (0 if force else self.stop_timeout)
            while self._still_running(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if self._still_running(pid):
                self._signal(pid, signal.SIGKILL)
                while self._still_running(pid):
                    time.sleep(0.02)
        pidfile.unlink(missing_ok=True)

    def _still_running(self, pid: int) -> bool:
        self._reap()
        return _alive(pid)

    @staticmethod
    def _signal(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)

    def migrate(self, workload: Workload, source: Host, target: Host) -> None:
        """Processes do not move while running: stop here, start there."""
        self.stop(workload, source)
        self.start(workload, target)


@attrs.frozen
class ProcessSlotsFilter:
    """A host runs at most its number of slots of ``proc`` workloads."""

    name: str = "process-slots"

    def check(self, workload: Workload, view: HostView) -> str | None:
        if workload.flavor != FLAVOR:
            return None
        running = sum(1 for w in view.workloads if w.flavor == FLAVOR)
        return "no free process slot" if running >= slots(view.host) else None


class ProcessFlavor:
    name = FLAVOR

    def __init__(self, stop_timeout: float = 5.0) -> None:
        self.driver = ProcessDriver(stop_timeout)

    @hookimpl
    def clustercore_register(self, registry: Registry) -> None:
        registry.add_driver(self.driver)
        registry.add_filter(ForFlavor(FLAVOR, ProcessSlotsFilter()))

    @hookimpl
    def clustercore_bootstrap_host(self, host: Host) -> str | None:
        if not is_proc_host(host):
            return None  # another flavor's host
        directory = Path(host.address)
        if not directory.is_dir():
            return f"directory {host.address} does not exist"
        if not os.access(directory, os.W_OK):
            return f"directory {directory} is not writable"
        return None

    @hookimpl
    def clustercore_describe_host(self, host: Host) -> HostDescription | None:
        if not is_proc_host(host):
            return None
        count = int(host.labels.get(SLOTS, DEFAULT_SLOTS))
        facts = {"directory": host.address, "python": platform.python_version(), "cpus": os.cpu_count() or 1,
                 "slots": count}
        return HostDescription(facts=facts, extended={SLOTS: count})

    @hookimpl
    def clustercore_maintenance_veto(self) -> str | None:
        return None  # a process can always be moved by restarting it

    @hookimpl
    def clustercore_host_transition(self, new: Host, event: str) -> None:
        log.debug("host %s: %s -> %s", new.name, event, new.state)


flavor = ProcessFlavor()
