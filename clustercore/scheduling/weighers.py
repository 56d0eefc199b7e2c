"""Generic weighers: how good each candidate host is, higher is better.

``weigh(workload, snapshot, candidates)`` returns one raw score per candidate (an array
aligned with ``candidates``); ``applies(workload, snapshot)``, where a weigher has it, says
whether it can tell hosts apart at all (the engine skips it when not). The engine
normalises each weigher's scores to [0, 1] over the candidates and multiplies them by
the policy's factor for that weigher; a negative factor turns "spread" into "stack"
(least allocated times -1 is most allocated).
"""

from __future__ import annotations

import attrs
import numpy as np

from clustercore.model import Resources, TaintEffect, Workload
from clustercore.scheduling.filters import _scope_counts
from clustercore.scheduling.snapshot import Floats, Ints, Snapshot


def _shares(snap: Snapshot, requests: Resources, hosts: Ints | None, resources: tuple[str, ...]) -> list[Floats]:
    """Per resource, the fraction of allocatable used on each of ``hosts`` (None: every host)
    once the request is added (1 where nothing is allocatable): each host's from its own row
    only. Memoised on the snapshot for one decision: the least-allocated and balanced
    weighers share it."""
    asked = snap.asked(requests)
    memo = asked.extra.get(resources)
    if isinstance(memo, tuple) and memo[0] is hosts:
        return memo[1]  # type: ignore[no-any-return]
    shares = []
    every = hosts is None or len(hosts) == snap.size
    for r in resources:
        j = snap.column(r)
        if j is None:
            continue
        if every:
            after, alloc = asked.after(j), snap.allocatable[:, j]
        else:
            after, alloc = snap.used[:, j][hosts] + asked.vector[j], snap.allocatable[:, j][hosts]
        shares.append(after / alloc if snap.offered(j) else
                      np.divide(after, alloc, out=np.ones(len(after)), where=alloc > 0))
    asked.extra[resources] = (hosts, shares)
    return shares


@attrs.frozen
class LeastAllocated:
    """Free share of ``resources`` after placing (kube's LeastAllocated; Nova's RAM/CPU
    weighers). With a negative factor it stacks (most allocated). Row-wise."""

    resources: tuple[str, ...] = ("cpu", "memory")
    name: str = "least-allocated"

    def weigh(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> np.ndarray:
        return self.weigh_rows(workload.requests, snap, candidates)

    def weigh_rows(self, requests: Resources, snap: Snapshot, rows: Ints | None) -> Floats:
        shares = _shares(snap, requests, rows, self.resources)
        if len(shares) == 2:
            score = shares[0] + shares[1]
            score /= 2
            return np.subtract(1.0, score, out=score)
        return 1.0 - np.stack(shares, axis=1).mean(axis=1)  # type: ignore[no-any-return]


@attrs.frozen
class BalancedAllocation:
    """Hosts whose CPU and memory fill evenly are better (kube's BalancedAllocation): minus
    the standard deviation of the shares; for two resources minus their difference, which
    is twice that and normalises the same. Row-wise."""

    resources: tuple[str, ...] = ("cpu", "memory")
    name: str = "balanced-allocation"

    def weigh(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> np.ndarray:
        return self.weigh_rows(workload.requests, snap, candidates)

    def weigh_rows(self, requests: Resources, snap: Snapshot, rows: Ints | None) -> Floats:
        shares = _shares(snap, requests, rows, self.resources)
        if len(shares) == 2:
            score = shares[0] - shares[1]
            np.abs(score, out=score)
            return np.negative(score, out=score)
        return -np.stack(shares, axis=1).std(axis=1)  # type: ignore[no-any-return]


@attrs.frozen
class SpreadByCount:
    """Fewer workloads is better (oVirt's VM evenly distributed)."""

    name: str = "workload-count"

    def weigh(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> np.ndarray:
        return -snap.workload_counts()[candidates].astype(float)  # type: ignore[no-any-return]


@attrs.frozen
class SoftAffinity:
    """Soft rules: near matching workloads for affinity, away from them for anti-affinity,
    each rule counting with its ``weight``."""

    name: str = "soft-affinity"

    def applies(self, workload: Workload, snap: Snapshot) -> bool:
        return any(not rule.hard for rule in workload.affinity)

    def weigh(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> np.ndarray:
        score = np.zeros(len(candidates))
        for rule in workload.affinity:
            if rule.hard:
                continue
            counts, _ = _scope_counts(snap, rule.scope, rule.selector)
            score += rule.weight * (-counts[candidates] if rule.anti else (counts[candidates] > 0))
        return score


@attrs.frozen
class PreferredLabels:
    """Soft host affinity: each matched ``preferred_labels`` entry counts one."""

    name: str = "preferred-labels"

    def applies(self, workload: Workload, snap: Snapshot) -> bool:
        return bool(workload.preferred_labels)

    def weigh(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> np.ndarray:
        score = np.zeros(len(candidates))
        for key, value in workload.preferred_labels.items():
            score += snap.label_mask(key, value)[candidates]
        return score


@attrs.frozen
class AvoidPreferNoSchedule:
    """PreferNoSchedule taints the workload does not tolerate count against the host."""

    name: str = "prefer-no-schedule"

    def applies(self, workload: Workload, snap: Snapshot) -> bool:
        return len(snap.tainted) > 0 and any(t.effect is TaintEffect.PREFER_NO_SCHEDULE
                                             for i in snap.tainted.tolist() for t in snap.hosts[i].taints)

    def weigh(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> np.ndarray:
        penalty = np.zeros(snap.size)
        for i in snap.tainted:
            penalty[i] = sum(1 for t in snap.hosts[i].taints if t.effect is TaintEffect.PREFER_NO_SCHEDULE
                             and not any(tol.tolerates(t) for tol in workload.tolerations))
        return -penalty[candidates]  # type: ignore[no-any-return]

