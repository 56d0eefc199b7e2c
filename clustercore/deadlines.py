"""Deadlines: keys, each with at most one due time, handed back once that time has come.

A heap of due times, each with the keys filed under it, and lazy invalidation: arming a key
records its deadline and files it under that time unless it is already filed no later
(a deadline pushed back stays where it is until that time comes, and is filed again then);
cancelling only forgets the key's deadline. Entries that no longer stand are dropped when
their time comes up. Keys that fall due together (heartbeats heard in the same pass) share
one heap entry, so what a pass costs is the keys that come up, one dict lookup each, plus a
heap operation per distinct time. Pure: time is passed in (``now``), never read, so a fake
clock drives it in tests and simulations.

The controller keeps the end of every Up host's heartbeat grace here
(:mod:`clustercore.controller`), so an Up host that keeps beating costs nothing per pass.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Deadlines(Generic[K]):
    """At most one deadline per key; :meth:`pop_due` returns the keys whose time has come."""

    def __init__(self) -> None:
        self._due: dict[K, float] = {}  # key -> its deadline
        self._filed: dict[K, float] = {}  # key -> the time it is filed under (<= its deadline)
        self._times: list[float] = []  # heap of the times with keys filed under them
        self._keys: dict[float, list[K]] = {}  # time -> keys filed under it (some may no longer stand)

    def arm(self, key: K, due: float) -> None:
        """``key`` is due at ``due``; its earlier deadline, if any, no longer counts."""
        self._due[key] = due
        filed = self._filed.get(key)
        if filed is None or filed > due:
            self._filed[key] = due
            bucket = self._keys.get(due)
            if bucket is None:
                self._keys[due] = [key]
                heapq.heappush(self._times, due)
            else:
                bucket.append(key)

    def cancel(self, key: K) -> None:
        """``key`` has no deadline any more (nothing happens when it had none)."""
        self._due.pop(key, None)

    def due(self, key: K) -> float | None:
        """When ``key`` is due, or None."""
        return self._due.get(key)

    def next_due(self) -> float | None:
        """The earliest deadline, or None when there is none (a scan: for tests and status)."""
        return min(self._due.values(), default=None) if self._due else None

    def pop_due(self, now: float) -> list[K]:
        """The keys due at or before ``now``, earliest first; they are disarmed."""
        times, keys, filed, live = self._times, self._keys, self._filed, self._due
        fired: list[K] = []
        dues: list[float] = []
        last, ordered = float("-inf"), True
        later: list[tuple[K, float]] = []  # pushed back since they were filed
        while times and times[0] <= now:
            time = heapq.heappop(times)
            for key in keys.pop(time):
                if filed.get(key) != time:
                    continue  # filed again earlier since: that entry stands
                del filed[key]
                due = live.get(key)
                if due is None:
                    continue  # cancelled
                if due <= now:
                    del live[key]
                    fired.append(key)
                    dues.append(due)
                    if due < last:
                        ordered = False
                    last = due
                else:
                    later.append((key, due))
        for key, due in later:  # filed again at their deadlines
            self.arm(key, due)
        if not ordered:  # a deadline pushed back, then come before others
            order = sorted(range(len(fired)), key=dues.__getitem__)  # stable: ties keep their order
            fired = [fired[i] for i in order]
        return fired

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def __len__(self) -> int:
        return len(self._due)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._due))
