"""Stats: every Up host measured once per ``statistics.interval``, as a smoothed load.

The pass only decides who is due: a heap of due times, and one look over every host per
interval for hosts that joined, each measured at its own place in the interval
(:func:`spread`), so 10,000 hosts joined at once are not 10,000 calls in one pass. The rest
is a *round* on a lane of its own, after the pass and off it (:class:`Round`): it takes the
measures that came back, turns each pair into a :class:`~clustercore.statistics.Load`
(:func:`~clustercore.statistics.rates`) smoothed into the exponentially weighted mean
(:func:`~clustercore.statistics.smooth`) that placement and rebalancing read (with the last
``keep`` raw loads as a series), asks the flavors' ``clustercore_sample_host`` for the due
hosts, each on its host's own lane (a host that hangs costs only its own measures, and a
measure never holds up the host's other calls), and writes the new loads to the store
(``stats/NAME``) on a lease of its own (three intervals): when no leader measures, the
measures vanish rather than go stale. A manager's pass never waits for a round (a bare
cluster's waits for the one its last pass started, at most its call wait), so a store that
stalls a round stalls no pass: the hosts due meanwhile wait for the next round. A round's
errors are reported by the pass that takes it.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import wait
from functools import partial

import attrs

from clustercore.errors import LeaseNotFound, StoreError, ValidationError
from clustercore.model import Host, HostState, Workload
from clustercore.plugins import Plugins
from clustercore.reconcile.calls import Call, HostCalls, outcome
from clustercore.reconcile.observe import View
from clustercore.state import STATS, encode
from clustercore.statistics import Load, Sample, StatsPolicy, rates, smooth
from clustercore.store.base import Put, Store

log = logging.getLogger(__name__)
HOOK = "clustercore_sample_host"
BATCH = 100  # puts per store transaction
LANE = "(statistics)"  # the rounds' lane: never a host's name (NAME_RE)


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


@attrs.frozen
class Round:
    """What the passes since the last round handed it: the hosts due (their records as the
    pass saw them), the hosts no longer Up (no rate across the gap) and the removed ones."""

    now: float
    alpha: float
    keep: int
    ttl: float  # of the stored loads' lease
    timeout: float  # of each measure
    due: tuple[Host, ...] = ()
    gaps: frozenset[str] = frozenset()
    gone: frozenset[str] = frozenset()


class Stats:
    def __init__(self, store: Store, plugins: Plugins, calls: HostCalls,
                 workloads_on: Callable[[str], Sequence[Workload]] = lambda host: ()) -> None:
        self.store, self.plugins, self.calls, self.workloads_on = store, plugins, calls, workloads_on
        # The rounds' own (one round at a time); ``loads`` is replaced whole, never changed.
        self.samples: dict[str, Sample] = {}  # the last sample of each host
        self.loads: dict[str, Load] = {}  # the smoothed load of each host
        self.series: dict[str, deque[tuple[float, Load]]] = {}  # (when, the interval's raw load)
        self._pending: set[str] = set()  # hosts with a measure asked and not yet taken
        self._lease, self._lease_kept = 0, float("-inf")
        # The passes' own.
        self._due: list[tuple[float, str]] = []
        self._scheduled: set[str] = set()
        self._scan_at = float("-inf")
        self._asked: dict[str, Host] = {}  # due since the last round began
        self._gaps: set[str] = set()
        self._gone: set[str] = set()
        self._round: Call | None = None  # the round started last, until a pass sees it over
        self._next: tuple[float, StatsPolicy, float] | None = None  # (now, policy, timeout) of the last pass

    def sync(self, view: View, errors: list[str], wait_round: bool = True) -> None:
        """Find who is due; take the last round if it is over, waiting for it at most the
        pass's call wait when ``wait_round`` (a bare cluster, whose round started as its last
        pass ended; a manager's pass never waits: its round is taken by a later pass)."""
        policy = view.config.statistics
        if policy.interval <= 0 or not self.plugins.implements(HOOK):
            return
        now = view.now
        if now >= self._scan_at:  # hosts that joined since (and the first pass)
            self._scan_at = now + policy.interval
            for name in view.hosts.keys() - self._scheduled:
                self._scheduled.add(name)
                heapq.heappush(self._due, (now + policy.interval * spread(name), name))
        while self._due and self._due[0][0] <= now:
            _, name = heapq.heappop(self._due)
            current = view.hosts.get(name)
            if current is None:  # removed
                self._scheduled.discard(name)
                self._gone.add(name)
                self._asked.pop(name, None)
                continue
            heapq.heappush(self._due, (now + policy.interval, name))
            if current.value.state is HostState.UP:
                self._asked[name] = current.value
            else:
                self._gaps.add(name)
                self._asked.pop(name, None)
        self._take_round(view.config.call_timeout, errors, wait_round)
        self._next = (now, policy, view.config.call_timeout)

    def launch(self) -> None:
        """Start the round of what the passes found due since the last one, unless the last
        round is still running: by the pass at its end, or by a manager between its passes."""
        work_left = self._asked or self._gaps or self._gone or self._pending
        if self._round is not None or self._next is None or not work_left:
            return
        now, policy, timeout = self._next
        work = Round(now, policy.alpha, policy.keep, 3 * policy.interval, timeout,
                     tuple(self._asked.values()), frozenset(self._gaps), frozenset(self._gone))
        self._asked, self._gaps, self._gone = {}, set(), set()
        self._round = self.calls.submit(LANE, ("stats", LANE), partial(self._run, work), timeout, settled=False)

    def settle(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the running round, if any (for callers that
        drive passes back to back: tests, simulations); True when none is left running."""
        running = self._round
        return running is None or not wait([running.future], timeout=timeout).not_done

    def _take_round(self, timeout: float, errors: list[str], wait_round: bool) -> None:
        """The last round, once over (waited for at most the pass's call wait when
        ``wait_round``), forgotten and its errors told: another may start."""
        running = self._round
        if running is None:
            return
        if wait_round:
            self.settle(self.calls.wait)
        if not running.future.done():
            if running.overdue():
                errors.append(f"statistics: a round has run for more than {timeout:g} s (the store?)")
            return
        self._round = None
        self.calls.take(running.key)
        if not running.future.cancelled():  # a deposed leader's was
            result, error = outcome(running)
            errors.extend([f"statistics: {error}"] if error is not None else result)

    def _run(self, work: Round) -> list[str]:
        """One round, off the pass: forget, take the measures back, ask the due, write,
        and wait (at most a pass's call wait) for what it asked."""
        errors: list[str] = []
        for name in work.gone | work.gaps:
            self.samples.pop(name, None)
        for name in work.gone:
            self.series.pop(name, None)
        written = self._collect(work, errors)
        asked = []
        for host in work.due:
            if host.name not in self._pending:
                asked.append(self.calls.submit(f"{host.name}/stats", ("stats", host.name), partial(self._sample, host),
                                               work.timeout, settled=False).future)
                self._pending.add(host.name)
        if written or work.gone & self.loads.keys():
            self.loads = {n: v for n, v in {**self.loads, **written}.items() if n not in work.gone}
        if written:
            self._write(written, work.ttl, work.now, errors)
        wait(asked, timeout=self.calls.wait)  # fast hosts' measures are in for the next round
        return errors

    def _sample(self, host: Host) -> Sample | None:
        return self.plugins.sample_host(host, self.workloads_on(host.name))

    def _collect(self, work: Round, errors: list[str]) -> dict[str, Load]:
        """The samples that came back since the last round, turned into loads."""
        written: dict[str, Load] = {}
        for name in list(self._pending):
            key = ("stats", name)
            call = self.calls.get(key)
            if call is None or name in work.gone:
                self.calls.forget(key)  # a removed host's: its answer is of no use
                self._pending.discard(name)
                continue
            if call.overdue():
                self.calls.forget(key)
                self._pending.discard(name)
                self.samples.pop(name, None)
                errors.append(f"statistics of {name} did not answer within {work.timeout:.0f} s")
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
            written[name] = smooth(self.loads.get(name), load, work.alpha)
            self.series.setdefault(name, deque(maxlen=work.keep)).append((work.now, load))
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

    def depose(self) -> None:
        """No longer the leader: its lease lapses; a new leadership measures afresh."""
        self._lease, self._lease_kept = 0, float("-inf")
