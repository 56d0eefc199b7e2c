"""Generic filters: flavor-free reasons a host cannot take a workload.

A filter's ``filter(workload, snapshot, candidates)`` returns ``{reason: mask}``: for each
reason, a boolean array over all hosts, True where the host fails for that reason
(``candidates`` are the hosts still in the running; a filter may ignore it and decide for
every host). The engine keeps, per host, the first reason that excluded it, in filter
order, and counts hosts per reason for :class:`~clustercore.errors.NoValidHost`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs
import numpy as np

from clustercore.model import AffinityRule, FrozenMap, Resources, TaintEffect, Workload, ratio_map
from clustercore.scheduling.reservations import AntiRule
from clustercore.scheduling.snapshot import Ints, Mask, Snapshot, matches
from clustercore.storage import StorageDomain, Volume, free, reaches
from clustercore.topology import NETWORK, STORAGE

Verdict = Mapping[str, Mask]


@attrs.frozen
class StateFilter:
    """Only Up, schedulable hosts take new workloads."""

    name: str = "host-state"

    def filter(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> Verdict:
        return snap.state_reasons()


@attrs.frozen
class ResourcesFilter:
    """The request fits in what is left: ``used + request <= allocatable * ratio`` for every
    resource, with per-resource overcommit ``ratios`` (default 1.0)."""

    ratios: FrozenMap[str, float] = attrs.field(factory=FrozenMap, converter=ratio_map)
    name: str = "resources"

    def filter(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> Verdict:
        asked = snap.asked(workload.requests)
        out: dict[str, Mask] = {f"insufficient {r}": np.ones(snap.size, dtype=bool) for r in asked.unknown}
        limits = snap.limits(self.ratios)
        for j, amount in enumerate(asked.vector.tolist()):
            if amount > 0:
                out[f"insufficient {snap.resources[j]}"] = asked.after(j) > limits[:, j]
        return out

    def reject_rows(self, requests: Resources, snap: Snapshot, rows: Ints | None) -> Mask:
        """The union of ``filter``'s masks at ``rows`` (None: every host): row-wise."""
        asked = snap.asked(requests)
        if asked.unknown:
            return np.ones(snap.size if rows is None else len(rows), dtype=bool)
        limits = snap.limits(self.ratios)
        out: Mask | None = None
        for j, amount in enumerate(asked.vector.tolist()):
            if amount > 0:
                if rows is None:
                    over = asked.after(j) > limits[:, j]
                else:
                    over = snap.used[:, j][rows] + asked.vector[j] > limits[:, j][rows]
                out = over if out is None else np.logical_or(out, over, out=out)
        return np.zeros(snap.size if rows is None else len(rows), dtype=bool) if out is None else out


@attrs.frozen
class HostAffinityFilter:
    """Required host labels (``host_selector``) and pinning to named hosts (``pinned``)."""

    name: str = "host-affinity"

    def filter(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> Verdict:
        out: dict[str, Mask] = {}
        if workload.pinned:
            elsewhere = np.ones(snap.size, dtype=bool)
            for name in workload.pinned:
                if name in snap.index:
                    elsewhere[snap.index[name]] = False
            out["pinned elsewhere"] = elsewhere
        for key, value in workload.host_selector.items():
            out[f"label {key}={value} missing"] = ~snap.label_mask(key, value)
        return out


@attrs.frozen
class ConnectivityFilter:
    """The host reaches every network and storage the workload needs (topology graph)."""

    name: str = "connectivity"

    def filter(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> Verdict:
        out: dict[str, Mask] = {}
        if not (workload.networks or workload.storage):
            return out
        for kind, needed in ((NETWORK, workload.networks), (STORAGE, workload.storage)):
            for target in sorted(needed):
                out[f"missing {kind} {target}"] = ~snap.reaching(kind, target)
        return out


@attrs.frozen
class VolumeFilter:
    """A workload runs only where all its volumes are: the host holding a volume on a
    local domain, or the hosts a shared domain is attached to; and, once a probe has shown
    who reaches a domain, only on those (a host that lost the domain is no target). With
    ``moving`` (a drain's targets), a workload whose driver migrates storage
    (``migrates_storage(workload)``) may take a local volume to any host of its domain with
    room for it there."""

    volumes: Mapping[str, Volume]
    domains: Mapping[str, StorageDomain]
    moving: bool = False
    migrates_storage: Callable[[Workload], bool] = lambda workload: False
    name: str = "volumes"

    def filter(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> Verdict:
        out: dict[str, Mask] = {}
        carried = self.moving and self.migrates_storage(workload)
        for name in sorted(workload.volumes):
            volume = self.volumes.get(name)
            domain = self.domains.get(volume.domain) if volume is not None else None
            if volume is None or domain is None:
                out[f"volume {name} unknown or on an unknown domain"] = np.ones(snap.size, dtype=bool)
                continue
            hosts = [h.name for h in snap.hosts]
            attached = np.array([reaches(domain, volume, h, carried) for h in hosts], dtype=bool)
            where = f"local to {volume.host}" if not domain.shared else f"domain {domain.name}"
            out[f"volume {name} not attached ({where})"] = ~attached
            if carried and not domain.shared:
                others = [v for v in self.volumes.values() if v.name != name]
                room = np.array([h == volume.host or free(domain, others, h) >= volume.size for h in hosts])
                out[f"no room for volume {name} on {domain.name}"] = attached & ~room
            reach = snap.reaching(STORAGE, domain.name)
            if reach.any():
                out[f"storage {domain.name} unreachable"] = attached & ~reach
        return out


@attrs.frozen
class TaintFilter:
    """A NoSchedule taint the workload does not tolerate keeps it off the host."""

    name: str = "taints"

    def filter(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> Verdict:
        out: dict[str, Mask] = {}
        for i in snap.tainted.tolist():
            for taint in snap.hosts[i].taints:
                tolerated = any(t.tolerates(taint) for t in workload.tolerations)
                if taint.effect is TaintEffect.NO_SCHEDULE and not tolerated:
                    reason = f"untolerated taint {taint.key}={taint.value}"
                    out.setdefault(reason, np.zeros(snap.size, dtype=bool))[i] = True
        return out


def _scope_counts(snap: Snapshot, rule_scope: str, selector: Mapping[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Per host: matching workloads in its ``rule_scope`` domain, and whether it has one."""
    counts = snap.match_counts(selector)
    if rule_scope == "host":
        return counts, np.ones(snap.size, dtype=bool)
    codes, names = snap.domains(rule_scope)
    has = codes >= 0
    if not names:  # no host has a domain of that scope
        return np.zeros(snap.size, dtype=np.int64), has
    per_domain = np.bincount(codes[has], weights=counts[has], minlength=len(names))
    return np.where(has, per_domain[np.maximum(codes, 0)], 0), has


def _label(rule: AffinityRule) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(rule.selector.items()))


@attrs.frozen
class AffinityFilter:
    """Hard workload-to-workload rules, both ways: the workload's own (affinity: go where
    matching workloads are; anti-affinity: at most ``max_per_scope`` of them per scope,
    this one included), and the hard anti-affinity of workloads already placed whose scope
    would hold more than their ``max_per_scope`` matches with this one added."""

    name: str = "affinity"

    def filter(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> Verdict:
        out = self._own(workload, snap)
        blocked = self._blocked(workload, snap)
        if not blocked:
            return out
        on = np.logical_or.reduce(list(blocked.values()))
        for index, other in snap.hard_anti_holders(on):  # those on a blocked host, in order
            for rule in other.affinity:
                if not (rule.hard and rule.anti and matches(workload.labels, rule.selector)):
                    continue
                here = blocked.get((rule.scope, rule.selector, rule.max_per_scope))
                if here is None or not here[index]:
                    continue  # the other's scope has room for one more match
                codes, _ = snap.domains(rule.scope)
                mask = out.setdefault(f"anti-affinity of {other.name}", np.zeros(snap.size, dtype=bool))
                mask |= codes == codes[index]
        return out

    def reject(self, workload: Workload, snap: Snapshot) -> Mask | None:
        """The union of ``filter``'s masks, from per-rule aggregates: the cost does not grow
        with the workloads holding rules."""
        masks = list(self._own(workload, snap).values())
        for (scope, _, _), here in self._blocked(workload, snap).items():
            codes, _ = snap.domains(scope)
            masks.append(here if scope == "host" else np.isin(codes, codes[here]))
        return np.logical_or.reduce(masks) if masks else None

    def _own(self, workload: Workload, snap: Snapshot) -> dict[str, Mask]:
        out: dict[str, Mask] = {}
        for rule in workload.affinity:
            if not rule.hard:
                continue
            counts, has = _scope_counts(snap, rule.scope, rule.selector)
            if rule.anti:
                reason, mask = f"anti-affinity {_label(rule)} per {rule.scope}", has & (counts >= rule.max_per_scope)
            elif counts.any():
                reason, mask = f"affinity {_label(rule)} per {rule.scope}", ~has | (counts == 0)
            else:
                continue  # affinity with nothing placed yet: the first of a group goes anywhere
            # two rules of one reason (same selector and scope, other limits) both apply
            out[reason] = out[reason] | mask if reason in out else mask
        return out

    @staticmethod
    def _blocked(workload: Workload, snap: Snapshot) -> dict[AntiRule, Mask]:
        """Per hard anti-affinity rule held by placed or reserved workloads and matching this
        one, the hosts holding it whose scope is full (where this one would break it)."""
        out: dict[AntiRule, Mask] = {}
        for rule in snap.anti_rules():
            scope, selector, most = rule
            if not matches(workload.labels, selector):
                continue
            counts, has = _scope_counts(snap, scope, selector)
            here = (snap.holders(rule) > 0) & has & (counts >= most)
            if here.any():
                out[rule] = here
        return out


@attrs.frozen
class SpreadFilter:
    """Topology spread: the workload's domain may hold at most ``max_skew`` more matching
    workloads than the emptiest domain, counting this one."""

    name: str = "spread"

    def filter(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> Verdict:
        out: dict[str, Mask] = {}
        for rule in workload.spread:
            codes, names = snap.domains(rule.scope)
            has = codes >= 0
            counts = snap.match_counts(rule.selector)
            eligible = has & snap.schedulable
            per_domain = np.bincount(codes[has], weights=counts[has], minlength=len(names))
            present = np.unique(codes[eligible])
            low = per_domain[present].min() if len(present) else 0.0
            own = 1 if matches(workload.labels, rule.selector) else 0
            skew = np.where(has, per_domain[np.maximum(codes, 0)] + own - low, np.inf)
            out[f"spread over {rule.scope} (max skew {rule.max_skew})"] = skew > rule.max_skew
        return out


@attrs.frozen
class HeadroomFilter:
    """N+1: after placing, the HA workloads of any one host must still fit in the free
    capacity of the other Up hosts, in aggregate, for each resource the workload requests.
    This is a necessary condition, not a packing: two 4 GiB workloads against free slots of
    2 and 6 GiB pass it (8 GiB in all) though only one would restart."""

    ratios: FrozenMap[str, float] = attrs.field(factory=FrozenMap, converter=ratio_map)
    name: str = "ha-headroom"

    def filter(self, workload: Workload, snap: Snapshot, candidates: np.ndarray) -> Verdict:
        vector, unknown = snap.vector(workload.requests)
        if unknown:
            return {}
        ratio = np.array([self.ratios.get(r, 1.0) for r in snap.resources])
        free = np.where(snap.schedulable[:, None], np.maximum(snap.allocatable * ratio - snap.used, 0.0), 0.0)
        ha = snap.ha_load()
        total = free.sum(axis=0) - vector
        cols = vector > 0
        # Hosts other than the candidate: their HA load against everyone else's free space.
        others_violate = (ha[:, cols] > (total - free)[:, cols] + 1e-9).any(axis=1)
        own_need = ha + (vector if workload.ha else 0.0)
        own_ok = ~(own_need[:, cols] > (total + vector - free)[:, cols] + 1e-9).any(axis=1)
        n_violating = int(others_violate.sum())
        if n_violating == 0:
            ok = own_ok
        elif n_violating == 1:
            ok = own_ok & others_violate
        else:
            ok = np.zeros(snap.size, dtype=bool)
        return {"N+1 headroom for HA restarts": ~ok}


WHOLE_CLUSTER = (StateFilter, ResourcesFilter, HostAffinityFilter, ConnectivityFilter, VolumeFilter, TaintFilter,
                 AffinityFilter, SpreadFilter, HeadroomFilter)
"""Filters that decide for every host and ignore ``candidates`` (the engine need not
compute the candidates left before calling them)."""

DEFAULT_FILTERS = (StateFilter(), ResourcesFilter(), HostAffinityFilter(), ConnectivityFilter(), TaintFilter(),
                   AffinityFilter(), SpreadFilter())
