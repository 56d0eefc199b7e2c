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

from clustercore.model import FrozenMap, Host, HostState, Placement, PlacementState, Resources, Workload
from clustercore.scheduling.reservations import Entry, Holding, Journal, hard_anti
from clustercore.topology import Topology

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
        self.everyone = np.arange(len(hosts), dtype=np.int64)
        self.everyone.flags.writeable = False
        self.state_reasons: dict[str, Mask] | None = None
        self.reach: dict[tuple[str, str], Mask] = {}
        self.ha_load: Floats | None = None
        self.with_rules = [(i, w) for i, group in enumerate(placed) for w in group if w.affinity]
        self.hard_anti = [(i, w) for i, w in self.with_rules if hard_anti(w)]
        self.pairs: dict[tuple[str, str], Ints] | None = None
        self.vectors: dict[Resources, tuple[Floats, tuple[str, ...]]] = {}
        self.limits: dict[FrozenMap[str, float], Floats] = {}
        self.offered: dict[int, bool] = {}

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
    #: (host index, workload) placed there but counted as gone (see ``release``).
    released: tuple[Entry, ...] = ()
    #: The reservations of this snapshot's lineage; it sees the first ``version`` entries.
    journal: Journal = attrs.field(factory=Journal, repr=False)
    version: int = 0
    #: Arrays that depend on reservations, carried forward by ``reserve``, ``unreserve`` and
    #: ``release``: match counts by selector, ``"workloads"`` (counts), ``"ha"`` (HA load).
    counts: dict[object, NDArray[np.int64] | Floats] = attrs.field(factory=dict, repr=False)
    #: Per-snapshot memo for plugins computing the same thing in one decision.
    memo: dict[object, object] = attrs.field(factory=dict, repr=False)
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
        return cls(hosts, columns, alloc, used, topology, _Shared(hosts, frozen))

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
        try:
            return self.resources.index(resource)
        except ValueError:
            return None

    def vector(self, resources: Resources) -> tuple[Floats, tuple[str, ...]]:
        """``resources`` as a row aligned with the columns (read-only, cached), and the
        requested names no column has (no host offers them)."""
        cached = self.shared.vectors.get(resources)
        if cached is None:
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
            row.flags.writeable = False
            if len(self.shared.vectors) > 4096:
                self.shared.vectors.clear()
            cached = self.shared.vectors[resources] = (row, tuple(unknown))
        return cached

    def offered(self, j: int) -> bool:
        """Whether every host has some of resource column ``j``."""
        cached = self.shared.offered.get(j)
        if cached is None:
            cached = self.shared.offered[j] = bool((self.allocatable[:, j] > 0).all())
        return cached

    def limits(self, ratios: FrozenMap[str, float]) -> Floats:
        """(hosts, resources): ``allocatable * ratio + 1e-9``, what ``used`` may reach."""
        cached = self.shared.limits.get(ratios)
        if cached is None:
            cached = np.asfortranarray(self.allocatable * np.array([ratios.get(r, 1.0) for r in self.resources]))
            cached += 1e-9
            cached.flags.writeable = False
            self.shared.limits[ratios] = cached
        return cached

    def asked(self, requests: Resources) -> Asked:
        """The per-decision memo for ``requests`` on this snapshot (by identity: a lookup
        costs no hashing of the request)."""
        found = self.memo.get(id(requests))
        if not (isinstance(found, Asked) and found.requests is requests):
            if len(self.memo) > 256:  # many requests weighed on one snapshot (explain, extender)
                self.memo.clear()
            found = self.memo[id(requests)] = Asked(requests, self.used, *self.vector(requests))
        return found

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

    def hard_anti_holders(self) -> list[tuple[int, Workload]]:
        """The same, only those with a hard anti-affinity rule (what a new workload can break)."""
        gone = set(self.released)
        placed = [entry for entry in self.shared.hard_anti if entry not in gone] if gone else self.shared.hard_anti
        return placed + list(self.holding().hard_anti.values())

    def host_resources(self, index: int, matrix: Floats) -> Resources:
        row = matrix[index]
        ext: dict[str, int] = {r: int(row[j]) for j, r in enumerate(self.resources[2:], start=2)}
        return Resources(int(row[0]), int(row[1]), ext)


def _fill(row: Floats, resources: Resources, col: Mapping[str, int], add: bool = False) -> None:
    for name in resources.names():
        j = col[name]
        row[j] = row[j] + resources.get(name) if add else resources.get(name)

