"""A watcher of where workloads really run, for labs, tests and benchmarks.

:class:`Watcher` asks ``where(reverse)`` (a flavor's view from the hosts themselves:
libvirt's domains, podman's containers; never the store) as often as it can in a thread,
and keeps what must never happen (a workload running on two hosts at once) and, for the
workloads it is told to follow, the longest time each ran nowhere (its downtime, to within
the sampling interval, which it reports).

One look asks the hosts one after the other, so a workload that moves from a host asked
early to one asked later is seen on both in that look without ever running twice. Looks
alternate the order of the hosts (``reverse``), and a workload counts as running twice only
when two consecutive looks, one in each order, both see it on the same hosts: a workload
that stopped on one host before it started on the other cannot be seen on both when the
target is asked first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

Where = Callable[[bool], Mapping[str, Sequence[str]]]  # (hosts in reverse order) -> workload -> its hosts


class Watcher:
    def __init__(self, where: Where, follow: Iterable[str] = (), pause: float = 0.01) -> None:
        self.where, self.pause = where, pause
        self.down: dict[str, float] = dict.fromkeys(follow, 0.0)  # longest time running nowhere
        self.twice: list[dict[str, list[str]]] = []  # per confirming look: the workloads on two hosts
        self.looks, self.elapsed = 0, 0.0
        self._seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started, before = time.monotonic(), dict[str, frozenset[str]]()
        while not self._stop.is_set():
            seen, now = self.where(self.looks % 2 == 1), time.monotonic()
            self.looks += 1
            for name in self.down:
                if seen.get(name):
                    self.down[name] = max(self.down[name], now - self._seen.get(name, now))
                    self._seen[name] = now
            doubles = {name: frozenset(hosts) for name, hosts in seen.items() if len(hosts) > 1}
            if twice := {name: sorted(hosts) for name, hosts in doubles.items() if before.get(name) == hosts}:
                self.twice.append(twice)
            before = doubles
            self.elapsed = now - started
            time.sleep(self.pause)

    @property
    def interval(self) -> float:
        """The mean time between two looks (s)."""
        return self.elapsed / max(1, self.looks)

    def stop(self) -> Watcher:
        self._stop.set()
        self._thread.join(10)
        return self
