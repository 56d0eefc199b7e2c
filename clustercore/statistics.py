"""Statistics: what hosts and workloads really use, for the scheduler and the balancer.

Requests say what a workload may use; these say what it does. A flavor measures a host
(hook ``clustercore_sample_host``): a :class:`Sample` of *cumulative* counters (CPU time
busy and idle, each workload's CPU time, disk and network bytes) and current levels
(memory available, swap, each workload's resident memory and balloon). Two samples make
a :class:`Load` (:func:`rates`, pure): the share of the host's CPUs busy and stolen over
the interval, and per workload the CPUs it kept busy and its I/O rates. The leader keeps
a short series per host and an exponentially weighted mean (:func:`smooth`), which is what
placement and rebalancing read, so one busy second moves nothing.

Counters that go backwards (a workload restarted, a host rebooted) give no rate for that
interval: never a negative or a huge one.
"""

from __future__ import annotations

from typing import Any

import attrs

from clustercore.values import EMPTY, FrozenMap, Reader, frozen_map

MIB = 1024 * 1024


@attrs.frozen
class StatsPolicy:
    """How hosts are measured: every ``interval`` seconds (oVirt samples every 15 s;
    0: never), smoothed with weight ``alpha`` on the newest interval (0.3: about the last
    three intervals count), ``keep`` samples of history per host."""

    interval: float = 15.0
    alpha: float = 0.3
    keep: int = 40

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: object, path: str = "statistics") -> StatsPolicy:
        r = Reader("statistics policy", data, path)
        policy = cls(r.number("interval", 15.0, minimum=0.0), r.number("alpha", 0.3, minimum=0.01, maximum=1.0),
                     r.integer("keep", 40, minimum=1, maximum=10_000))
        r.done()
        return policy


@attrs.frozen
class Counters:
    """One workload as its host sees it: cumulative CPU time and I/O bytes since it
    started, its resident memory and balloon now (MiB)."""

    cpu_ns: int = 0
    memory: float = 0.0
    balloon: float = 0.0
    disk_read: int = 0
    disk_write: int = 0
    net_rx: int = 0
    net_tx: int = 0


@attrs.frozen
class Sample:
    """One host measured at ``at`` (seconds of the flavor's monotonic clock: only
    differences count): its CPUs' busy, idle and stolen time since boot (ns, all CPUs
    together), memory in MiB, and its workloads' counters by name."""

    at: float
    cpus: int
    busy_ns: int
    idle_ns: int
    memory_total: float
    memory_available: float
    steal_ns: int = 0
    swap_used: float = 0.0
    workloads: FrozenMap[str, Counters] = attrs.field(default=EMPTY, converter=frozen_map)


@attrs.frozen
class Usage:
    """What a workload used over an interval: ``cpu`` CPUs kept busy (1.5: one and a half),
    memory resident and balloon (MiB), disk and network rates (bytes/s)."""

    cpu: float = 0.0
    memory: float = 0.0
    balloon: float = 0.0
    disk_read: float = 0.0
    disk_write: float = 0.0
    net_rx: float = 0.0
    net_tx: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: object, path: str = "") -> Usage:
        r = Reader("usage", data, path)
        usage = cls(**{f.name: r.number(f.name, 0.0, minimum=0.0) for f in attrs.fields(cls)})
        r.done()
        return usage


@attrs.frozen
class Load:
    """A host's measured load: ``cpu`` and ``steal`` are shares of all its CPUs (0..1);
    memory in MiB; its workloads' usage by name."""

    cpu: float = 0.0
    steal: float = 0.0
    memory_used: float = 0.0
    memory_available: float = 0.0
    swap_used: float = 0.0
    workloads: FrozenMap[str, Usage] = attrs.field(default=EMPTY, converter=frozen_map)

    def to_dict(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "steal": self.steal, "memory_used": self.memory_used,
                "memory_available": self.memory_available, "swap_used": self.swap_used,
                "workloads": {name: u.to_dict() for name, u in sorted(self.workloads.items())}}

    @classmethod
    def from_dict(cls, data: object, path: str = "") -> Load:
        r = Reader("load", data, path)
        workloads = r.mapping("workloads")
        load = cls(r.number("cpu", 0.0, minimum=0.0, maximum=1.0), r.number("steal", 0.0, minimum=0.0, maximum=1.0),
                   r.number("memory_used", 0.0, minimum=0.0), r.number("memory_available", 0.0, minimum=0.0),
                   r.number("swap_used", 0.0, minimum=0.0),
                   {name: r.inner(Usage.from_dict, value, f"workloads.{name}") for name, value in workloads.items()})
        r.done()
        return load


def _rate(before: int, after: int, seconds: float) -> float | None:
    return None if after < before else (after - before) / seconds


def rates(before: Sample, after: Sample) -> Load | None:
    """The load between two samples of one host; None when no time passed or the host's
    own counters went backwards (it rebooted: the next interval counts)."""
    seconds = after.at - before.at
    busy, idle = after.busy_ns - before.busy_ns, after.idle_ns - before.idle_ns
    if seconds <= 0 or busy < 0 or idle < 0 or busy + idle <= 0:
        return None
    steal = max(0, after.steal_ns - before.steal_ns)
    total = busy + idle + steal
    workloads: dict[str, Usage] = {}
    for name, now in after.workloads.items():
        then = before.workloads.get(name)
        if then is None:
            continue  # new since the last sample: a rate next time
        cpu = _rate(then.cpu_ns, now.cpu_ns, seconds * 1e9)
        io = [_rate(getattr(then, f), getattr(now, f), seconds) for f in ("disk_read", "disk_write", "net_rx",
                                                                           "net_tx")]
        if cpu is None or None in io:
            continue  # it restarted in between
        workloads[name] = Usage(cpu, now.memory, now.balloon, *io)  # type: ignore[arg-type]
    return Load(min(1.0, busy / total), min(1.0, steal / total), max(0.0, after.memory_total - after.memory_available),
                after.memory_available, after.swap_used, workloads)


def _mix(old: float, new: float, alpha: float) -> float:
    return old + alpha * (new - old)


def smooth(previous: Load | None, current: Load, alpha: float) -> Load:
    """The exponentially weighted mean: ``alpha`` of the new interval, the rest of the
    history (alpha 1: the last interval alone). A workload seen for the first time
    starts at its measure; one no longer there is dropped."""
    if previous is None or alpha >= 1:
        return current
    workloads = {}
    for name, usage in current.workloads.items():
        old = previous.workloads.get(name)
        workloads[name] = usage if old is None else Usage(
            *(_mix(getattr(old, f.name), getattr(usage, f.name), alpha) for f in attrs.fields(Usage)))
    return Load(_mix(previous.cpu, current.cpu, alpha), _mix(previous.steal, current.steal, alpha),
                _mix(previous.memory_used, current.memory_used, alpha),
                _mix(previous.memory_available, current.memory_available, alpha),
                _mix(previous.swap_used, current.swap_used, alpha), workloads)
