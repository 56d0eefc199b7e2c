"""Deadlines: keys, each with at most one due time, handed back once that time has come.

Keys are filed in buckets of ``width`` seconds of due time (whole seconds by default), the
buckets' numbers in a heap. Arming a key moves it to the bucket of its new deadline (two
dict operations, nothing when it stays in the same one); cancelling takes it out. So a
deadline pushed back again and again (an Up host's heartbeat grace, pushed back by each
heartbeat) costs its arming alone, and taking what is due looks only at the keys really
due: every key of the buckets wholly past, and the keys of the current bucket whose time
has come. Pure: time is passed in (``now``), never read, so a fake clock drives it in tests
and simulations.

The controller keeps the end of every Up host's heartbeat grace here, pushed back as its
heartbeats are taken (:mod:`clustercore.reconcile.observe`), so an Up host that keeps
beating costs nothing per pass (:mod:`clustercore.controller`).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Deadlines(Generic[K]):
    """At most one deadline per key; :meth:`pop_due` returns the keys whose time has come."""

    def __init__(self, width: float = 1.0) -> None:
        self.width = width
        self._due: dict[K, float] = {}  # key -> its deadline
        self._slot: dict[K, int] = {}  # key -> the bucket it is filed in
        self._buckets: dict[int, dict[K, None]] = {}  # bucket -> its keys, in arming order
        self._slots: list[int] = []  # heap of the buckets' numbers

    def arm(self, key: K, due: float) -> None:
        """``key`` is due at ``due``; its earlier deadline, if any, no longer counts."""
        self._due[key] = due
        slot = math.floor(due / self.width)
        old = self._slot.get(key)
        if old == slot:
            return
        if old is not None:
            self._buckets[old].pop(key, None)
        self._slot[key] = slot
        bucket = self._buckets.get(slot)
        if bucket is None:
            self._buckets[slot] = {key: None}
            heapq.heappush(self._slots, slot)
        else:
            bucket[key] = None

    def cancel(self, key: K) -> None:
        """``key`` has no deadline any more (nothing happens when it had none)."""
        self._due.pop(key, None)
        slot = self._slot.pop(key, None)
        if slot is not None:
            self._buckets[slot].pop(key, None)

    def due(self, key: K) -> float | None:
        """When ``key`` is due, or None."""
        return self._due.get(key)

    def next_due(self) -> float | None:
        """The earliest deadline, or None when there is none (a scan: for tests and status)."""
        return min(self._due.values(), default=None) if self._due else None

    def pop_due(self, now: float) -> list[K]:
        """The keys due at or before ``now``, earliest first (ties in arming order); they
        are disarmed."""
        current = math.floor(now / self.width)
        slots, buckets, live, filed = self._slots, self._buckets, self._due, self._slot
        fired: list[K] = []
        while slots and slots[0] <= current:
            slot = slots[0]
            bucket = buckets[slot]
            # a bucket wholly past gives every key; the current one those due by now
            ready = list(bucket) if slot < current else [key for key in bucket if live[key] <= now]
            for key in ready:
                del bucket[key]
            fired.extend(ready)
            if bucket:
                break  # the current bucket keeps its keys not yet due
            heapq.heappop(slots)
            del buckets[slot]
        dues = [live.pop(key) for key in fired]
        for key in fired:
            del filed[key]
        if any(a > b for a, b in itertools.pairwise(dues)):
            order = sorted(range(len(fired)), key=dues.__getitem__)  # stable: ties keep their order
            fired = [fired[i] for i in order]
        return fired

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def __len__(self) -> int:
        return len(self._due)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._due))
