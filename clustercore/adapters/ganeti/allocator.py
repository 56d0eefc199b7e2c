"""Deciding: Ganeti's rules as filters and the allocator that places instances group by
group through clustercore's Scheduler."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from clustercore.adapters.ganeti import validate
from clustercore.adapters.ganeti.cluster import GanetiCluster, Group, Spec
from clustercore.adapters.ganeti.score import GanetiScoreWeigher, score_after
from clustercore.errors import NoValidHost
from clustercore.model import Resources, Workload
from clustercore.scheduling.engine import Scheduler
from clustercore.scheduling.policies import Policy
from clustercore.scheduling.snapshot import Mask, Snapshot


@attrs.frozen(eq=False)
class ExclusionTagsFilter:
    """No two instances sharing an exclusion tag on one primary (Ganeti's FailTags)."""

    cluster: GanetiCluster
    name: str = "exclusion-tags"

    def filter(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> Mapping[str, Mask]:
        mine = {key[len("extag/"):] for key in workload.labels if key.startswith("extag/")}
        if not mine:
            return {}
        mask = np.zeros(snap.size, dtype=bool)
        for k, host in enumerate(snap.hosts):
            for other in self.cluster.primaries[self.cluster.index[host.name]]:
                if other != workload.name and mine & self.cluster.exclusion_tags(self.cluster.instances[other]):
                    mask[k] = True
        return {"exclusion tag conflict": mask}


def _ipolicy_problem(spec: Spec, ipolicy: Mapping[str, Any]) -> str | None:
    templates = ipolicy.get("disk-templates")
    if templates is not None and spec.template not in templates:
        return f"disk template {spec.template} not allowed (allowed: {', '.join(templates)})"
    # As htools: memory, vCPUs, disk count and sizes, spindle use; NIC count is not checked.
    values = {"memory-size": [spec.memory], "cpu-count": [spec.vcpus], "disk-count": [len(spec.disks)],
              "disk-size": list(spec.disks), "spindle-use": [spec.spindle_use]}
    problems = []
    for bounds in ipolicy.get("minmax") or []:
        low, high = bounds.get("min", {}), bounds.get("max", {})
        bad = [f"{k} {v} outside [{low.get(k)}, {high.get(k)}]" for k, vs in values.items() for v in vs
               if k in low and k in high and not low[k] <= v <= high[k]]
        if not bad:
            return None
        problems.append("; ".join(bad))
    return f"instance spec violates the ipolicy: {min(problems, key=len)}" if problems else None


def _lost_allocations(cluster: GanetiCluster, spec: Spec, idx: np.ndarray, ipolicy: Mapping[str, Any]
                      ) -> list[np.ndarray]:
    """Per ipolicy size (largest first), how many instances of that size each node could
    take before minus after placing ``spec`` on it."""
    sizes = sorted((b["min"] for b in ipolicy.get("minmax") or [] if "min" in b),
                   key=lambda m: m.get("memory-size", 0), reverse=True)
    free = [cluster.f_mem[idx], cluster.f_dsk[idx], cluster.free_spindles[idx]]
    need = [spec.memory, spec.disk, spec.spindle_use]
    out = []
    for size in sizes:
        unit = [max(size.get("memory-size", 1), 1), max(size.get("disk-size", 1) * size.get("disk-count", 1), 1),
                max(size.get("spindle-use", 1), 1)]
        before = np.min([np.floor(f / u) for f, u in zip(free, unit, strict=True)], axis=0)
        after = np.min([np.floor((f - n) / u) for f, n, u in zip(free, need, unit, strict=True)], axis=0)
        out.append(before - np.maximum(after, 0))
    return out


@attrs.frozen
class Choice:
    nodes: tuple[str, ...]
    score: float


class Allocator:
    """Decisions for one request, through clustercore's Scheduler, group by group."""

    def __init__(self, cluster: GanetiCluster) -> None:
        self.cluster = cluster
        self.weigher = GanetiScoreWeigher(cluster)
        self._schedulers: dict[str, Scheduler] = {}

    def scheduler(self, group: Group) -> Scheduler:
        """The group's scheduler, kept for the whole request: decisions are committed to it
        as reservations, so a batch never rebuilds its snapshot."""
        found = self._schedulers.get(group.uuid)
        if found is None:
            ratio = validate.ratio(group.ipolicy, "vcpu-ratio", f"nodegroups.{group.uuid}.ipolicy", 4.0)
            found = Scheduler(self.cluster.snapshot(group.uuid), Policy("ganeti", ((self.weigher, 1.0),)),
                              filters=[ExclusionTagsFilter(self.cluster)], ratios={"cpu": ratio})
            self._schedulers[group.uuid] = found
        return found

    def commit(self, spec: Spec, group: Group, nodes: Sequence[str]) -> None:
        """Record a decision in the cluster and in the group's scheduler."""
        sched = self.scheduler(group)
        reserve_before = self.cluster.r_mem[self.cluster.index[nodes[1]]] if len(nodes) > 1 else 0.0
        self.cluster.allocate(spec, nodes)
        sched.reserve(self.cluster.workload(spec), nodes[0])
        if len(nodes) > 1:
            raised = self.cluster.r_mem[self.cluster.index[nodes[1]]] - reserve_before
            shadow = Workload(f"{spec.name}.secondary", "ganeti",
                              requests=Resources(0, int(raised), {"disk": spec.disk}))
            sched.reserve(shadow, nodes[1])

    def groups(self, only: str | None = None) -> list[Group]:
        ordered = [g for g in self.cluster.groups.values() if g.policy == "preferred"]
        ordered += [g for g in self.cluster.groups.values() if g.policy == "last_resort"]
        return [g for g in ordered if only is None or g.uuid == only]

    def place(self, spec: Spec, nodes: int, group: Group, exclude: frozenset[str] = frozenset()) -> Choice:
        """The best ``nodes`` (1 or 2) for ``spec`` in ``group``; NoValidHost with reasons."""
        problem = _ipolicy_problem(spec, group.ipolicy)
        if problem:
            raise NoValidHost(spec.name, 0, {problem: 1})
        sched = self.scheduler(group)
        workload = self.cluster.workload(spec)
        snap = sched.snapshot
        candidates, counts = sched.candidates(workload, snap)
        names = [snap.hosts[i].name for i in candidates]
        keep = np.array([n not in exclude for n in names], dtype=bool)
        if exclude and (~keep).any():
            counts["excluded (being evacuated)"] += int((~keep).sum())
            candidates = candidates[keep]
        if not len(candidates):
            raise NoValidHost(spec.name, snap.size, counts)
        scores = self.weigher.scores(workload, snap, candidates)
        if nodes == 1:
            idx = np.array([self.cluster.index[snap.hosts[i].name] for i in candidates], dtype=np.int64)
            if self.cluster.exclusive[idx].all():
                # Dedicated (exclusive storage) groups: fewest lost allocations of each ipolicy
                # size, largest size first, then the score (Ganeti's dedicated allocation).
                lost = _lost_allocations(self.cluster, spec, idx, group.ipolicy)
                best = int(np.lexsort((scores, *lost[::-1]))[0]) if lost else int(np.argmin(scores))
            else:
                best = int(np.argmin(scores))
            return Choice((snap.hosts[candidates[best]].name,), float(scores[best]))
        return self._pair(spec, snap, candidates, scores, counts, exclude)

    def _pair(self, spec: Spec, snap: Snapshot, primaries: np.ndarray, primary_scores: np.ndarray,
              counts: Any, exclude: frozenset[str]) -> Choice:
        """Primary and secondary: every primary candidate (the best 32 by their own score on
        large groups) against every possible secondary, vectorised over secondaries."""
        raw = self.weigher.state(snap)
        up = np.flatnonzero(snap.up)  # the score's positions -> snapshot rows
        pos = np.cumsum(snap.up) - 1
        disk = snap.column("disk")
        free_disk = (snap.allocatable[:, disk] - snap.used[:, disk])[up]
        usable = snap.schedulable[up] & (free_disk >= spec.disk)
        for name in exclude:
            if name in snap.index and snap.up[snap.index[name]]:
                usable[pos[snap.index[name]]] = False
        cluster_idx = [self.cluster.index[snap.hosts[k].name] for k in up]
        if len(primaries) > 256:
            primaries = primaries[np.argsort(primary_scores, kind="stable")[:32]]
        best: Choice | None = None
        for row in primaries:
            p = int(pos[row])
            after = {k: v.copy() for k, v in raw.items()}  # the group once the primary is placed
            after["f_mem"][p] -= spec.memory
            after["f_dsk"][p] -= spec.disk
            after["u_cpu"][p] += spec.vcpus
            after["n_pri"][p] += 1
            after["u_spindles"][p] += spec.spindle_use
            after["free_spindles"][p] -= spec.spindle_use * after["exclusive"][p]
            peer = np.array([self.cluster.peers[i].get(cluster_idx[p], 0.0) for i in cluster_idx])
            reserve = np.maximum(raw["r_mem"], peer + spec.memory)
            ok = usable & (after["f_mem"] >= reserve)
            ok[p] = False
            s = np.flatnonzero(ok)
            if not len(s):
                counts["no secondary"] += 1
                continue
            # Vectorised over secondaries: only the secondary's disk, reserve and load change.
            score = score_after(after, s, {"f_dsk": after["f_dsk"][s] - spec.disk, "r_mem": reserve[s],
                                           "n_sec": after["n_sec"][s] + 1,
                                           "u_spindles": after["u_spindles"][s] + spec.spindle_use})
            k = int(np.argmin(score))
            if best is None or score[k] < best.score - 1e-12:
                best = Choice((snap.hosts[int(row)].name, snap.hosts[int(up[s[k]])].name), float(score[k]))
        if best is None:
            raise NoValidHost(spec.name, snap.size, counts)
        return best

    def allocate(self, spec: Spec, nodes: int, exclude: frozenset[str] = frozenset(),
                 only_group: str | None = None) -> tuple[Choice, Group, list[str]]:
        """Best group first among preferred ones, last_resort groups only if none works."""
        reports: list[str] = []
        for tier in ("preferred", "last_resort"):
            found: list[tuple[Choice, Group]] = []
            for group in self.groups(only_group):
                if group.policy != tier:
                    continue
                try:
                    choice = self.place(spec, nodes, group, exclude)
                except NoValidHost as exc:
                    reasons = ", ".join(f"{r}: {n}" for r, n in sorted(exc.reasons.items()))
                    reports.append(f"Group {group.name} ({group.policy}): no valid allocation ({reasons})")
                    continue
                reports.append(f"Group {group.name} ({group.policy}): score: {choice.score:.8f}")
                found.append((choice, group))
            if found:
                choice, group = min(found, key=lambda cg: cg[0].score)
                return choice, group, reports
        raise NoValidHost(spec.name, len(self.cluster.names), {"; ".join(reports) or "no allocable node group": 1})

