"""Load-aware placement: a weigher and a filter on what hosts *measure*
(:mod:`clustercore.statistics`), added to the scheduler once the leader has measures.

* :class:`MeasuredLoad` weighs a host by its CPU and memory share after the placement,
  each the larger of what requests say and what is measured (plus the newcomer's request):
  requests are the floor, so a host whose workloads use more than they asked for, or that
  is busy with anything else, looks as full as it is. It spreads for ``evenly_distributed``
  and stacks (the fullest host first) for ``power_saving``.
* :class:`MemoryPressure` refuses a host whose measured available memory is below the
  workload's request, or that is swapping, whatever the requests add up to.
* :class:`MeasuredHeadroom`, where the cluster overcommits a resource (``overcommit``
  ratio above 1 for ``cpu`` or ``memory``): requests may then exceed the host's allocatable
  up to the ratio (the ceiling, as before), but only into what is measured idle: the
  host's measured use plus the newcomer's request must stay within its allocatable.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import numpy as np

from clustercore.model import Workload
from clustercore.scheduling.snapshot import Mask, Snapshot
from clustercore.statistics import Load

STACKS = {"evenly_distributed": False, "power_saving": True}


def _measured(snap: Snapshot, loads: Mapping[str, Load], candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(CPU share, memory share) measured on each candidate (NaN where nothing is)."""
    cpu = np.full(len(candidates), np.nan)
    mem = np.full(len(candidates), np.nan)
    for k, i in enumerate(candidates):
        load = loads.get(snap.hosts[int(i)].name)
        if load is not None:
            total = load.memory_used + load.memory_available
            cpu[k] = load.cpu
            mem[k] = load.memory_used / total if total > 0 else np.nan
    return cpu, mem


@attrs.frozen
class MeasuredLoad:
    loads: Mapping[str, Load] = attrs.field(repr=False)
    stack: bool = False  # the fullest host first (power saving)
    name: str = "measured-load"

    def weigh(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> np.ndarray:
        cpu_col, mem_col = snap.column("cpu"), snap.column("memory")
        assert cpu_col is not None and mem_col is not None
        hosts = candidates.astype(int)
        alloc = snap.allocatable[hosts]
        capacity = np.array([max(1.0, float(snap.hosts[i].capacity.cpu)) for i in hosts])
        memory = np.array([max(1.0, float(snap.hosts[i].capacity.memory)) for i in hosts])
        wanted_cpu = np.divide(snap.used[hosts, cpu_col] + workload.requests.cpu, alloc[:, cpu_col],
                               out=np.ones(len(hosts)), where=alloc[:, cpu_col] > 0)
        wanted_mem = np.divide(snap.used[hosts, mem_col] + workload.requests.memory, alloc[:, mem_col],
                               out=np.ones(len(hosts)), where=alloc[:, mem_col] > 0)
        cpu, mem = _measured(snap, self.loads, candidates)
        cpu = np.where(np.isnan(cpu), 0.0, cpu + workload.requests.cpu / capacity)
        mem = np.where(np.isnan(mem), 0.0, mem + workload.requests.memory / memory)
        free = 1.0 - (np.maximum(wanted_cpu, cpu) + np.maximum(wanted_mem, mem)) / 2
        return -free if self.stack else free  # type: ignore[no-any-return]


@attrs.frozen
class MemoryPressure:
    loads: Mapping[str, Load] = attrs.field(repr=False)
    name: str = "memory-pressure"

    def filter(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> Mapping[str, Mask]:
        failed = np.zeros(snap.size, dtype=bool)
        for i in candidates:
            load = self.loads.get(snap.hosts[int(i)].name)
            if load is not None and (load.memory_available < workload.requests.memory or load.swap_used > 0):
                failed[int(i)] = True
        return {"memory pressure (measured)": failed}


@attrs.frozen
class MeasuredHeadroom:
    loads: Mapping[str, Load] = attrs.field(repr=False)
    resources: tuple[str, ...] = ("cpu",)  # those the cluster overcommits
    name: str = "measured-headroom"

    def filter(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> Mapping[str, Mask]:
        out: dict[str, Mask] = {}
        for i in candidates:
            host = snap.hosts[int(i)]
            load = self.loads.get(host.name)
            if load is None:
                continue
            used = {"cpu": load.cpu * host.capacity.cpu, "memory": load.memory_used}
            for resource in self.resources:
                if used[resource] + workload.requests.get(resource) > host.allocatable.get(resource):
                    out.setdefault(f"no measured headroom for {resource} (overcommitted)",
                                   np.zeros(snap.size, dtype=bool))[int(i)] = True
                    break
        return out


def load_aware(loads: Mapping[str, Load], policy: str, overcommit: Mapping[str, float] | None = None
               ) -> tuple[list[MemoryPressure | MeasuredHeadroom], list[MeasuredLoad]]:
    """The filters and weigher to add to a scheduler given the measured ``loads`` (none
    before the first measures; no weigher for a policy that neither spreads nor packs; the
    headroom filter for the resources ``overcommit`` ratios above 1 name)."""
    if not loads:
        return [], []
    stack = STACKS.get(policy)
    over = tuple(r for r in ("cpu", "memory") if (overcommit or {}).get(r, 1.0) > 1.0)
    filters: list[MemoryPressure | MeasuredHeadroom] = [MemoryPressure(loads)]
    if over:
        filters.append(MeasuredHeadroom(loads, over))
    return filters, ([MeasuredLoad(loads, stack)] if stack is not None else [])
