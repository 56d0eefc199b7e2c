"""What the snapshots of one cluster share: per-host data computed once, on first use
(label masks, failure-domain codes, taint indices, match counts of the placed workloads,
request vectors, fit limits), and :class:`Asked`, the memo one decision keeps about its
request (the fit filter and the weighers read the same ``used + request`` columns).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from clustercore.model import FrozenMap, Host, HostState, Resources, Workload
from clustercore.scheduling.reservations import AntiRule, anti_rules, hard_anti

Mask = NDArray[np.bool_]
Floats = NDArray[np.float64]
Ints = NDArray[np.int64]


def matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    for k, v in selector.items():  # noqa: SIM110 (a loop, not all(): no generator per call)
        if labels.get(k) != v:
            return False
    return True


class Asked:
    """What the plugins of one decision share about a request on one snapshot: its vector,
    the names no column has, ``used`` with it added per column, and ``extra`` for plugins."""

    __slots__ = ("_after", "extra", "requests", "unknown", "used", "vector")

    def __init__(self, requests: Resources, used: Floats, vector: Floats, unknown: tuple[str, ...]) -> None:
        self.requests, self.used, self.vector, self.unknown = requests, used, vector, unknown
        self._after: dict[int, Floats] = {}
        self.extra: dict[object, object] = {}

    def after(self, j: int) -> Floats:
        """Column ``j`` of ``used`` with the request added on every host."""
        column = self._after.get(j)
        if column is None:
            column = self._after[j] = self.used[:, j] + self.vector[j]
        return column


class Shared:
    """Caches shared by a snapshot and the snapshots derived from it by reservations."""

    def __init__(self, hosts: tuple[Host, ...], placed: tuple[tuple[Workload, ...], ...], resources: tuple[str, ...],
                 allocatable: Floats) -> None:
        self.hosts, self.resources, self.allocatable = hosts, resources, allocatable
        self.column = {r: j for j, r in enumerate(resources)}
        self.placed = placed
        self.index = {h.name: i for i, h in enumerate(hosts)}
        self.label_masks: dict[tuple[str, str], Mask] = {}
        self.domain_cache: dict[str, tuple[Ints, tuple[str, ...]]] = {}
        self.counts: dict[FrozenMap[str, str], Ints] = {}
        self.state = np.array([h.state is HostState.UP for h in hosts], dtype=bool)
        self.schedulable = np.array([h.state is HostState.UP and h.schedulable for h in hosts], dtype=bool)
        self.workload_count = np.array([len(p) for p in placed], dtype=np.int64)
        self.tainted = np.array([i for i, h in enumerate(hosts) if h.taints], dtype=np.int64)
        self.everyone = np.arange(len(hosts), dtype=np.int64)
        self.everyone.flags.writeable = False
        self.reasons: dict[str, Mask] | None = None
        self.reach: dict[tuple[str, str], Mask] = {}
        self.ha_load: Floats | None = None
        self.with_rules = [(i, w) for i, group in enumerate(placed) for w in group if w.affinity]
        self.hard_anti = [(i, w) for i, w in self.with_rules if hard_anti(w)]
        self.hard_anti_set = set(self.hard_anti)
        self.pairs: dict[tuple[str, str], Ints] | None = None
        self.vectors: dict[Resources, tuple[Floats, tuple[str, ...]]] = {}
        self.limit_cache: dict[FrozenMap[str, float], Floats] = {}
        self.offered_cache: dict[int, bool] = {}
        self.anti = dict.fromkeys(rule for _, w in self.hard_anti for rule in anti_rules(w))
        self.holders: dict[AntiRule, Ints] = {}

    def pair_counts(self) -> dict[tuple[str, str], Ints]:
        """Per label pair, how many placed workloads on each host carry it (one pass)."""
        if self.pairs is None:
            pairs: dict[tuple[str, str], Ints] = {}
            size = len(self.hosts)
            for i, group in enumerate(self.placed):
                for w in group:
                    for pair in w.labels.items():
                        counts = pairs.get(pair)
                        if counts is None:
                            counts = pairs[pair] = np.zeros(size, dtype=np.int64)
                        counts[i] += 1
            self.pairs = pairs
        return self.pairs

    def vector(self, resources: Resources) -> tuple[Floats, tuple[str, ...]]:
        """``resources`` as a row aligned with the columns (read-only, cached), and the
        requested names no column has (no host offers them)."""
        cached = self.vectors.get(resources)
        if cached is None:
            row = np.zeros(len(self.resources))
            unknown = []
            for name in resources.names():
                amount = resources.get(name)
                j = self.column.get(name)
                if j is None:
                    if amount > 0:
                        unknown.append(name)
                else:
                    row[j] = amount
            row.flags.writeable = False
            if len(self.vectors) > 4096:
                self.vectors.clear()
            cached = self.vectors[resources] = (row, tuple(unknown))
        return cached

    def offered(self, j: int) -> bool:
        """Whether every host has some of resource column ``j``."""
        cached = self.offered_cache.get(j)
        if cached is None:
            cached = self.offered_cache[j] = bool((self.allocatable[:, j] > 0).all())
        return cached

    def limits(self, ratios: FrozenMap[str, float]) -> Floats:
        """(hosts, resources): ``allocatable * ratio + 1e-9``, what ``used`` may reach."""
        cached = self.limit_cache.get(ratios)
        if cached is None:
            cached = np.asfortranarray(self.allocatable * np.array([ratios.get(r, 1.0) for r in self.resources]))
            cached += 1e-9
            cached.flags.writeable = False
            self.limit_cache[ratios] = cached
        return cached

    def label_mask(self, key: str, value: str) -> Mask:
        """Hosts whose label ``key`` is ``value``."""
        cached = self.label_masks.get((key, value))
        if cached is None:
            cached = np.array([h.labels.get(key) == value for h in self.hosts], dtype=bool)
            self.label_masks[(key, value)] = cached
        return cached

    def domains(self, scope: str) -> tuple[Ints, tuple[str, ...]]:
        """Per host, the code of its ``scope`` failure domain (-1 when it has none), and the
        domain names by code. Scope ``host`` makes every host its own domain."""
        cached = self.domain_cache.get(scope)
        if cached is None:
            if scope == "host":
                cached = (np.arange(len(self.hosts), dtype=np.int64), tuple(h.name for h in self.hosts))
            else:
                values = [h.location.get(scope) for h in self.hosts]
                names = tuple(sorted({v for v in values if v is not None}))
                code = {n: i for i, n in enumerate(names)}
                cached = (np.array([code.get(v, -1) if v is not None else -1 for v in values],
                                   dtype=np.int64), names)
            self.domain_cache[scope] = cached
        return cached

    def state_reasons(self) -> dict[str, Mask]:
        """Why hosts that are not schedulable are not: ``unschedulable`` or ``host STATE``."""
        cached = self.reasons
        if cached is None:
            cached = {}
            for i, host in enumerate(self.hosts):
                if self.schedulable[i]:
                    continue
                reason = "unschedulable" if host.state is HostState.UP else f"host {host.state}"
                cached.setdefault(reason, np.zeros(len(self.hosts), dtype=bool))[i] = True
            self.reasons = cached
        return cached
