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
  measured score (:func:`measured_score`: the squared distances of the hosts' CPU and
  memory shares from their means, summed) by at least ``margin``; at most ``batch``
  moves; never a workload moved by the rebalancer within ``cooldown``; only workloads
  their flavor can move live; only targets every hard filter of the scheduler accepts
  (capacity by requests, affinity, taints, maintenance), and never a move that adds an
  N+1 failure or a rule violation to the requests' score
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

MODES = ("off", "evenly_distributed", "power_saving")


@attrs.frozen
class RebalancePolicy:
    """Off by default. Defaults: oVirt's one-minute interval, Proxmox's hold (3 min) and
    Incus' cooldown idea (30 min); ``threshold`` and ``margin`` are shares (0.2: twenty
    points of CPU or memory above the mean). ``power_saving`` (:mod:`clustercore.powersaving`)
    empties hosts below ``low`` while the others stay below ``high``, keeping ``min_up`` Up."""

    mode: str = "off"
    interval: float = 60.0
    threshold: float = 0.2
    hold: float = 180.0
    margin: float = 0.02
    batch: int = 2
    cooldown: float = 1800.0
    low: float = 0.2
    high: float = 0.75
    min_up: int = 2

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: object, path: str = "rebalance") -> RebalancePolicy:
        r = Reader("rebalance policy", data, path)
        mode = r.choice("mode", MODES, "off")
        policy = cls(mode, r.number("interval", 60.0, minimum=1.0), r.number("threshold", 0.2, minimum=0.0,
                                                                             maximum=1.0),
                     r.number("hold", 180.0, minimum=0.0), r.number("margin", 0.02, minimum=0.0),
                     r.integer("batch", 2, minimum=1, maximum=1000), r.number("cooldown", 1800.0, minimum=0.0),
                     r.number("low", 0.2, minimum=0.0, maximum=1.0), r.number("high", 0.75, minimum=0.0, maximum=1.0),
                     r.integer("min_up", 2, minimum=1))
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
    """The measured imbalance: each host's CPU and memory share's squared distance from the
    mean, summed. A move between two hosts changes it by the same amount however many hosts
    there are, so one margin serves every cluster size."""
    return float(((cpu - cpu.mean()) ** 2).sum() + ((memory - memory.mean()) ** 2).sum()) if len(cpu) else 0.0


def _spread_after(values: np.ndarray, source: int, minus: float, plus: np.ndarray) -> np.ndarray:
    """The spread (sum of squared distances from the mean) of ``values`` with ``minus``
    taken from ``source`` and ``plus[t]`` added to each target ``t`` in turn (one move per
    target), for every target at once (from the sums and sums of squares)."""
    n = len(values)
    plus = np.where(np.arange(n) == source, 0.0, plus)
    total = values.sum() - minus + plus
    squares = (values**2).sum() - values[source] ** 2 + (values[source] - minus) ** 2 + 2 * values * plus + plus**2
    return squares - total**2 / n  # type: ignore[no-any-return]


def _rules(snap: Snapshot) -> float:
    parts = cluster_score(snap).parts
    return parts.get("N+1 failures", 0.0) + parts.get("soft violations", 0.0) + parts.get("hard violations", 0.0)


def plan(scheduler: Scheduler, loads: Mapping[str, Load], sources: Collection[str], memory: Hysteresis, now: float,
         policy: RebalancePolicy, movable: Callable[[Workload], bool] = lambda w: True) -> Plan:
    """Up to ``policy.batch`` moves off ``sources`` that each lower the measured score by at
    least ``policy.margin`` (see the module docstring). Pure: nothing moves. The workloads
    of the most loaded sources (``batch`` + 2 of them) are the pool; each round scores every
    move of the pool to every target at once and keeps the best that the scheduler's filters
    (on the snapshot of that round) and the rules still accept."""
    snap = scheduler.snapshot
    measured = [i for i, h in enumerate(snap.hosts) if snap.up[i] and h.name in loads]
    position = np.full(snap.size, -1)
    position[measured] = np.arange(len(measured))
    names = [snap.hosts[i].name for i in measured]
    cpu = np.array([shares(loads[n])[0] for n in names])
    mem = np.array([shares(loads[n])[1] for n in names])
    cpus = np.array([max(1.0, float(snap.hosts[i].capacity.cpu)) for i in measured])
    total_mem = np.array([max(1.0, loads[n].memory_used + loads[n].memory_available) for n in names])
    before = current = measured_score(cpu, mem)
    guard = _rules(snap)
    moves: list[Move] = []
    cooling = {w for w, t in memory.moved_at.items() if now - t < policy.cooldown}
    order = sorted((n for n in sources if n in snap.index and position[snap.index[n]] >= 0),
                   key=lambda n: -cpu[position[snap.index[n]]])[:policy.batch + 2]
    pool: list[tuple[Workload, int, np.ndarray]] = []  # workload, its source's position, its targets' positions
    accepted: dict[Workload, np.ndarray] = {}  # by shape: the hosts the filters accept (the final pick is rechecked)
    for source in order:
        i = snap.index[source]
        usage = loads[source].workloads
        for workload in snap.workloads_on(i):
            if workload.name not in cooling and workload.name in usage and movable(workload):
                shape = attrs.evolve(workload, name="")
                if shape not in accepted:
                    accepted[shape] = scheduler.candidates(workload, snap)[0]
                targets = accepted[shape]
                targets = position[targets[(position[targets] >= 0) & (targets != i)]]
                if len(targets):
                    pool.append((workload, int(position[i]), targets))
    refused: set[tuple[str, int]] = set()
    while len(moves) < policy.batch and pool:
        options: list[tuple[float, str, int, int]] = []
        for workload, s, targets in pool:
            used = loads[names[s]].workloads[workload.name]
            scores = (_spread_after(cpu, s, used.cpu / cpus[s], used.cpu / cpus)
                      + _spread_after(mem, s, used.memory / total_mem[s], used.memory / total_mem))[targets]
            best = np.argpartition(scores, 2)[:3] if len(scores) > 3 else np.arange(len(scores))
            options.extend((float(scores[k]), workload.name, s, int(targets[k])) for k in best)
        chosen = None
        for score, name, s, t in sorted(options):
            if current - score < policy.margin:
                break
            if (name, t) in refused:
                continue
            workload = next(w for w, _, _ in pool if w.name == name)
            released = snap.release(measured[s], workload)
            ok, _ = scheduler.candidates(workload, released)
            after = released.reserve(measured[t], workload) if measured[t] in ok else None
            if after is not None and _rules(after) <= guard + 1e-9:
                chosen = (score, workload, s, t, after)
                break
            refused.add((name, t))
        if chosen is None:
            break
        score, workload, s, t, snap = chosen
        used = loads[names[s]].workloads[workload.name]
        cpu, mem = cpu.copy(), mem.copy()
        cpu[s] -= used.cpu / cpus[s]
        cpu[t] += used.cpu / cpus[t]
        mem[s] -= used.memory / total_mem[s]
        mem[t] += used.memory / total_mem[t]
        moves.append(Move(workload.name, names[s], names[t], current, score))
        pool = [entry for entry in pool if entry[0].name != workload.name]
        current = score
    return Plan(tuple(moves), before, current, tuple(sorted(sources)))
