"""Host maintenance: move every workload away, then hold the host in Maintenance.

``Up --prepare--> PreparingForMaintenance --(drained)--> Maintenance --activate--> Initializing``

``plan_drain`` decides, purely, where each workload of the host goes: highest priority and
largest first, each placed by the scheduler on the other hosts with the moves already
planned counted as reserved. The controller carries the plan out one move at a time
through the workload's driver (live migration where the flavor has it, else stop and
start) and moves the placement in the store only once the driver reports success.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from clustercore.errors import NoValidHost
from clustercore.model import Workload
from clustercore.scheduling.engine import HostFilter, HostView, HostWeigher, place


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


def plan_drain(
    host: str, views: Sequence[HostView], filters: Sequence[HostFilter], weighers: Sequence[HostWeigher]
) -> DrainPlan:
    """Where every workload on ``host`` should go. Pure."""
    source = next((v for v in views if v.host.name == host), None)
    if source is None:
        return DrainPlan(host, ())
    others = {v.host.name: v for v in views if v.host.name != host}
    moves, stuck = [], []
    ordered: list[Workload] = sorted(
        source.workloads, key=lambda w: (-w.priority, -w.requests.memory, -w.requests.cpu, w.name)
    )
    for workload in ordered:
        try:
            target = place(workload, list(others.values()), filters, weighers)
        except NoValidHost as exc:
            stuck.append(exc)
            continue
        view = others[target]
        others[target] = attrs.evolve(view, used=view.used + workload.requests, workloads=(*view.workloads, workload))
        moves.append(Move(workload.name, host, target))
    return DrainPlan(host, tuple(moves), tuple(stuck))
