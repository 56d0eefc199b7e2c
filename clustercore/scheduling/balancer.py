"""The balancer: a cluster score, and a planner that proposes migrations best move first.

The score (lower is better) follows the idea of Ganeti hbal's: a sum of weighted terms
over the Up hosts, with ``m_i`` and ``c_i`` host *i*'s memory and CPU utilisation (CPU
against allocatable times its overcommit ratio) and ``n_i`` its workload count::

    spread  (evenly_distributed):          std(m) + std(c)
    pack    (power_saving):                E + 1 - mean(m^2)   E = Up hosts running anything
    count   (workload_evenly_distributed): std(n) / max(1, mean(n))
    every objective adds                   4 * N1 + 1 * soft + 100 * hard

``N1`` counts hosts whose HA workloads would not fit, in aggregate, in the others' free
memory or CPU; ``soft`` counts soft-rule violations (a matching workload in an
anti-affinity scope, a lone member of an affinity group) and ``hard`` hard ones (only ever
inherited: the planner never makes one). Packing rewards emptying a host (E falls by one)
and, before that, concentrating load (the sum of squares grows).

The planner is greedy like hbal: each round it tries moving each workload of the three
hosts that stand out most (most loaded for spread, least loaded for pack, most workloads
for count) to every host the scheduler's filters accept *with the workload released from
its host*, and keeps the move that lowers the score most. It stops when the best gain is
below ``min_gain`` or ``budget`` moves are planned. Every move therefore lowers the score
and passes every hard filter.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import numpy as np

from clustercore.model import FrozenMap, Workload, ratio_map
from clustercore.scheduling.engine import Scheduler
from clustercore.scheduling.snapshot import Snapshot, matches

WEIGHT_N1 = 4.0
WEIGHT_SOFT = 1.0
WEIGHT_HARD = 100.0
STANDOUT_HOSTS = 3


@attrs.frozen
class Score:
    total: float
    parts: FrozenMap[str, float]


def _violations(snap: Snapshot) -> tuple[int, int]:
    """(soft, hard) rule violations of the workloads placed or reserved on Up hosts."""
    soft = hard = 0
    up = snap.up
    for index, workload in snap.placed_with_rules():
        if not up[index]:
            continue
        for rule in workload.affinity:
            codes, _ = snap.domains(rule.scope)
            if codes[index] < 0:
                continue
            counts = snap.match_counts(rule.selector)
            same = codes == codes[index]
            here = int(counts[same].sum()) - (1 if matches(workload.labels, rule.selector) else 0)
            if rule.anti:
                bad = max(0, here + 1 - rule.max_per_scope)
            else:
                bad = 1 if here == 0 and int(counts.sum()) > here + 1 else 0
            if rule.hard:
                hard += bad
            else:
                soft += bad
    return soft, hard


def cluster_score(snap: Snapshot, objective: str = "spread", ratios: Mapping[str, float] | None = None) -> Score:
    """The score of ``snap`` for ``objective`` (see the module docstring). Pure."""
    ratios = ratio_map(ratios)
    up = snap.up
    cpu, mem = snap.column("cpu"), snap.column("memory")
    assert cpu is not None and mem is not None
    ratio = np.array([ratios.get(r, 1.0) for r in snap.resources])
    capacity = snap.allocatable[up] * ratio
    used = snap.used[up]
    share = np.divide(used, capacity, out=np.zeros_like(used), where=capacity > 0)
    m, c = share[:, mem], share[:, cpu]
    counts = snap.workload_counts()[up].astype(float)
    parts: dict[str, float] = {}
    if not len(m):
        return Score(0.0, FrozenMap(parts))
    if objective == "pack":
        parts["hosts in use"] = float((counts > 0).sum())
        parts["1 - mean(m^2)"] = 1.0 - float((m**2).mean())
    elif objective == "count":
        parts["std(n)/mean(n)"] = float(counts.std() / max(1.0, counts.mean()))
    elif objective == "spread":
        parts["std(m)"] = float(m.std())
        parts["std(c)"] = float(c.std())
    free = np.maximum(capacity - used, 0.0)
    ha = snap.ha_load()[up]
    others_free = free.sum(axis=0) - free
    n1 = int(((ha[:, [mem, cpu]] > others_free[:, [mem, cpu]] + 1e-9).any(axis=1)).sum())
    soft, hard = _violations(snap)
    parts["N+1 failures"] = WEIGHT_N1 * n1
    parts["soft violations"] = WEIGHT_SOFT * soft
    parts["hard violations"] = WEIGHT_HARD * hard
    return Score(sum(parts.values()), FrozenMap(parts))


@attrs.frozen
class Move:
    workload: str
    source: str
    target: str
    gain: float  # how much the score fell


@attrs.frozen
class BalancePlan:
    moves: tuple[Move, ...]
    before: Score
    after: Score
    snapshot: Snapshot = attrs.field(repr=False)


def _standouts(snap: Snapshot, objective: str) -> list[int]:
    up = np.flatnonzero(snap.up)
    counts = snap.workload_counts()
    busy = up[counts[up] > 0]
    if not len(busy):
        return []
    if objective == "count":
        key = -counts[busy].astype(float)
    else:
        mem = snap.column("memory")
        share = snap.used[busy, mem] / np.maximum(snap.allocatable[busy, mem], 1.0)
        key = share if objective == "pack" else -share
    return [int(i) for i in busy[np.argsort(key, kind="stable")[:STANDOUT_HOSTS]]]


def plan_balance(scheduler: Scheduler, budget: int = 10, min_gain: float = 1e-3,
                 ratios: Mapping[str, float] | None = None) -> BalancePlan:
    """Migrations that improve ``scheduler``'s snapshot for its policy's objective, best
    first. Pure: nothing moves; the plan's snapshot shows the cluster after the moves."""
    objective = scheduler.policy.balance
    snap = scheduler.snapshot
    before = cluster_score(snap, objective, ratios)
    current = before
    moves: list[Move] = []
    where: dict[str, int] = {}
    while objective != "none" and len(moves) < budget:
        best: tuple[float, Workload, int, int, Snapshot] | None = None
        for source in _standouts(snap, objective):
            for workload in snap.workloads_on(source):
                released = (snap.unreserve(workload.name) if workload.name in where
                            else snap.release(source, workload))
                candidates, _ = scheduler.candidates(workload, released)
                for target in candidates:
                    if target == source:
                        continue
                    after = released.reserve(int(target), workload)
                    gain = current.total - cluster_score(after, objective, ratios).total
                    if gain > min_gain and (best is None or gain > best[0] + 1e-12):
                        best = (gain, workload, source, int(target), after)
        if best is None:
            break
        gain, workload, source, target, snap = best
        where[workload.name] = target
        current = cluster_score(snap, objective, ratios)
        moves.append(Move(workload.name, snap.hosts[source].name, snap.hosts[target].name, gain))
    return BalancePlan(tuple(moves), before, current, snap)
