"""Host maintenance: move every workload away, then hold the host in Maintenance.

``Up --prepare--> PreparingForMaintenance --(drained)--> Maintenance --activate--> Initializing``

``plan_drain`` decides, purely, where each workload of the host goes: highest priority and
largest first, each placed by the scheduler on the other hosts with the moves already
planned counted as reserved. The controller carries the plan out one move at a time
through the workload's driver (live migration where the flavor has it, else stop and
start) and moves the placement in the store only once the driver reports success.
"""

from __future__ import annotations

import attrs

from clustercore.errors import NoValidHost
from clustercore.model import Workload
from clustercore.scheduling.engine import Scheduler


@attrs.frozen
class Move:
    workload: str
    source: str
    target: str


@attrs.frozen
class DrainPlan:
    """Moves in execution order, and the workloads no host can take (with why)."""

    host: str
    moves: tuple[Move, ...]
    stuck: tuple[NoValidHost, ...] = ()


def plan_drain(host: str, scheduler: Scheduler) -> DrainPlan:
    """Where every workload on ``host`` should go, reserving each target on ``scheduler``
    so later moves see earlier ones. ``host`` must not be schedulable (it is
    PreparingForMaintenance), so it is never its own target."""
    snap = scheduler.snapshot
    index = snap.index.get(host)
    if index is None:
        return DrainPlan(host, ())
    if snap.schedulable[index]:
        raise ValueError(f"host {host!r} is still schedulable: it would be a target of its own drain")
    ordered: list[Workload] = sorted(
        snap.workloads_on(index), key=lambda w: (-w.priority, -w.requests.memory, -w.requests.cpu, w.name)
    )
    moves, stuck = [], []
    for workload in ordered:
        try:
            moves.append(Move(workload.name, host, scheduler.schedule(workload)))
        except NoValidHost as exc:
            stuck.append(exc)
    return DrainPlan(host, tuple(moves), tuple(stuck))
