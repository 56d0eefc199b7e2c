"""The scheduler's view of the cluster: immutable, column-wise.

Host attributes live in numpy arrays, one row per host, so a filter or weigher decides
for every host at once: ``allocatable`` and ``used`` are ``(hosts, resources)`` matrices
whose columns are named by ``resources`` (``cpu``, ``memory``, then extended resources,
sorted). ``used`` includes what is reserved on top of the placed workloads (see
:meth:`Snapshot.reserve`), so successive decisions in a batch see each other.

Derived data that does not change with reservations (label masks, failure-domain codes,
taint masks, how many placed workloads match a selector, request vectors, fit limits) is
computed on first use and shared between a snapshot and the ones derived from it by
reserving. Reservations live in a shared journal (:mod:`.reservations`), so reserving and
unreserving cost the same however many are held; per-host arrays that depend on them
(match counts per selector, workload counts, HA load) are carried forward from a snapshot
to the next, changed only where the reservation is. Columns are stored per resource
(Fortran order): ``used[:, j]`` is contiguous.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import attrs
import numpy as np
from numpy.typing import NDArray

from clustercore.model import FrozenMap, Host, Placement, PlacementState, Resources, Workload
from clustercore.scheduling.columns import Asked, Floats, Ints, Mask, Shared, matches
from clustercore.scheduling.reservations import AntiRule, Entry, Holding, Journal, anti_rules
from clustercore.topology import Topology

__all__ = ["Asked", "Floats", "Ints", "Mask", "Snapshot", "matches"]


@attrs.frozen(eq=False)
class Snapshot:
    hosts: tuple[Host, ...]
    resources: tuple[str, ...]
    allocatable: Floats
    used: Floats
    topology: Topology | None
    shared: Shared = attrs.field(repr=False)
    #: (host index, workload) placed there but counted as gone (see ``release``).
    released: tuple[Entry, ...] = ()
    #: The reservations of this snapshot's lineage; it sees the first ``version`` entries.
    journal: Journal = attrs.field(factory=Journal, repr=False)
    version: int = 0
    #: Arrays that depend on reservations, computed on first use and then carried forward
    #: by ``reserve``, ``unreserve`` and ``release``: match counts by selector (FrozenMap),
    #: anti-affinity holders by rule (tuple), ``"workloads"`` (counts), ``"ha"`` (HA load).
    counts: dict[object, NDArray[np.int64] | Floats] = attrs.field(factory=dict, repr=False)
    #: Per-snapshot memo for plugins computing the same thing in one decision.
    memo: dict[object, object] = attrs.field(factory=dict, repr=False)
    #: The holding replayed for a snapshot behind its journal's tip (at most one, on first use).
    replayed: list[Holding] = attrs.field(factory=list, repr=False)

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        hosts: Iterable[Host],
        workloads: Mapping[str, Workload] | None = None,
        placements: Iterable[Placement] = (),
        topology: Topology | None = None,
        resources: Iterable[str] = (),
    ) -> Snapshot:
        """A snapshot of ``hosts`` with ``placements`` of ``workloads`` counted as used (a
        migrating workload counts on its source and its target)."""
        hosts = tuple(sorted(hosts, key=lambda h: h.name))
        workloads = workloads or {}
        index = {h.name: i for i, h in enumerate(hosts)}
        placed: list[list[Workload]] = [[] for _ in hosts]
        for p in placements:
            w = workloads.get(p.workload)
            if w is None or p.state is PlacementState.FAILED:
                continue
            for name in (p.host, p.target) if p.target else (p.host,):
                if name in index:
                    placed[index[name]].append(w)
        names = set(resources)
        for h in hosts:
            names.update(k for k, _ in h.allocatable.extended)
        for group in placed:
            for w in group:
                names.update(k for k, _ in w.requests.extended)
        columns = ("cpu", "memory", *sorted(names - {"cpu", "memory"}))
        col = {r: j for j, r in enumerate(columns)}
        alloc = np.zeros((len(hosts), len(columns)))
        used = np.zeros((len(hosts), len(columns)))
        for i, h in enumerate(hosts):
            _fill(alloc[i], h.allocatable, col)
            for w in placed[i]:
                _fill(used[i], w.requests, col, add=True)
        alloc, used = np.asfortranarray(alloc), np.asfortranarray(used)
        alloc.flags.writeable = False
        used.flags.writeable = False
        frozen = tuple(tuple(p) for p in placed)
        return cls(hosts, columns, alloc, used, topology, Shared(hosts, frozen, columns, alloc))

    # ------------------------------------------------------------------ reservations

    @property
    def reserved(self) -> tuple[Entry, ...]:
        """(host index, workload) reserved on top of the placed workloads, in order."""
        return tuple(self.holding().entries.values())

    def holding(self) -> Holding:
        """This snapshot's reservations, indexed (do not change them)."""
        if self.version == len(self.journal.log):
            return self.journal.tip
        if not self.replayed:
            self.replayed.append(self.journal.holding(self.version))
        return self.replayed[0]

    def reserve(self, index: int, workload: Workload) -> Snapshot:
        """A new snapshot with ``workload`` reserved on host ``index``."""
        unknown = self.asked(workload.requests).unknown
        if unknown:
            raise ValueError(f"cannot reserve {workload.name}: no host offers {', '.join(unknown)}")
        journal, version = self.journal.add(self.version, self.holding(), index, workload)
        return self._derive(((index, workload),), 1, self.released, journal, version)

    def release(self, index: int, workload: Workload) -> Snapshot:
        """A new snapshot in which ``workload``, placed on host ``index``, has left it: what
        a move must be judged against (the balancer's question "where else could it go?")."""
        return self._derive(((index, workload),), -1, (*self.released, (index, workload)), self.journal,
                            self.version)

    def unreserve(self, name: str) -> Snapshot:
        """A new snapshot without the reservation of workload ``name`` (same snapshot when
        there is none: unreserving is idempotent)."""
        held = self.holding()
        if name not in held.by_name:
            return self
        journal, version, gone = self.journal.drop(self.version, held, name)
        return self._derive(gone, -1, self.released, journal, version)

    def _derive(self, entries: Sequence[Entry], sign: int, released: tuple[Entry, ...], journal: Journal,
                version: int) -> Snapshot:
        """The snapshot with ``entries`` added (``sign`` 1) or taken away (-1): ``used`` copied
        and changed on their hosts, carried arrays likewise."""
        used = self.used.copy(order="K")
        counts = dict(self.counts)
        for index, workload in entries:
            vector = self.asked(workload.requests).vector
            if sign > 0:
                used[index] += vector
            else:
                used[index] -= vector
            for key, known in counts.items():
                if isinstance(key, FrozenMap):
                    if not matches(workload.labels, key):
                        continue
                    step: object = sign
                elif key == "ha":
                    if not workload.ha:
                        continue
                    step = vector if sign > 0 else -vector
                elif isinstance(key, tuple):  # an anti-affinity rule: how many hold it
                    step = sign * anti_rules(workload).count(key)
                    if not step:
                        continue
                else:
                    step = sign
                known = counts[key] = known.copy(order="K")
                known[index] += step
        used.flags.writeable = False
        return Snapshot(self.hosts, self.resources, self.allocatable, used, self.topology, self.shared, released,
                        journal, version, counts)

    # ------------------------------------------------------------------ columns

    @property
    def size(self) -> int:
        return len(self.hosts)

    @property
    def everyone(self) -> Ints:
        """Every host's index (read-only)."""
        return self.shared.everyone

    @property
    def index(self) -> Mapping[str, int]:
        return self.shared.index

    @property
    def up(self) -> Mask:
        """Hosts that are Up (schedulable or not)."""
        return self.shared.state

    @property
    def schedulable(self) -> Mask:
        """Hosts that are Up and schedulable."""
        return self.shared.schedulable

    def column(self, resource: str) -> int | None:
        return self.shared.column.get(resource)

    def vector(self, resources: Resources) -> tuple[Floats, tuple[str, ...]]:
        """``resources`` as a row aligned with the columns (read-only, cached), and the
        requested names no column has (no host offers them)."""
        return self.shared.vector(resources)

    def offered(self, j: int) -> bool:
        """Whether every host has some of resource column ``j``."""
        return self.shared.offered(j)

    def limits(self, ratios: FrozenMap[str, float]) -> Floats:
        """(hosts, resources): ``allocatable * ratio + 1e-9``, what ``used`` may reach."""
        return self.shared.limits(ratios)

    def asked(self, requests: Resources) -> Asked:
        """The per-decision memo for ``requests`` on this snapshot (by identity: a lookup
        costs no hashing of the request)."""
        found = self.memo.get(id(requests))
        if not (isinstance(found, Asked) and found.requests is requests and found.used is self.used):
            if len(self.memo) > 256:  # many requests weighed on one snapshot (explain, extender)
                self.memo.clear()
            found = self.memo[id(requests)] = Asked(requests, self.used, *self.vector(requests))
        return found

    def label_mask(self, key: str, value: str) -> Mask:
        """Hosts whose label ``key`` is ``value``."""
        return self.shared.label_mask(key, value)

    def domains(self, scope: str) -> tuple[Ints, tuple[str, ...]]:
        """Per host, the code of its ``scope`` failure domain (-1 when it has none), and the
        domain names by code. Scope ``host`` makes every host its own domain."""
        return self.shared.domains(scope)

    def state_reasons(self) -> dict[str, Mask]:
        """Why hosts that are not schedulable are not: ``unschedulable`` or ``host STATE``."""
        return self.shared.state_reasons()

    def match_counts(self, selector: Mapping[str, str]) -> Ints:
        """Per host, how many placed or reserved workloads match ``selector``."""
        key: FrozenMap[str, str] = selector if isinstance(selector, FrozenMap) else FrozenMap(selector)
        mine = self.counts.get(key)
        if mine is not None:
            return mine  # type: ignore[return-value]
        base = self.shared.counts.get(key)
        if base is None:
            if len(key) == 1:
                pair = next(iter(key.items()))
                base = self.shared.pair_counts().get(pair, np.zeros(self.size, dtype=np.int64))
            else:
                base = np.array([sum(1 for w in group if matches(w.labels, key)) for group in self.shared.placed],
                                dtype=np.int64)
            self.shared.counts[key] = base
        counts = base
        held = self.holding()
        if held.entries or self.released:
            counts = base.copy()
            for index, workload in held.entries.values():
                if matches(workload.labels, key):
                    counts[index] += 1
            for index, workload in self.released:
                if matches(workload.labels, key):
                    counts[index] -= 1
        self.counts[key] = counts
        return counts

    def reaching(self, kind: str, target: str) -> Mask:
        """Hosts the topology says reach network or storage ``target``."""
        cached = self.shared.reach.get((kind, target))
        if cached is None:
            reach = self.topology.hosts_reaching(kind, target) if self.topology else frozenset()
            cached = np.zeros(self.size, dtype=bool)
            for name in reach:
                if name in self.index:
                    cached[self.index[name]] = True
            self.shared.reach[(kind, target)] = cached
        return cached

    @property
    def tainted(self) -> Ints:
        """Indices of hosts with any taint."""
        return self.shared.tainted

    def ha_load(self) -> Floats:
        """(hosts, resources): what the HA workloads on each host request."""
        carried = self.counts.get("ha")
        if carried is not None:
            return carried  # type: ignore[return-value]
        base = self.shared.ha_load
        if base is None:
            base = np.zeros_like(self.allocatable)
            for i, group in enumerate(self.shared.placed):
                for w in group:
                    if w.ha:
                        base[i] += self.vector(w.requests)[0]
            self.shared.ha_load = base
        load = base
        entries = self.holding().entries.values()
        if any(w.ha for _, w in (*entries, *self.released)):
            load = base.copy(order="K")
            for i, w in entries:
                if w.ha:
                    load[i] += self.vector(w.requests)[0]
            for i, w in self.released:
                if w.ha:
                    load[i] -= self.vector(w.requests)[0]
        self.counts["ha"] = load
        return load

    def workload_counts(self) -> Ints:
        carried = self.counts.get("workloads")
        if carried is not None:
            return carried  # type: ignore[return-value]
        counts = self.shared.workload_count.copy()
        for index, here in self.holding().by_host.items():
            counts[index] += len(here)
        for index, _ in self.released:
            counts[index] -= 1
        self.counts["workloads"] = counts
        return counts

    def workloads_on(self, index: int) -> tuple[Workload, ...]:
        gone = {w.name for i, w in self.released if i == index}
        here = tuple(w for w in self.shared.placed[index] if w.name not in gone) if gone else self.shared.placed[index]
        return here + self.holding().on(index)

    def placed_with_rules(self) -> list[tuple[int, Workload]]:
        """(host index, workload) of every placed or reserved workload with affinity rules."""
        gone = set(self.released)
        placed = [entry for entry in self.shared.with_rules if entry not in gone] if gone else self.shared.with_rules
        return placed + list(self.holding().with_rules.values())

    def anti_rules(self) -> list[AntiRule]:
        """The distinct hard anti-affinity rules of the placed and reserved workloads."""
        held = self.holding().anti
        if not held:
            return list(self.shared.anti)
        rules = dict(self.shared.anti)
        rules.update((rule, None) for rule, n in held.items() if n)
        return list(rules)

    def holders(self, rule: AntiRule) -> Ints:
        """Per host, how many of its placed or reserved workloads hold hard anti-affinity ``rule``."""
        carried = self.counts.get(rule)
        if carried is not None:
            return carried  # type: ignore[return-value]
        base = self.shared.holders.get(rule)
        if base is None:
            base = self.shared.holders[rule] = np.zeros(self.size, dtype=np.int64)
            for i, w in self.shared.hard_anti:
                base[i] += anti_rules(w).count(rule)
        counts = base.copy()
        for i, w in self.holding().hard_anti.values():
            counts[i] += anti_rules(w).count(rule)
        for i, w in self.released:
            counts[i] -= anti_rules(w).count(rule)
        self.counts[rule] = counts
        return counts

    def hard_anti_holders(self, on: Mask | None = None) -> list[tuple[int, Workload]]:
        """The same, only those with a hard anti-affinity rule (what a new workload can break),
        and only on the hosts ``on`` when given."""
        gone = set(self.released)
        held = self.holding()
        if on is None:
            placed = self.shared.hard_anti
            reserved = list(held.hard_anti.values())
        else:
            hosts = np.flatnonzero(on).tolist()
            placed = [(i, w) for i in hosts for w in self.shared.placed[i] if (i, w) in self.shared.hard_anti_set]
            reserved = [held.hard_anti[p] for p in sorted(p for i in hosts for p in held.by_host.get(i, ())
                                                          if p in held.hard_anti)]
        return [entry for entry in placed if entry not in gone] + reserved

    def host_resources(self, index: int, matrix: Floats) -> Resources:
        row = matrix[index]
        ext: dict[str, int] = {r: int(row[j]) for j, r in enumerate(self.resources[2:], start=2)}
        return Resources(int(row[0]), int(row[1]), ext)


def _fill(row: Floats, resources: Resources, col: Mapping[str, int], add: bool = False) -> None:
    for name in resources.names():
        j = col[name]
        row[j] = row[j] + resources.get(name) if add else resources.get(name)

