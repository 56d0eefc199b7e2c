"""Incremental scoring: what one decision computed over every host, carried to the next.

Between two decisions of a scheduler on snapshots of one lineage (``reserve``,
``unreserve``, a rewind to an earlier one) ``used`` differs only on the hosts whose
reservations changed, and the journal of reservations names them
(:meth:`~.reservations.Journal.changed`). A row-wise plugin's answer for a host depends
only on the request and on that host's row (:class:`~.protocols.RowwiseFilter`,
:class:`~.protocols.RowwiseWeigher`: the resources filter, least-allocated and balanced
allocation). So a scheduler keeps, per request (the last few asked), a :class:`Carried`:
the row-wise filters' masks and the row-wise weighers' raw scores over every host, and
the total of the weighers' normalised scores; on the next snapshot it asks the plugins
again only for the changed hosts. The total is patched there too while no normalisation
moved (each weigher's min and max over the candidates, and which weighers take part);
otherwise it is summed again from the carried raw scores.

Every number is computed by the same numpy operations on the same operands as a full
computation (elementwise: a host's result does not depend on the others), so decisions
are the same bit for bit (``tests/test_scheduler_incremental.py`` checks it against
scheduling without the carried arrays).

Copy-on-write: these arrays belong to the scheduler that carries them. No snapshot sees
them and none is handed out (the engine gives callers host indices, or arrays of its own),
so patching them in place cannot change an answer a snapshot or a caller already has.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clustercore.model import Resources, Workload
from clustercore.scheduling.columns import Floats, Ints, Mask, Shared
from clustercore.scheduling.protocols import Filter, RowwiseFilter, RowwiseWeigher, Weigher
from clustercore.scheduling.reservations import Entry, Journal
from clustercore.scheduling.snapshot import Snapshot

#: Carried from this many hosts (measured: at 5,000 patching cost more than it saved, at
#: 12,000 less).
CARRY_FROM = 8_192
#: Bytes of carried arrays a scheduler may hold, and at most this many requests.
BUDGET = 32 << 20
MOST = 32


def most_changed(size: int) -> int:
    """Past this many changed hosts, computing anew costs about what patching would."""
    return max(32, size // 8)

Scale = tuple[int, float, float, float]  # weigher position, factor, low, high


def normalised(raw: Floats, low: float, high: float, factor: float) -> Floats:
    """``raw`` min-max normalised with ``low`` and ``high``, times ``factor`` (a new array)."""
    normal = raw - low
    normal /= high - low
    if factor != 1.0:
        normal *= factor
    return normal


def summed(raws: Sequence[Floats | None], scales: Sequence[Scale], size: int) -> Floats:
    """The total of the normalised parts ``scales`` names, added in order (zeros: none)."""
    total: Floats | None = None
    for k, factor, low, high in scales:
        normal = normalised(raws[k], low, high, factor)  # type: ignore[arg-type]
        if total is None:
            total = normal
        else:
            total += normal
    return np.zeros(size) if total is None else total


class Carried:
    """One request's arrays over every host, for the snapshot at ``version`` of ``journal``
    (with ``released``): ``masks`` of the row-wise filters and ``raws`` of the row-wise
    weighers (None for the others, by position), ``total`` with the ``scales`` it was
    summed with, stale on the hosts ``pending``; each raw's ``extremes`` (min, max over every
    host) and the ``top`` of the total (its max and the hosts within 1e-12 of it) once known."""

    __slots__ = ("extremes", "journal", "masks", "pending", "raws", "released", "scales", "shared", "top", "total",
                 "version")

    def __init__(self, snap: Snapshot, masks: list[Mask | None], raws: list[Floats | None]) -> None:
        self.shared: Shared = snap.shared
        self.journal: Journal = snap.journal
        self.version = snap.version
        self.released: tuple[Entry, ...] = snap.released
        self.masks, self.raws = masks, raws
        self.total: Floats | None = None
        self.scales: tuple[Scale, ...] = ()
        self.pending: list[Ints] = []
        self.extremes: list[tuple[float, float] | None] = [None] * len(raws)
        self.top: tuple[float, Ints] | None = None


class Incremental:
    """The carried arrays of one scheduler's plan (its filters and weighers, in order)."""

    def __init__(self, filters: Sequence[Filter], weighers: Sequence[Weigher]) -> None:
        self.filters = [f if isinstance(f, RowwiseFilter) else None for f in filters]
        self.weighers = [w if isinstance(w, RowwiseWeigher) else None for w in weighers]
        self.carried: dict[Resources, Carried] = {}
        self.seen: dict[Resources, None] = {}  # requests asked once while there was no room

    @property
    def useful(self) -> bool:
        return any(f is not None for f in self.filters) or any(w is not None for w in self.weighers)

    def current(self, requests: Resources, snap: Snapshot) -> Carried | None:
        """The arrays of ``requests`` for ``snap``: carried from the last snapshot they were
        asked on and asked again on the hosts that changed since, else computed anew. None
        (nothing to carry: the engine computes as without) for a request asked for the first
        time once the room is full: keeping the arrays of requests that never come back cost
        more than computing them (measured: 50,000 hosts, every request different)."""
        per_host = sum(f is not None for f in self.filters) + 8 * (sum(w is not None for w in self.weighers) + 1)
        most = max(1, min(MOST, BUDGET // (snap.size * per_host + 1)))
        carried = self.carried.pop(requests, None)
        if carried is None and len(self.carried) >= most and self.seen.pop(requests, 0) is not None:
            if len(self.seen) >= 4 * MOST:
                del self.seen[next(iter(self.seen))]
            self.seen[requests] = None
            return None
        self.carried[requests] = carried = self._update(carried, requests, snap)
        while len(self.carried) > most:
            del self.carried[next(iter(self.carried))]
        return carried

    def _update(self, carried: Carried | None, requests: Resources, snap: Snapshot) -> Carried:
        if carried is not None and carried.journal is snap.journal and carried.version == snap.version \
                and carried.released is snap.released and carried.shared is snap.shared:
            return carried
        rows = self._changed(carried, snap)
        if carried is None or rows is None:
            return Carried(snap, [None if f is None else f.reject_rows(requests, snap, None) for f in self.filters],
                           [None if w is None else w.weigh_rows(requests, snap, None) for w in self.weighers])
        for f, mask in zip(self.filters, carried.masks, strict=True):
            if f is not None:
                mask[rows] = f.reject_rows(requests, snap, rows)  # type: ignore[index]
        for k, (w, raw) in enumerate(zip(self.weighers, carried.raws, strict=True)):
            if w is not None:
                before = raw[rows]  # type: ignore[index]
                after = raw[rows] = w.weigh_rows(requests, snap, rows)  # type: ignore[index]
                carried.extremes[k] = _moved(carried.extremes[k], before, after)
        if carried.total is not None:
            carried.pending.append(rows)
            if sum(len(p) for p in carried.pending) > most_changed(snap.size):
                carried.total, carried.pending, carried.top = None, [], None
        carried.journal, carried.version, carried.released = snap.journal, snap.version, snap.released
        return carried

    @staticmethod
    def _changed(carried: Carried | None, snap: Snapshot) -> Ints | None:
        """The hosts whose rows may differ between ``carried``'s snapshot and ``snap`` (sorted,
        once each), or None when not known or too many to be worth patching."""
        if carried is None or carried.journal is not snap.journal or carried.released is not snap.released \
                or carried.shared is not snap.shared or abs(snap.version - carried.version) > most_changed(snap.size):
            return None
        return np.unique(np.array(snap.journal.changed(carried.version, snap.version), dtype=np.int64))

    def best(self, carried: Carried, workload: Workload, snap: Snapshot, candidates: Ints,
             weighers: Sequence[tuple[Weigher, float, bool]]) -> Ints | None:
        """The candidates whose totals, as the engine's ``_weigh`` gives them, are within
        1e-12 of the best (what ``_choose`` draws from), by host index; None when a weigher
        that is not row-wise takes part."""
        everyone = len(candidates) == snap.size
        scales: list[Scale] = []
        for k, (weigher, factor, optional) in enumerate(weighers):
            if optional and not weigher.applies(workload, snap):  # type: ignore[attr-defined]
                continue
            raw = carried.raws[k]
            if raw is None:
                return None
            if not everyone:
                seen = raw[candidates]
                low, high = seen.min(), seen.max()
            else:
                if carried.extremes[k] is None:
                    carried.extremes[k] = (raw.min(), raw.max())
                low, high = carried.extremes[k]  # type: ignore[misc]
            if high > low:
                scales.append((k, factor, low, high))
        total = carried.total
        if total is None or tuple(scales) != carried.scales:
            total = carried.total = summed(carried.raws, scales, snap.size)
            carried.scales, carried.top = tuple(scales), None
        elif carried.pending:
            rows = carried.pending[0] if len(carried.pending) == 1 else np.unique(np.concatenate(carried.pending))
            before = total[rows]
            after = total[rows] = summed([None if raw is None else raw[rows] for raw in carried.raws], scales,
                                         len(rows))
            carried.top = _top_moved(carried.top, total, rows, before, after)
        carried.pending = []
        if not everyone:
            seen = total[candidates]
            return candidates[np.flatnonzero(seen >= seen.max() - 1e-12)]
        if carried.top is None:
            most = total.max()
            carried.top = (most, np.flatnonzero(total >= most - 1e-12))
        return carried.top[1]


def _moved(extremes: tuple[float, float] | None, before: Floats, after: Floats) -> tuple[float, float] | None:
    """An array's min and max once its values ``before`` are replaced by ``after``, from its
    min and max before; None when not known so (a value replaced was an extreme)."""
    if extremes is None or not len(before):
        return extremes
    low, high = extremes
    if not (before.min() > low and before.max() < high):
        return None
    return np.minimum(low, after.min()), np.maximum(high, after.max())


def _top_moved(top: tuple[float, Ints] | None, total: Floats, rows: Ints, before: Floats, after: Floats
               ) -> tuple[float, Ints] | None:
    """The best total and the hosts within 1e-12 of it once ``total`` changed on ``rows``
    from ``before`` to ``after``; None when not known so (a host at the best changed)."""
    if top is None or not len(rows):
        return top
    most, best = top
    if not before.max() < most or len(best) > 4096:
        return None
    most = np.maximum(most, after.max())
    kept = best[~np.isin(best, rows)]
    kept = kept[total[kept] >= most - 1e-12]
    return most, np.union1d(kept, rows[after >= most - 1e-12])
