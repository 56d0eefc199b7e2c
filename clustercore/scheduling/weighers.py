"""Generic weighers: how good each candidate host is, higher is better.

``weigh(workload, snapshot, candidates)`` returns one raw score per candidate (an array
aligned with ``candidates``). The engine normalises each weigher's scores to [0, 1] over
the candidates and multiplies them by the policy's factor for that weigher; a negative
factor turns "spread" into "stack" (least allocated times -1 is most allocated).
"""

from __future__ import annotations

import attrs
import numpy as np

from clustercore.model import TaintEffect, Workload
from clustercore.scheduling.filters import _scope_counts
from clustercore.scheduling.snapshot import Snapshot


def _utilisation(snap: Snapshot, workload: Workload, candidates: np.ndarray, resources: tuple[str, ...]) -> np.ndarray:
    """(candidates, resources) fraction of allocatable used once the workload is added.
    Computed over all hosts once per decision (memoised on the snapshot)."""
    key = ("utilisation", workload.requests, resources)
    share = snap.memo.get(key)
    if share is None:
        vector, _ = snap.vector(workload.requests)
        cols = [j for r in resources if (j := snap.column(r)) is not None]
        alloc = snap.allocatable[:, cols]
        used = snap.used[:, cols] + vector[cols]
        share = np.divide(used, alloc, out=np.ones_like(used), where=alloc > 0)
        snap.memo.clear()
        snap.memo[key] = share
    assert isinstance(share, np.ndarray)
    picked: np.ndarray = share if len(candidates) == snap.size else share[candidates]
    return picked


@attrs.frozen
class LeastAllocated:
    """Free share of ``resources`` after placing (kube's LeastAllocated; Nova's RAM/CPU
    weighers). With a negative factor it stacks (most allocated)."""

    resources: tuple[str, ...] = ("cpu", "memory")
    name: str = "least-allocated"

    def weigh(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> np.ndarray:
        return 1.0 - _utilisation(snap, workload, candidates, self.resources).mean(axis=1)  # type: ignore[no-any-return]


@attrs.frozen
class BalancedAllocation:
    """Hosts whose CPU and memory fill evenly are better (kube's BalancedAllocation)."""

    resources: tuple[str, ...] = ("cpu", "memory")
    name: str = "balanced-allocation"

    def weigh(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> np.ndarray:
        return -_utilisation(snap, workload, candidates, self.resources).std(axis=1)  # type: ignore[no-any-return]


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

    def weigh(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> np.ndarray:
        score = np.zeros(len(candidates))
        for key, value in workload.preferred_labels.items():
            score += snap.label_mask(key, value)[candidates]
        return score


@attrs.frozen
class AvoidPreferNoSchedule:
    """PreferNoSchedule taints the workload does not tolerate count against the host."""

    name: str = "prefer-no-schedule"

    def weigh(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> np.ndarray:
        penalty = np.zeros(snap.size)
        for i in snap.tainted:
            penalty[i] = sum(1 for t in snap.hosts[i].taints if t.effect is TaintEffect.PREFER_NO_SCHEDULE
                             and not any(tol.tolerates(t) for tol in workload.tolerations))
        return -penalty[candidates]  # type: ignore[no-any-return]

