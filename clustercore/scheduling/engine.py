"""The filter/weigh engine.

For one workload: every filter marks the hosts it rejects, with a reason (a host keeps the
first reason that rejected it, in filter order); every weigher scores the remaining
candidates; each weigher's scores are normalised to [0, 1] over the candidates (min-max,
Nova style; all equal gives 0) and multiplied by the policy's factor; the best total wins.
Ties break through a random generator seeded by the caller: deterministic for a seed.

Plugins are vectorised (``Filter``, ``Weigher``; row-wise ones, ``RowwiseFilter`` and
``RowwiseWeigher``, have their arrays carried from one decision to the next on large
clusters, see :mod:`.incremental`) or per host (``HostFilter``, ``HostWeigher``): see
:mod:`.protocols`, whose names are re-exported here.

The :class:`Scheduler` holds a snapshot and the reservations made on it: ``schedule``
decides and reserves, so the next decision sees the resources taken; ``unreserve`` gives
them back (idempotent). ``schedule_all`` places a batch, all-or-nothing on request.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import attrs
import numpy as np

from clustercore.errors import NoValidHost
from clustercore.model import Workload, ratio_map
from clustercore.scheduling.incremental import CARRY_FROM, Incremental, normalised
from clustercore.scheduling.protocols import (
    Filter,
    ForFlavor,
    ForFlavorWeigher,
    HostFilter,
    HostView,
    HostWeigher,
    OptionalWeigher,
    PerHostFilter,
    PerHostWeigher,
    RejectingFilter,
    RowwiseFilter,
    RowwiseWeigher,
    Weigher,
    as_filter,
    as_weigher,
    view,
)
from clustercore.scheduling.snapshot import Floats, Mask, Snapshot

if TYPE_CHECKING:
    from clustercore.scheduling.policies import Policy

__all__ = ["BatchResult", "Filter", "ForFlavor", "ForFlavorWeigher", "HostFilter", "HostView", "HostWeigher",
           "OptionalWeigher", "PerHostFilter", "PerHostWeigher", "RejectingFilter", "Row", "RowwiseFilter",
           "RowwiseWeigher", "Scheduler", "Weigher",
           "as_filter", "as_weigher", "place", "view"]

log = logging.getLogger(__name__)

#: What a scheduler derives from its filters and weighers (see ``Scheduler._planned``).
Plan = tuple[object, object, list[tuple[Filter, bool, bool]], list[tuple[Weigher, float, bool]],
             list[Incremental | None]]


# --------------------------------------------------------------------------- results


@attrs.frozen
class Row:
    """One host in :meth:`Scheduler.explain`: rejected with a reason, or scored."""

    host: str
    reason: str | None
    scores: tuple[tuple[str, float], ...] = ()
    total: float | None = None
    chosen: bool = False


@attrs.frozen
class BatchResult:
    placed: Mapping[str, str]
    failed: Mapping[str, NoValidHost]

    @property
    def ok(self) -> bool:
        return not self.failed


# --------------------------------------------------------------------------- the engine


class Scheduler:
    """Places workloads on a snapshot with a policy; see the module docstring.

    ``ratios`` are per-resource overcommit ratios (``{"cpu": 4.0}``: four vCPUs per CPU);
    ``ha_headroom`` adds the N+1 filter; ``filters`` and ``weighers`` come from flavors and
    run after the generic ones.
    """

    def __init__(
        self,
        snapshot: Snapshot,
        policy: Policy | None = None,
        filters: Iterable[Filter | HostFilter] = (),
        weighers: Iterable[Weigher | HostWeigher] = (),
        ratios: Mapping[str, float] | None = None,
        ha_headroom: bool = False,
        seed: int = 0,
    ) -> None:
        from clustercore.scheduling import filters as generic
        from clustercore.scheduling.policies import EVENLY_DISTRIBUTED

        self.policy = policy or EVENLY_DISTRIBUTED
        ratios = ratio_map(ratios)
        core: list[Filter] = [generic.StateFilter(), generic.ResourcesFilter(ratios), generic.HostAffinityFilter(),
                              generic.ConnectivityFilter(), generic.TaintFilter(), generic.AffinityFilter(),
                              generic.SpreadFilter()]
        if ha_headroom:
            core.append(generic.HeadroomFilter(ratios))
        self.filters: tuple[Filter, ...] = (*core, *(as_filter(f) for f in filters))
        self.weighers: tuple[tuple[Weigher, float], ...] = (*self.policy.weighers, *(as_weigher(w) for w in weighers))
        self.snapshot = snapshot
        self.rng = np.random.default_rng(seed)
        #: From how many hosts ``select`` carries the row-wise plugins' arrays from one decision
        #: to the next (:mod:`.incremental`; below, computing anew costs less): the decisions
        #: are the same either way.
        self.carry_from = CARRY_FROM
        self._plan: Plan | None = None

    def _planned(self) -> Plan:
        """Filters with whether they need the candidates left and whether they can reject
        without reasons, weighers with their factor and whether they are optional, and what
        is carried between decisions (computed again when ``filters`` or ``weighers`` is
        replaced)."""
        plan = self._plan
        if plan is None or plan[0] is not self.filters or plan[1] is not self.weighers:
            from clustercore.scheduling.filters import WHOLE_CLUSTER

            filters = [(f, not isinstance(f, WHOLE_CLUSTER), isinstance(f, RejectingFilter)) for f in self.filters]
            weighers = [(w, factor, isinstance(w, OptionalWeigher)) for w, factor in self.weighers if factor != 0]
            plan = self._plan = (self.filters, self.weighers, filters, weighers, [])
        return plan

    def _incremental(self) -> Incremental | None:
        """What the plan carries between decisions (None: nothing row-wise), made on first use."""
        plan = self._planned()
        if not plan[4]:
            carried = Incremental(self.filters, [w for w, _, _ in plan[3]])
            plan[4].append(carried if carried.useful else None)
        return plan[4][0]

    # ------------------------------------------------------------------ deciding

    def candidates(self, workload: Workload, snap: Snapshot, reasons: np.ndarray | None = None
                   ) -> tuple[np.ndarray, Counter[str]]:
        """The hosts of ``snap`` that pass every filter for ``workload``, by index, and how
        many hosts each filter reason removed. Filters run in order, each on the hosts still
        left; when ``reasons`` (an array of ``snap.size``) is given, the reason that removed
        each host is written into it. Nothing is weighed or reserved."""
        failed = np.zeros(snap.size, dtype=bool)
        counts: Counter[str] = Counter()
        for f in self.filters:
            candidates = np.flatnonzero(~failed)
            if not len(candidates):
                break
            for reason, mask in f.filter(workload, snap, candidates).items():
                new = mask & ~failed
                n = int(new.sum())
                if n:
                    counts[reason] += n
                    failed |= new
                    if reasons is not None:
                        reasons[new] = reason
        return np.flatnonzero(~failed), counts

    def passing(self, workload: Workload, snap: Snapshot) -> np.ndarray:
        """The hosts of ``snap`` that pass every filter, by index: what ``candidates`` gives,
        without the per-reason accounting (one mask, the union of every rejection)."""
        return self._passing(workload, snap)

    def _passing(self, workload: Workload, snap: Snapshot, masks: Sequence[Mask | None] = ()) -> np.ndarray:
        """``passing``, with ``masks`` (by filter position, None: none) in place of what those
        filters would reject."""
        failed: Mask | None = None
        owned = False  # failed is an array of ours (the first mask is the filter's)
        everyone = snap.everyone
        filters = self._planned()[2]
        for k, (f, narrowed, rejecting) in enumerate(filters):
            carried = masks[k] if masks else None
            if carried is not None:
                verdict: Mapping[str, Mask] = {"": carried}
            elif rejecting:
                union = f.reject(workload, snap)  # type: ignore[attr-defined]
                verdict = {} if union is None else {"": union}
            elif narrowed and failed is not None:
                left = np.flatnonzero(~failed)
                if not len(left):
                    return left
                verdict = f.filter(workload, snap, left)
            else:
                verdict = f.filter(workload, snap, everyone)
            for mask in verdict.values():
                if failed is None:
                    failed = np.asarray(mask, dtype=bool)
                elif failed is mask or not owned:
                    failed = failed | mask
                    owned = True
                else:
                    failed |= mask
        if failed is None or not failed.any():
            return everyone
        return np.flatnonzero(~failed)

    def _weigh(self, workload: Workload, snap: Snapshot, candidates: np.ndarray, explain: bool = False,
               raws: Sequence[Floats | None] = ()) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
        """Each weigher's raw scores min-max normalised over the candidates (all equal: 0),
        times its factor, summed in order; with ``explain``, each part too. ``raws`` (by
        weigher position, over every host; None: none) replace what those weighers give."""
        total: np.ndarray | None = None
        parts: list[tuple[str, np.ndarray]] = []
        if len(candidates) < 2:
            return np.zeros(len(candidates)), parts
        weighers = self._planned()[3]
        everyone = len(candidates) == snap.size
        for k, (weigher, factor, optional) in enumerate(weighers):
            if optional and not weigher.applies(workload, snap):  # type: ignore[attr-defined]
                if explain:
                    parts.append((weigher.name, factor * np.zeros(len(candidates))))
                continue
            carried = raws[k] if raws else None
            if carried is not None:
                raw = carried if everyone else carried[candidates]
            else:
                raw = np.asarray(weigher.weigh(workload, snap, candidates), dtype=float)
            low, high = raw.min(), raw.max()
            if not high > low:
                if explain:
                    parts.append((weigher.name, factor * np.zeros(len(candidates))))
                continue
            normal = normalised(raw, low, high, factor)
            if explain:
                parts.append((weigher.name, normal))
            if total is None:
                total = normal + 0.0 if explain else normal
            else:
                total += normal
        return (np.zeros(len(candidates)) if total is None else total), parts

    def _choose(self, candidates: np.ndarray, total: np.ndarray) -> int:
        return int(candidates[self._pick(np.flatnonzero(total >= total.max() - 1e-12))])

    def _pick(self, best: np.ndarray) -> int:
        """One of ``best``: the only one, or drawn by the seeded generator."""
        return int(best[0] if len(best) == 1 else best[int(self.rng.integers(len(best)))])

    def select(self, workload: Workload) -> str:
        """The best host for ``workload`` now (nothing reserved); NoValidHost with counts."""
        snap = self.snapshot
        incremental = self._incremental() if snap.size >= self.carry_from else None
        carried = incremental.current(workload.requests, snap) if incremental else None
        candidates = self._passing(workload, snap, carried.masks if carried else ())
        if not len(candidates):
            error = NoValidHost(workload.name, snap.size, self.candidates(workload, snap)[1])
            log.info("%s", error)
            raise error
        if carried and incremental and len(candidates) > 1:
            best = incremental.best(carried, workload, snap, candidates, self._planned()[3])
            if best is not None:
                return snap.hosts[self._pick(best)].name
        total, _ = self._weigh(workload, snap, candidates, raws=carried.raws if carried else ())
        return snap.hosts[self._choose(candidates, total)].name

    def explain(self, workload: Workload) -> list[Row]:
        """Dry run: every host, rejected with its reason or scored per weigher (normalised
        times factor), the chosen one marked. Reserves nothing."""
        snap = self.snapshot
        reasons = np.full(snap.size, None, dtype=object)
        candidates, _ = self.candidates(workload, snap, reasons)
        total, parts = self._weigh(workload, snap, candidates, explain=True)
        chosen = self._choose(candidates, total) if len(candidates) else -1
        position = {int(i): k for k, i in enumerate(candidates)}
        rows = []
        for i, host in enumerate(snap.hosts):
            k = position.get(i)
            if k is None:
                rows.append(Row(host.name, str(reasons[i])))
            else:
                rows.append(Row(host.name, None, tuple((name, float(s[k])) for name, s in parts), float(total[k]),
                                i == chosen))
        return rows

    # ------------------------------------------------------------------ reserving

    def reserve(self, workload: Workload, host: str) -> None:
        """Count ``workload`` on ``host`` for the next decisions. Reserving a workload that
        is already reserved moves the reservation."""
        self.snapshot = self.snapshot.unreserve(workload.name).reserve(self.snapshot.index[host], workload)

    def unreserve(self, name: str) -> None:
        """Give back what ``name`` reserved (a failed bind). Idempotent."""
        self.snapshot = self.snapshot.unreserve(name)

    def schedule(self, workload: Workload) -> str:
        """Select a host and reserve it."""
        host = self.select(workload)
        self.reserve(workload, host)
        return host

    def schedule_all(self, workloads: Sequence[Workload], all_or_nothing: bool = False) -> BatchResult:
        """Place each in order with reservations. All-or-nothing: the first failure
        releases the batch's reservations and fails the whole batch."""
        placed: dict[str, str] = {}
        failed: dict[str, NoValidHost] = {}
        for workload in workloads:
            try:
                placed[workload.name] = self.schedule(workload)
            except NoValidHost as exc:
                failed[workload.name] = exc
                if all_or_nothing:
                    for name in placed:
                        self.unreserve(name)
                    return BatchResult({}, failed)
        return BatchResult(placed, failed)


def place(workload: Workload, snapshot: Snapshot, **options: object) -> str:
    """One decision with the default policy: the name of the best host."""
    return Scheduler(snapshot, **options).select(workload)  # type: ignore[arg-type]
