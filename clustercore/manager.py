"""A manager process: one of several over a shared store, acting only while it leads.

``clustercore manager run --store etcd://h1:2379,h2:2379 --name m1`` campaigns for the
leadership (:mod:`clustercore.leadership`) and, while it leads, reconciles the cluster
every ``interval`` seconds with every write guarded by its token. Followers keep their
caches warm through the store's watches and campaign every pass, so one of them takes
over within the lease TTL when the leader dies. ``clustercore manager status`` shows the
leader, the hosts and their states. ``memory://`` runs a single embedded manager.

Serving the HTTP API (``clustercore manager run --listen``, :mod:`clustercore.api`), any
manager answers, leader or follower: :attr:`Manager.operator` is the Cluster the API
writes through, straight to the store with compare-and-swap (not guarded by this
manager's leadership, so a follower accepts writes too); work that needs hosts becomes an
operation that whichever manager leads carries out. :attr:`Manager.on_pass` and
:attr:`Manager.on_decision` are told how long each pass and each scheduler decision took
(the metrics follow them).

Memory: a manager process (``freeze_memory``, set by ``clustercore manager run``; the
collector is the whole process's, so a library user's manager leaves it alone) collects
garbage once after its first pass (which reads every host) and every :data:`REFREEZE`
seconds, and freezes what is left (:func:`freeze_long_lived`), so the cluster's long-lived
state (a hundred thousand hosts' records) is not traversed again by every later
collection; and it holds the collector off during each pass (:func:`collector_held`), so
the collections a pass's allocations call for run after it, between passes.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TextIO

from clustercore.clock import Clock, SystemClock
from clustercore.cluster import Cluster
from clustercore.leadership import LEADER_KEY, Elector, GuardedStore, holder
from clustercore.plugins import Plugins
from clustercore.scheduling.engine import Filter, HostFilter, Scheduler
from clustercore.state import CONFIG_KEY, HOSTS
from clustercore.store.base import Store
from clustercore.store.url import open_store

__all__ = ["Manager", "collector_held", "freeze_long_lived", "open_store", "status"]

log = logging.getLogger(__name__)
REFREEZE = 600.0  # seconds between two freezes of what survived (freeze_long_lived)


def freeze_long_lived() -> None:
    """Collect once, then move every object left into the collector's permanent generation
    (``gc.freeze``): later collections look only at what was made since. Cycles made
    before are collected by this call first, so nothing that was garbage is kept."""
    gc.collect()
    gc.freeze()


@contextlib.contextmanager
def collector_held(hold: bool = True) -> Iterator[None]:
    """No automatic collection inside the block (with ``hold``): the collections its
    allocations call for run once it ends, on the next allocation of any thread. Objects
    freed by their reference counts are freed at once as always; only cycles wait."""
    if not hold or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Manager:
    """One manager process over a shared store. It survives its store: a pass that the
    store fails makes it step down to follower (so another manager may lead) and retry
    with a backoff doubling from ``interval`` to ``max_backoff``; it starts (and waits)
    while the store is away. A pass that runs longer than ``pass_limit`` (default a third
    of the TTL) gives the lease up rather than holding it while stuck; jobs a deposed
    manager had queued are dropped."""

    def __init__(self, store: Store, name: str, ttl: float = 10.0, plugins: Plugins | None = None,
                 clock: Clock | None = None, pass_limit: float | None = None, max_backoff: float = 5.0,
                 freeze_memory: bool = False) -> None:
        self.name = name
        self.freeze_memory = freeze_memory
        self.store = store  # unguarded: what the API writes operators' requests to
        self.clock = clock or SystemClock()
        self.elector = Elector(store, name, ttl=ttl, margin=min(2.0, ttl / 4))
        self.pass_limit = pass_limit if pass_limit is not None else ttl / 3
        self.max_backoff = max_backoff
        # Moves and fence jobs run beside the loop, which keeps renewing the lease meanwhile.
        self.executor = ThreadPoolExecutor(4, thread_name_prefix=f"manager-{name}")
        self.cluster = Cluster(store=GuardedStore(store, self.elector), plugins=plugins, clock=self.clock,
                               executor=self.executor, may_act=self.elector.may_act)
        # A pass waits on slow hosts for at most half its limit (else a slow host's answer
        # would make the leader resign mid-work).
        self.cluster.controller.wait_budget = self.pass_limit / 2
        self.cluster.controller.launch_stats = False  # between passes (between_passes)
        self._token = 0  # the leadership the controller last took over
        self._pass_started: float | None = None  # monotonic time of the pass under way
        self._frozen_at = float("-inf")  # monotonic time of the last freeze_long_lived()
        self.store_errors = 0  # passes in a row that the store failed
        #: Called with the seconds each pass took and whether this manager led after it.
        self.on_pass: list[Callable[[float, bool], None]] = []
        #: Called with the seconds each scheduler decision (filter and weigh) took.
        self.on_decision: list[Callable[[float], None]] = []
        self._time_decisions()
        self._operator: Cluster | None = None
        self._operator_lock = threading.Lock()

    @property
    def leading(self) -> bool:
        return self.elector.leading

    @property
    def operator(self) -> Cluster:
        """The Cluster through which operators' calls (the API's) write: the same flavors
        and clock, the store without this manager's leadership guard. It never reconciles."""
        with self._operator_lock:
            if self._operator is None:
                self._operator = Cluster(store=self.store, plugins=self.cluster.plugins, clock=self.clock,
                                         may_act=lambda: False)
            return self._operator

    def _time_decisions(self) -> None:
        """Time every ``select`` of the schedulers the controller's reconcilers make (the
        drain's, the recovery's and the operator calls' alike)."""
        controller = self.cluster.controller
        make = controller.scheduler
        observers = self.on_decision

        def timed(extra_filters: Sequence[Filter | HostFilter] = (), seed: int = 0, moving: bool = False) -> Scheduler:
            scheduler = make(extra_filters, seed, moving)
            select = scheduler.select

            def timed_select(workload: Any) -> str:
                started = time.perf_counter()
                try:
                    return select(workload)
                finally:
                    elapsed = time.perf_counter() - started
                    for observe in observers:
                        observe(elapsed)

            scheduler.select = timed_select  # type: ignore[method-assign]
            return scheduler

        controller.scheduler = timed  # type: ignore[method-assign]

        def moving(extra_filters: Sequence[Filter | HostFilter] = ()) -> Scheduler:
            return timed(extra_filters, moving=True)

        controller.drain.scheduler = moving
        controller.recovery.scheduler = timed

    def step(self) -> bool:
        """Campaign (or renew), then reconcile (acting only if leading). True when this
        manager leads after the pass; a store failure steps it down."""
        leading = self.elector.campaign()
        token = self.elector.token
        if token != self._token:
            if self._token:
                self.cluster.controller.depose()
            self._token = token
            if leading:
                self.cluster.controller.take_over(self.clock.now())
        self._pass_started = started = self.elector.monotonic()
        try:
            with collector_held(self.freeze_memory):
                report = self.cluster.step()
        finally:
            self._pass_started = None
        elapsed = self.elector.monotonic() - started
        for observe in self.on_pass:
            observe(elapsed, self.elector.leading)
        for error in report.errors:
            log.debug("%s: %s", self.name, error)
        if report.store_error is not None:
            self.store_errors += 1
            log.warning("%s: the store failed the pass (%s); stepping down", self.name, report.store_error)
            self._step_down()
            return False
        self.store_errors = 0
        return self.elector.leading

    def _step_down(self) -> None:
        if self.elector.leading:
            try:
                self.elector.resign()
            except Exception as exc:  # the store is away: the lease expires by itself
                log.debug("%s: cannot resign: %s", self.name, exc)
                self.elector.drop("the store failed a pass")
        if self._token:
            self.cluster.controller.depose()
            self._token = 0

    def backoff(self, interval: float) -> float:
        """Seconds to wait before the next pass: ``interval``, doubled per failed pass."""
        if not self.store_errors:
            return interval
        return float(min(self.max_backoff, interval * 2.0 ** min(self.store_errors, 16)))

    def run(self, interval: float = 1.0, stop: threading.Event | None = None) -> None:
        """Step every ``interval`` seconds until ``stop`` (then resign at once), with the
        threads of :meth:`start` beside the passes and :meth:`between_passes` after each.
        No store error ends it."""
        stop = stop or threading.Event()
        threads = self.start(stop)
        try:
            while not stop.is_set():
                try:
                    self.step()
                except Exception:  # the store or a bug: never the end of a manager
                    log.exception("%s: pass failed", self.name)
                    self.store_errors += 1
                    self._step_down()
                self.between_passes()
                stop.wait(self.backoff(interval))
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            try:
                self.elector.resign()
            except Exception as exc:
                log.warning("%s: cannot resign (%s): the lease expires by itself", self.name, exc)
            self.cluster.controller.fencer.stop()  # fence agents still running: their whole process groups
            self.executor.shutdown(wait=False, cancel_futures=True)

    def start(self, stop: threading.Event) -> list[threading.Thread]:
        """The threads that run beside the passes until ``stop``: the lease renewed every
        third of the TTL while passes keep within ``pass_limit`` (:meth:`keep_leading`), and
        heartbeats taken as they arrive (:meth:`~clustercore.reconcile.observe.Observer.listen`)."""
        threads = [threading.Thread(target=self.keep_leading, args=(stop,), name=f"renew-{self.name}", daemon=True),
                   threading.Thread(target=self.cluster.controller.observer.listen, args=(self.clock.now, stop),
                                    name=f"heartbeats-{self.name}", daemon=True)]
        for thread in threads:
            thread.start()
        return threads

    def between_passes(self) -> None:
        """What a manager does between two passes, never in one: start the statistics round
        of the hosts the pass found due (:meth:`~clustercore.reconcile.stats.Stats.launch`,
        which then runs off the passes), and with ``freeze_memory``,
        :func:`freeze_long_lived` after the first pass and every :data:`REFREEZE` seconds."""
        if self.leading:
            self.cluster.controller.stats.launch()
        if self.freeze_memory and self.elector.monotonic() - self._frozen_at >= REFREEZE:
            freeze_long_lived()
            self._frozen_at = self.elector.monotonic()

    def keep_leading(self, stop: threading.Event) -> None:
        """Renew the lease every third of the TTL until ``stop`` (what :meth:`run` runs
        beside its passes; for callers that drive :meth:`step` themselves). A pass stuck
        beyond ``pass_limit`` makes it give the lease up instead."""
        while not stop.wait(self.elector.ttl / 3):
            started = self._pass_started
            if started is not None and self.elector.monotonic() - started > self.pass_limit:
                if self.elector.leading:
                    log.error("%s: a pass has run %.1f s (limit %.1f s): giving the leadership up", self.name,
                              self.elector.monotonic() - started, self.pass_limit)
                    try:
                        self.elector.resign()
                    except Exception:
                        self.elector.drop("a pass overran its limit")
                continue
            if self.elector.leading:
                try:
                    self.elector.renew()
                except Exception as exc:
                    log.warning("%s: renewing failed: %s", self.name, exc)


def status(store: Store, out: TextIO) -> int:
    """Print the leader and every host with its state."""
    leader = store.get(LEADER_KEY)
    cluster = Cluster(store=store, plugins=Plugins(entry_points=False), may_act=lambda: False)
    out.write(f"leader: {holder(leader) if leader else '(none)'}"
              f"{f' (token {leader.mod_revision})' if leader else ''}\n")
    if leader is not None and leader.lease == 0:
        out.write("leader key: STALE (held without a lease: no manager can lead); clear it with "
                  "clustercore manager clear-leader --store URL\n")
    hosts = cluster.hosts()
    corrupt = {key[len(HOSTS):]: problem for key, problem in cluster.state.corrupt.items() if key.startswith(HOSTS)}
    for name in sorted({*hosts, *corrupt}):
        if name in corrupt:
            out.write(f"{name:20} {'CORRUPT':26} {corrupt[name]}\n")
        else:
            out.write(f"{name:20} {hosts[name].state.value:26} {hosts[name].reason}\n")
    if CONFIG_KEY in cluster.state.corrupt:
        out.write(f"config: CORRUPT ({cluster.state.corrupt[CONFIG_KEY]}); the last good one is in force\n")
    out.write(f"{len(hosts) + len(corrupt)} host(s), {len(cluster.placements())} placement(s)\n")
    return 0
