"""Rebalancing: moving running workloads so that *measured* load evens out, without flapping.

oVirt balances every minute on measured CPU load; Proxmox VE's auto-rebalance has a
threshold, a hold duration and a margin; Incus an interval, a threshold, a batch size and a
cooldown. :class:`RebalancePolicy` (``ClusterConfig.rebalance``) has all of them:

* every ``interval`` seconds the leader reads each Up host's smoothed load
  (:mod:`clustercore.statistics`): its CPU share, and its memory share (used / total);
* a host is **over** when either share exceeds the Up hosts' mean by more than
  ``threshold``, and it must stay over for ``hold`` seconds before anything moves
  (:func:`observe`: the hysteresis, kept as data);
* then :func:`plan` (pure): greedy moves off the hosts that are over, each lowering the
  measured score (the standard deviations of the CPU and the memory shares) by at least
  ``margin``; at most ``batch`` moves; never a workload moved by the rebalancer within
  ``cooldown``; only workloads their flavor can move live; only targets every hard filter
  of the scheduler accepts (capacity by requests, affinity, taints, maintenance), and never
  a move that adds an N+1 failure or a rule violation to the requests' score
  (:func:`~clustercore.scheduling.balancer.cluster_score`).

So a move happens only when it pays, a busy minute moves nothing, and a workload that
moved stays put for the cooldown: nothing moves back and forth.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import attrs
import numpy as np

from clustercore.model import FrozenMap, Reader, Workload, frozen_map
from clustercore.scheduling.balancer import cluster_score
from clustercore.scheduling.engine import Scheduler
from clustercore.scheduling.snapshot import Snapshot
from clustercore.statistics import Load

MODES = ("off", "evenly_distributed")


@attrs.frozen
class RebalancePolicy:
    """Off by default. Defaults: oVirt's one-minute interval, Proxmox's hold (3 min) and
    Incus' cooldown idea (30 min); ``threshold`` and ``margin`` are shares (0.2: twenty
    points of CPU or memory above the mean)."""

    mode: str = "off"
    interval: float = 60.0
    threshold: float = 0.2
    hold: float = 180.0
    margin: float = 0.02
    batch: int = 2
    cooldown: float = 1800.0

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: object, path: str = "rebalance") -> RebalancePolicy:
        r = Reader("rebalance policy", data, path)
        mode = r.string("mode", "off")
        if mode not in MODES:
            raise r.fail("mode", f"must be one of {', '.join(MODES)}", mode)
        policy = cls(mode, r.number("interval", 60.0, minimum=1.0), r.number("threshold", 0.2, minimum=0.0,
                                                                             maximum=1.0),
                     r.number("hold", 180.0, minimum=0.0), r.number("margin", 0.02, minimum=0.0),
                     r.integer("batch", 2, minimum=1, maximum=1000), r.number("cooldown", 1800.0, minimum=0.0))
        r.done()
        return policy


@attrs.frozen
class Hysteresis:
    """What the rebalancer remembers between rounds: since when each host has been over,
    and when each workload was last moved by it."""

    over_since: FrozenMap[str, float] = attrs.field(default=FrozenMap(), converter=frozen_map)
    moved_at: FrozenMap[str, float] = attrs.field(default=FrozenMap(), converter=frozen_map)


def shares(load: Load) -> tuple[float, float]:
    """(CPU share, memory share) of a host's load."""
    total = load.memory_used + load.memory_available
    return load.cpu, (load.memory_used / total if total > 0 else 0.0)


def over(loads: Mapping[str, Load], threshold: float) -> set[str]:
    """The hosts whose CPU or memory share exceeds the mean of ``loads`` by ``threshold``."""
    if not loads:
        return set()
    values = {name: shares(load) for name, load in loads.items()}
    cpu_mean = sum(v[0] for v in values.values()) / len(values)
    mem_mean = sum(v[1] for v in values.values()) / len(values)
    return {n for n, (c, m) in values.items() if c > cpu_mean + threshold or m > mem_mean + threshold}


def observe(memory: Hysteresis, hosts_over: Collection[str], now: float) -> Hysteresis:
    """The hysteresis after seeing ``hosts_over`` at ``now``: a host keeps its first time
    over while it stays over, and forgets it once it is not."""
    return attrs.evolve(memory, over_since={h: memory.over_since.get(h, now) for h in hosts_over})


def held(memory: Hysteresis, now: float, hold: float) -> list[str]:
    """The hosts over for at least ``hold`` seconds, sorted."""
    return sorted(h for h, since in memory.over_since.items() if now - since >= hold)


def moved(memory: Hysteresis, workloads: Collection[str], now: float, cooldown: float) -> Hysteresis:
    """Record moves at ``now``; moves older than the cooldown are forgotten."""
    kept = {w: t for w, t in memory.moved_at.items() if now - t < cooldown}
    return attrs.evolve(memory, moved_at={**kept, **dict.fromkeys(workloads, now)})


@attrs.frozen
class Move:
    workload: str
    source: str
    target: str
    before: float  # the measured score before this move
    after: float


@attrs.frozen
class Plan:
    """Moves in order (empty: nothing worth moving), the measured score before and after."""

    moves: tuple[Move, ...]
    before: float
    after: float
    hosts_over: tuple[str, ...] = ()


def measured_score(cpu: np.ndarray, memory: np.ndarray) -> float:
    return float(cpu.std() + memory.std())


def plan(scheduler: Scheduler, loads: Mapping[str, Load], sources: Collection[str], memory: Hysteresis, now: float,
         policy: RebalancePolicy, movable: Callable[[Workload], bool] = lambda w: True) -> Plan:
    """Up to ``policy.batch`` moves off ``sources`` that each lower the measured score by at
    least ``policy.margin`` (see the module docstring). Pure: nothing moves."""
    snap = scheduler.snapshot
    names = [h.name for i, h in enumerate(snap.hosts) if snap.up[i] and h.name in loads]
    index = {n: k for k, n in enumerate(names)}
    cpu = np.array([shares(loads[n])[0] for n in names])
    mem = np.array([shares(loads[n])[1] for n in names])
    cpus = np.array([max(1.0, float(snap.hosts[snap.index[n]].capacity.cpu)) for n in names])
    total_mem = np.array([max(1.0, loads[n].memory_used + loads[n].memory_available) for n in names])
    before = current = measured_score(cpu, mem)
    base = cluster_score(snap)
    guard = base.parts.get("N+1 failures", 0.0) + base.parts.get("soft violations", 0.0) \
        + base.parts.get("hard violations", 0.0)
    moves: list[Move] = []
    cooling = {w for w, t in memory.moved_at.items() if now - t < policy.cooldown}
    while len(moves) < policy.batch:
        best: tuple[float, Workload, str, str, tuple[Snapshot, np.ndarray, np.ndarray]] | None = None
        for source in sorted(sources, key=lambda n: -cpu[index[n]] if n in index else 0.0):
            if source not in index:
                continue
            s = index[source]
            usage = loads[source].workloads
            for workload in snap.workloads_on(snap.index[source]):
                if workload.name in cooling or workload.name not in usage or not movable(workload):
                    continue
                used = usage[workload.name]
                released = snap.release(snap.index[source], workload)
                targets, _ = scheduler.candidates(workload, released)
                for target_index in targets:
                    target = snap.hosts[int(target_index)].name
                    if target == source or target not in index:
                        continue
                    t = index[target]
                    cpu2, mem2 = cpu.copy(), mem.copy()
                    cpu2[s] -= used.cpu / cpus[s]
                    cpu2[t] += used.cpu / cpus[t]
                    mem2[s] -= used.memory / total_mem[s]
                    mem2[t] += used.memory / total_mem[t]
                    score = measured_score(cpu2, mem2)
                    if current - score < policy.margin or (best is not None and score >= best[0]):
                        continue
                    after = released.reserve(int(target_index), workload)
                    rules = cluster_score(after)
                    if rules.parts.get("N+1 failures", 0.0) + rules.parts.get("soft violations", 0.0) \
                            + rules.parts.get("hard violations", 0.0) > guard + 1e-9:
                        continue
                    best = (score, workload, source, target, (after, cpu2, mem2))
        if best is None:
            break
        score, workload, source, target, (snap, cpu, mem) = best
        moves.append(Move(workload.name, source, target, current, score))
        cooling.add(workload.name)
        current = score
    return Plan(tuple(moves), before, current, tuple(sorted(sources)))
