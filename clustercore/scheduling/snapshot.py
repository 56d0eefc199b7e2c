"""The scheduler's view of the cluster: immutable, column-wise.

Host attributes live in numpy arrays, one row per host, so a filter or weigher decides
for every host at once: ``allocatable`` and ``used`` are ``(hosts, resources)`` matrices
whose columns are named by ``resources`` (``cpu``, ``memory``, then extended resources,
sorted). ``used`` includes what is reserved on top of the placed workloads (see
:meth:`Snapshot.reserve`), so successive decisions in a batch see each other.

Derived data that does not change with reservations (label masks, failure-domain codes,
taint masks, how many placed workloads match a selector) is computed on first use and
shared between a snapshot and the ones derived from it by reserving.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs
import numpy as np
from numpy.typing import NDArray

from clustercore.model import FrozenMap, Host, HostState, Placement, PlacementState, Resources, Workload
from clustercore.topology import Topology

Mask = NDArray[np.bool_]
Floats = NDArray[np.float64]
Ints = NDArray[np.int64]


def matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


class _Shared:
    """Caches shared by a snapshot and the snapshots derived from it by reservations."""

    def __init__(self, hosts: tuple[Host, ...], placed: tuple[tuple[Workload, ...], ...]) -> None:
        self.hosts = hosts
        self.placed = placed
        self.index = {h.name: i for i, h in enumerate(hosts)}
        self.label_masks: dict[tuple[str, str], Mask] = {}
        self.domains: dict[str, tuple[Ints, tuple[str, ...]]] = {}
        self.counts: dict[FrozenMap[str, str], Ints] = {}
        self.state = np.array([h.state is HostState.UP for h in hosts], dtype=bool)
        self.schedulable = np.array([h.state is HostState.UP and h.schedulable for h in hosts], dtype=bool)
        self.workload_count = np.array([len(p) for p in placed], dtype=np.int64)
        self.tainted = np.array([i for i, h in enumerate(hosts) if h.taints], dtype=np.int64)
        self.state_reasons: dict[str, Mask] | None = None
        self.reach: dict[tuple[str, str], Mask] = {}
        self.ha_load: Floats | None = None
        self.with_rules = [(i, w) for i, group in enumerate(placed) for w in group if w.affinity]
        self.pairs: dict[tuple[str, str], Ints] | None = None

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


@attrs.frozen(eq=False)
class Snapshot:
    hosts: tuple[Host, ...]
    resources: tuple[str, ...]
    allocatable: Floats
    used: Floats
    topology: Topology | None
    shared: _Shared = attrs.field(repr=False)
    #: (host index, workload) reserved on top of the placed workloads, in order.
    reserved: tuple[tuple[int, Workload], ...] = ()
    #: (host index, workload) placed there but counted as gone (see ``release``).
    released: tuple[tuple[int, Workload], ...] = ()
    #: This snapshot's match counts per selector (carried forward by ``reserve``).
    counts: dict[FrozenMap[str, str], Ints] = attrs.field(factory=dict, repr=False)
    #: Per-snapshot memo for plugins computing the same thing in one decision.
    memo: dict[object, object] = attrs.field(factory=dict, repr=False)

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
        alloc.flags.writeable = False
        used.flags.writeable = False
        frozen = tuple(tuple(p) for p in placed)
        return cls(hosts, columns, alloc, used, topology, _Shared(hosts, frozen))

    # ------------------------------------------------------------------ reservations

    def reserve(self, index: int, workload: Workload) -> Snapshot:
        """A new snapshot with ``workload`` reserved on host ``index``."""
        vector, unknown = self.vector(workload.requests)
        if unknown:
            raise ValueError(f"cannot reserve {workload.name}: no host offers {', '.join(unknown)}")
        used = self.used.copy()
        used[index] += vector
        used.flags.writeable = False
        counts = {}
        for selector, known in self.counts.items():
            if matches(workload.labels, selector):
                known = known.copy()
                known[index] += 1
            counts[selector] = known
        return attrs.evolve(self, used=used, reserved=(*self.reserved, (index, workload)), counts=counts, memo={})

    def release(self, index: int, workload: Workload) -> Snapshot:
        """A new snapshot in which ``workload``, placed on host ``index``, has left it: what
        a move must be judged against (the balancer's question "where else could it go?")."""
        used = self.used.copy()
        used[index] -= self.vector(workload.requests)[0]
        used.flags.writeable = False
        return attrs.evolve(self, used=used, released=(*self.released, (index, workload)), counts={}, memo={})

    def unreserve(self, name: str) -> Snapshot:
        """A new snapshot without the reservation of workload ``name`` (same snapshot when
        there is none: unreserving is idempotent)."""
        keep: list[tuple[int, Workload]] = []
        drop: list[tuple[int, Workload]] = []
        for entry in self.reserved:
            (drop if entry[1].name == name else keep).append(entry)
        if not drop:
            return self
        used = self.used.copy()
        for index, workload in drop:
            used[index] -= self.vector(workload.requests)[0]
        used.flags.writeable = False
        return attrs.evolve(self, used=used, reserved=tuple(keep), counts={}, memo={})

    # ------------------------------------------------------------------ columns

    @property
    def size(self) -> int:
        return len(self.hosts)

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
        try:
            return self.resources.index(resource)
        except ValueError:
            return None

    def vector(self, resources: Resources) -> tuple[Floats, tuple[str, ...]]:
        """``resources`` as a row aligned with the columns, and the requested names no
        column has (no host offers them)."""
        row = np.zeros(len(self.resources))
        unknown = []
        for name in resources.names():
            amount = resources.get(name)
            j = self.column(name)
            if j is None:
                if amount > 0:
                    unknown.append(name)
            else:
                row[j] = amount
        return row, tuple(unknown)

    def label_mask(self, key: str, value: str) -> Mask:
        """Hosts whose label ``key`` is ``value``."""
        cached = self.shared.label_masks.get((key, value))
        if cached is None:
            cached = np.array([h.labels.get(key) == value for h in self.hosts], dtype=bool)
            self.shared.label_masks[(key, value)] = cached
        return cached

    def domains(self, scope: str) -> tuple[Ints, tuple[str, ...]]:
        """Per host, the code of its ``scope`` failure domain (-1 when it has none), and the
        domain names by code. Scope ``host`` makes every host its own domain."""
        cached = self.shared.domains.get(scope)
        if cached is None:
            if scope == "host":
                cached = (np.arange(self.size, dtype=np.int64), tuple(h.name for h in self.hosts))
            else:
                values = [h.location.get(scope) for h in self.hosts]
                names = tuple(sorted({v for v in values if v is not None}))
                code = {n: i for i, n in enumerate(names)}
                cached = (np.array([code.get(v, -1) if v is not None else -1 for v in values],
                                   dtype=np.int64), names)
            self.shared.domains[scope] = cached
        return cached

    def match_counts(self, selector: Mapping[str, str]) -> Ints:
        """Per host, how many placed or reserved workloads match ``selector``."""
        key: FrozenMap[str, str] = selector if isinstance(selector, FrozenMap) else FrozenMap(selector)
        mine = self.counts.get(key)
        if mine is not None:
            return mine
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
        if self.reserved or self.released:
            counts = base.copy()
            for index, workload in self.reserved:
                if matches(workload.labels, key):
                    counts[index] += 1
            for index, workload in self.released:
                if matches(workload.labels, key):
                    counts[index] -= 1
        self.counts[key] = counts
        return counts

    def state_reasons(self) -> dict[str, Mask]:
        """Why hosts that are not schedulable are not: ``unschedulable`` or ``host STATE``."""
        cached = self.shared.state_reasons
        if cached is None:
            cached = {}
            for i, host in enumerate(self.hosts):
                if self.schedulable[i]:
                    continue
                reason = "unschedulable" if host.state is HostState.UP else f"host {host.state}"
                cached.setdefault(reason, np.zeros(self.size, dtype=bool))[i] = True
            self.shared.state_reasons = cached
        return cached

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
        base = self.shared.ha_load
        if base is None:
            base = np.zeros_like(self.allocatable)
            for i, group in enumerate(self.shared.placed):
                for w in group:
                    if w.ha:
                        base[i] += self.vector(w.requests)[0]
            self.shared.ha_load = base
        if not any(w.ha for _, w in (*self.reserved, *self.released)):
            return base
        load = base.copy()
        for i, w in self.reserved:
            if w.ha:
                load[i] += self.vector(w.requests)[0]
        for i, w in self.released:
            if w.ha:
                load[i] -= self.vector(w.requests)[0]
        return load

    def workload_counts(self) -> Ints:
        counts = self.shared.workload_count
        if not self.reserved and not self.released:
            return counts
        counts = counts.copy()
        for index, _ in self.reserved:
            counts[index] += 1
        for index, _ in self.released:
            counts[index] -= 1
        return counts

    def workloads_on(self, index: int) -> tuple[Workload, ...]:
        gone = {w.name for i, w in self.released if i == index}
        here = tuple(w for w in self.shared.placed[index] if w.name not in gone) if gone else self.shared.placed[index]
        return here + tuple(w for i, w in self.reserved if i == index)

    def placed_with_rules(self) -> list[tuple[int, Workload]]:
        """(host index, workload) of every placed or reserved workload with affinity rules."""
        gone = set(self.released)
        placed = [entry for entry in self.shared.with_rules if entry not in gone] if gone else self.shared.with_rules
        return placed + [(i, w) for i, w in self.reserved if w.affinity]

    def host_resources(self, index: int, matrix: Floats) -> Resources:
        row = matrix[index]
        ext: dict[str, int] = {r: int(row[j]) for j, r in enumerate(self.resources[2:], start=2)}
        return Resources(int(row[0]), int(row[1]), ext)


def _fill(row: Floats, resources: Resources, col: Mapping[str, int], add: bool = False) -> None:
    for name in resources.names():
        j = col[name]
        row[j] = row[j] + resources.get(name) if add else resources.get(name)

