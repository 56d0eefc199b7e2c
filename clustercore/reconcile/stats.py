"""Stats: every Up host measured once per ``statistics.interval``, as a smoothed load.

The flavors' ``clustercore_sample_host`` runs off the pass on a lane of its own per host (a
host that hangs costs only its own measures, and a measure never holds up the host's other
calls); two samples make a :class:`~clustercore.statistics.Load`
(:func:`~clustercore.statistics.rates`), smoothed into the exponentially weighted mean
(:func:`~clustercore.statistics.smooth`) that placement and rebalancing read, with the last
``keep`` raw loads as a series. The leader writes each host's smoothed load to the store
(``stats/NAME``) on a lease of its own (three intervals): when no leader measures, the
measures vanish rather than go stale. A pass costs what is due: a heap of due times, and
one look over every host per interval for hosts that joined, each measured at its own
place in the interval (:func:`spread`): 10,000 hosts joined at once are not 10,000 calls in
one pass.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial

from clustercore.errors import LeaseNotFound, StoreError, ValidationError
from clustercore.model import Host, HostState, Workload
from clustercore.plugins import Plugins
from clustercore.reconcile.calls import HostCalls, outcome
from clustercore.reconcile.observe import View
from clustercore.state import STATS, encode
from clustercore.statistics import Load, Sample, rates, smooth
from clustercore.store.base import Put, Store

log = logging.getLogger(__name__)
HOOK = "clustercore_sample_host"
BATCH = 100  # puts per store transaction


def spread(name: str) -> float:
    """Where in the interval host ``name`` is measured, in [0, 1): stable and spread evenly,
    so that hosts joined together are not all measured in one pass."""
    return zlib.crc32(name.encode()) / 2**32


def stored_loads(store: Store) -> dict[str, Load]:
    """Every host's load as the leader last stored it (what a follower or the API reads)."""
    loads = {}
    for kv in store.list(STATS):
        with contextlib.suppress(ValueError, ValidationError):
            loads[kv.key.removeprefix(STATS)] = Load.from_dict(json.loads(kv.value))
    return loads


class Stats:
    def __init__(self, store: Store, plugins: Plugins, calls: HostCalls,
                 workloads_on: Callable[[str], Sequence[Workload]] = lambda host: ()) -> None:
        self.store, self.plugins, self.calls, self.workloads_on = store, plugins, calls, workloads_on
        self.samples: dict[str, Sample] = {}  # the last sample of each host
        self.loads: dict[str, Load] = {}  # the smoothed load of each host
        self.series: dict[str, deque[tuple[float, Load]]] = {}  # (when, the interval's raw load)
        self._due: list[tuple[float, str]] = []
        self._scheduled: set[str] = set()
        self._pending: set[str] = set()
        self._scan_at = float("-inf")
        self._lease, self._lease_kept = 0, float("-inf")

    def sync(self, view: View, errors: list[str]) -> None:
        policy = view.config.statistics
        if policy.interval <= 0 or not self.plugins.implements(HOOK):
            return
        now = view.now
        if now >= self._scan_at:  # hosts that joined since (and the first pass)
            self._scan_at = now + policy.interval
            for name in view.hosts.keys() - self._scheduled:
                self._scheduled.add(name)
                heapq.heappush(self._due, (now + policy.interval * spread(name), name))
        written = self._collect(view, policy.alpha, policy.keep, errors)
        while self._due and self._due[0][0] <= now:
            _, name = heapq.heappop(self._due)
            current = view.hosts.get(name)
            if current is None:  # removed
                self._scheduled.discard(name)
                self._forget(name)
                continue
            heapq.heappush(self._due, (now + policy.interval, name))
            if current.value.state is not HostState.UP:
                self.samples.pop(name, None)  # no rate across a gap
                continue
            if name not in self._pending:
                host = current.value
                self.calls.submit(f"{name}/stats", ("stats", name), partial(self._sample, host),
                                  view.config.call_timeout)
                self._pending.add(name)
        if written:
            self._write(written, 3 * policy.interval, now, errors)

    def _sample(self, host: Host) -> Sample | None:
        return self.plugins.sample_host(host, self.workloads_on(host.name))

    def _collect(self, view: View, alpha: float, keep: int, errors: list[str]) -> dict[str, Load]:
        """The samples that came back since the last pass, turned into loads."""
        written: dict[str, Load] = {}
        for name in list(self._pending):
            key = ("stats", name)
            call = self.calls.get(key)
            if call is None:
                self._pending.discard(name)
                continue
            if call.overdue():
                self.calls.forget(key)
                self._pending.discard(name)
                self.samples.pop(name, None)
                errors.append(f"statistics of {name} did not answer within {view.config.call_timeout:.0f} s")
                continue
            finished = self.calls.take(key)
            if finished is None:
                continue
            self._pending.discard(name)
            sample, error = outcome(finished)
            if error is not None:
                errors.append(f"statistics of {name}: {error}")
                continue
            if not isinstance(sample, Sample):
                continue
            before, self.samples[name] = self.samples.get(name), sample
            load = rates(before, sample) if before is not None else None
            if load is None:
                continue
            self.loads[name] = written[name] = smooth(self.loads.get(name), load, alpha)
            self.series.setdefault(name, deque(maxlen=keep)).append((view.now, load))
        return written

    def _write(self, loads: dict[str, Load], ttl: float, now: float, errors: list[str]) -> None:
        try:
            if not self._lease:
                self._lease, self._lease_kept = self.store.grant(ttl), now
            elif now - self._lease_kept >= ttl / 3:
                try:
                    self.store.keepalive(self._lease)
                except LeaseNotFound:  # lapsed (a long pause): a new one
                    self._lease = self.store.grant(ttl)
                self._lease_kept = now
            puts = [Put(STATS + name, encode(load), self._lease) for name, load in sorted(loads.items())]
            for i in range(0, len(puts), BATCH):
                self.store.txn([], puts[i:i + BATCH])
        except StoreError as exc:
            errors.append(f"statistics not written: {exc}")

    def _forget(self, name: str) -> None:
        self.samples.pop(name, None)
        self.loads.pop(name, None)
        self.series.pop(name, None)

    def depose(self) -> None:
        """No longer the leader: its lease lapses; a new leadership measures afresh."""
        self._lease, self._lease_kept = 0, float("-inf")
