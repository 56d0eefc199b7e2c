"""The reconcile loop: observe, decide purely, act off the pass, record.

One ``step(now)`` is one pass. It composes the reconcilers of :mod:`clustercore.reconcile`:

1. observe (:mod:`~clustercore.reconcile.observe`): informers, heartbeats, reboots -> a View
   (followers stop here, so their caches stay warm);
2. recovery of hosts seen rebooting (their placements fail);
3. for each host that needs a look (not Up, missing a required network or storage, or Up
   with its heartbeat grace run out: a deadline in :mod:`~clustercore.deadlines`, armed when
   the host changes, so an Up host that keeps beating costs nothing), the first decider
   with a decision, in order: hosts (join, liveness, connectivity), drain, fence; committed
   (host compare-and-swap + event, :mod:`~clustercore.reconcile.writer`; the hosts' own
   transitions together at the end of the look, :mod:`~clustercore.reconcile.commits`),
   then flavors told;
4. settle orphaned Starting/Migrating placements; recovery (HA restart) of Failed ones;
5. the hosts due to be measured (:mod:`~clustercore.reconcile.stats`: the round runs after).

Calls into flavors and hosts run off the pass on per-host lanes with deadlines
(:mod:`~clustercore.reconcile.calls`): the pass waits for them briefly, looks again at
what answered, and leaves the rest to later passes, so a hung host costs only itself. A
lost compare-and-swap is reported and decided again next pass; no error leaves a pass.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor

import attrs

from clustercore import watchdog
from clustercore.clock import Clock
from clustercore.deadlines import Deadlines
from clustercore.driver import migrates_storage
from clustercore.errors import Conflict, CorruptEntry, NotLeader, StoreError, UnknownWorkload
from clustercore.events import Event, EventLog
from clustercore.fencing import Fencer
from clustercore.lifecycle import HostEvent, heard
from clustercore.maintenance import Drainer
from clustercore.model import Host, HostReport, HostState, Workload
from clustercore.operations import Operations
from clustercore.plugins import Plugins
from clustercore.reconcile.calls import HostCalls, outcome
from clustercore.reconcile.commits import STAGED, Commits
from clustercore.reconcile.drain import Drain
from clustercore.reconcile.fence import Fence
from clustercore.reconcile.hosts import Hosts, Pending
from clustercore.reconcile.observe import Observer, View
from clustercore.reconcile.operations import Actions, OperationsRunner
from clustercore.reconcile.powersaving import PowerSaving
from clustercore.reconcile.probes import Probes
from clustercore.reconcile.rebalance import Rebalance
from clustercore.reconcile.recovery import Recovery
from clustercore.reconcile.settle import Settle
from clustercore.reconcile.stats import Stats
from clustercore.reconcile.writer import Decision, Writer
from clustercore.scheduling.engine import Filter, HostFilter, Scheduler
from clustercore.scheduling.filters import VolumeFilter
from clustercore.scheduling.measured import load_aware
from clustercore.scheduling.snapshot import Snapshot
from clustercore.state import ClusterState, Versioned

log = logging.getLogger(__name__)
__all__ = ["Controller", "Decision", "StepReport"]
LOOKS = 3  # looks per pass at hosts whose calls answered within the pass
PRUNE = ("(events)", "prune")  # the events' pruning: its lane (never a host's name) and key


@attrs.frozen
class StepReport:
    """What one pass did: events recorded, conflicts met, errors seen; ``store_error`` when
    the store failed the pass (the manager steps down and retries)."""

    time: float
    hosts: int
    events: tuple[Event, ...] = ()
    conflicts: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    store_error: str | None = None


class Controller:
    def __init__(self, store: object, plugins: Plugins, clock: Clock, state: ClusterState,
                 events: EventLog, executor: Executor | None = None, writer: Writer | None = None,
                 may_act: Callable[[], bool] | None = None, monotonic: Callable[[], float] | None = None,
                 actions: Actions | None = None) -> None:
        """``actions``: the operator's API (the Cluster) that operations are carried out with."""
        self.plugins, self.clock, self.state, self.events = plugins, clock, state, events
        self.writer = writer or Writer(state.store, state, events)
        self.calls = HostCalls(monotonic or time.monotonic)
        self.observer = Observer(state.store, state, events)
        self.topology = self.observer.topology
        self.drainer = Drainer(executor)
        self.may_act: Callable[[], bool] = may_act or (lambda: True)  # it leads, its lease valid
        act = self.may_act
        self.commits = Commits(self.writer, self.observer, plugins, act)
        self.hosts = Hosts(plugins, self.calls, self.topology)
        self.drain = Drain(state, plugins, self.calls, self.writer, self.drainer,
                           functools.partial(self.scheduler, moving=True), clock.now, act, self._reached)
        self.fence = Fence(plugins, self.calls, self.writer, self.drainer.executor, act, clock.now(),
                           self._workloads_on)
        self.recovery = Recovery(state, plugins, self.calls, self.writer, self.observer, self.scheduler, act)
        self.probes = Probes(state, plugins, self.calls, self.observer)
        self.stats = Stats(state.store, plugins, self.calls, self._workloads_on)
        self.launch_stats = True  # the statistics round starts as the pass ends (a Manager's: after it)
        self.rebalance = Rebalance(state, plugins, lambda: self.stats.loads,
                                   functools.partial(self.scheduler, moving=True), self.drain.move,
                                   self.drainer.executor, self.writer.record, act)
        self.power = PowerSaving(lambda: self.stats.loads, functools.partial(self.scheduler, moving=True),
                                 self.rebalance.movable, self.fence.fencer, self.drainer.executor,
                                 lambda current, decision, now: self.commit(current, decision, now),
                                 (actions.start_maintenance if actions is not None else self._prepare_maintenance),
                                 self.writer.record, act)
        self.settle = Settle(state, plugins, self.calls, self.writer, self.observer,
                             lambda: self.drainer.moving() | self.recovery.launched(), act)
        self.operations = OperationsRunner(state, Operations(state.store, events, clock.now), self.drainer.executor,
                                           act, actions)
        self._deciders = (self.hosts.decide, self.drain.decide, self.fence.decide)
        self._lock = threading.Lock()
        #: Seconds a pass may spend waiting on host calls in all (None: LOOKS x call_wait).
        self.wait_budget: float | None = None
        self._configured: object = None  # the config the flavors were last given
        #: Each Up host's end of heartbeat grace (clustercore.deadlines), armed when it
        #: changes, pushed back by the observer as its heartbeats are taken.
        self.deadlines: Deadlines[str] = self.observer.grace
        #: Connecting hosts with nothing to decide before a time (:meth:`_rest`), not looked at till then.
        self.asleep: Deadlines[str] = Deadlines()
        self._liveness: object = None  # the liveness policy they were put to rest under

    def _prepare_maintenance(self, name: str) -> None:
        """Without an operator's API (a bare controller): the transition alone."""
        current = self.state.host(name)
        self.commit(current, Decision(current.value, HostEvent.PREPARE_MAINTENANCE, "power saving"), self.clock.now())

    def _reached(self, host: str) -> frozenset[str] | None:
        probe = self.observer.probes.get(host)
        return None if probe is None else probe.storage

    def _workloads_on(self, host: str) -> list[Workload]:
        """The workloads placed on ``host`` (the observer's index), each read by its key."""
        found = []
        for name in self.observer.placed_on(host):
            try:
                found.append(self.state.workload(name).value)
            except (UnknownWorkload, CorruptEntry):
                continue
        return found

    @property
    def fencer(self) -> Fencer:
        """Fencing memory and agents (tests inject agents here)."""
        return self.fence.fencer

    @property
    def started(self) -> float:
        return self.fence.started

    @started.setter
    def started(self, value: float) -> None:
        self.fence.started = value

    def last_seen(self, host: str) -> float | None:
        """When this controller last saw ``host``'s heartbeat change."""
        return self.observer.last_seen.get(host)

    @property
    def reports(self) -> dict[str, HostReport]:
        return dict(self.observer.reports)

    def take_over(self, now: float) -> None:
        """This manager just became the leader: grace periods start now, in-flight
        placements are watched afresh."""
        self.fence.take_over(now)
        self.settle.take_over()
        self.asleep = Deadlines()

    def depose(self) -> None:
        """This manager lost the leadership: queued calls and jobs are dropped."""
        dropped = self.calls.cancel() + self.drainer.cancel()
        self.fence.cancel()
        self.stats.depose()
        self.recovery.cancel()
        self.operations.depose()
        log.warning("deposed: %d queued call(s) dropped", dropped)

    def commit(self, current: Versioned[Host], decision: Decision, now: float,
               remove: bool = False) -> tuple[Host, Event]:
        """Store ``decision`` (compare-and-swap on ``current``) with its event, then tell the
        flavors. Raises Conflict when the host changed since it was read."""
        return self.commits.commit(current, decision, now, remove)

    def scheduler(self, extra_filters: Sequence[Filter | HostFilter] = (), seed: int = 0,
                  moving: bool = False) -> Scheduler:
        """A scheduler over the store's hosts, workloads and placements, with the cluster's
        policy, overcommit and the flavors' filters and weighers; ``moving``: it picks the
        targets of moves (a driver that migrates storage takes local volumes along)."""
        config = self.state.config().value
        snap = Snapshot.build((v.value for v in self.state.hosts().values()),
                              {n: v.value for n, v in self.state.workloads().items()},
                              (v.value for v in self.state.placements().values()), self.topology)
        try:
            policy = self.plugins.policy(config.policy)
        except ValueError as exc:  # stored by an older manager or by hand: the default serves
            log.error("%s; using evenly_distributed", exc)
            policy = self.plugins.policy("evenly_distributed")
        storage = [VolumeFilter({n: v.value for n, v in self.state.volumes().items()},
                                {n: v.value for n, v in self.state.storage_domains().items()}, moving,
                                lambda w: migrates_storage(self.plugins.driver(w.flavor), w))]
        pressure, measured = load_aware(self.stats.loads, policy.name, config.overcommit)  # once measured
        return Scheduler(snap, policy, [*self.plugins.filters, *storage, *pressure, *extra_filters],
                         [*self.plugins.weighers, *measured], config.overcommit, config.ha_headroom, seed)

    # ------------------------------------------------------------------ the pass

    def step(self, now: float | None = None) -> StepReport:
        """One reconcile pass at ``now`` (the clock's time by default). Never raises."""
        with self._lock:
            now = self.clock.now() if now is None else now
            events: list[Event] = []
            conflicts: list[str] = []
            errors: list[str] = []
            try:
                view = self.observer.sync(now, errors)
                self._follow(view)
                if not self.may_act():
                    return StepReport(now, len(view.hosts), (), (), ("not the leader: observing only",))
                self._act(view, events, conflicts, errors)
                if self.launch_stats:
                    self.stats.launch()
            except NotLeader as exc:  # deposed mid-pass: nothing more may be written
                errors.append(str(exc))
                log.warning("pass stopped: %s", exc)
            except StoreError as exc:
                log.warning("pass stopped, the store failed: %s", exc)
                return StepReport(now, len(self.observer.hosts), tuple(events), tuple(conflicts),
                                  (*errors, str(exc)), str(exc))
            except Exception as exc:  # a bug must not stop the control plane: reported, next pass retries
                log.exception("reconcile pass failed")
                errors.append(f"{type(exc).__name__}: {exc}")
            return StepReport(now, len(self.observer.hosts), tuple(events), tuple(conflicts), tuple(errors))

    def _act(self, view: View, events: list[Event], conflicts: list[str], errors: list[str]) -> None:
        self.events.retain = view.config.events_retained
        if view.config is not self._configured:  # the stored config changed: flavors follow it
            self._configured = view.config
            self.plugins.configure(view.config)
        # A pass waits for host calls at most LOOKS times call_wait, within the budget a
        # manager gives it (a pass that outlasts its pass limit gives the leadership up).
        budget = self.wait_budget
        self.calls.wait = view.config.call_wait if budget is None else min(view.config.call_wait, budget / LOOKS)
        self.probes.sync(view, errors)
        self.drain.errors = errors
        looking = self._needing_look(view)
        placed = self.observer.placed_count
        for _ in range(LOOKS):
            waiting = [n for n in looking if n in view.hosts
                       and self._look(view.hosts[n], view, placed(n), events, conflicts, errors)]
            self.commits.flush(events, conflicts)
            self.recovery.rebooted(view, errors)
            self.settle.sync(view, events, errors)
            self.recovery.sync(view, errors)
            if not self.calls.launched():
                break
            self.calls.settle()
            looking = waiting
        self._record_watchdogs(view, conflicts)
        self.rebalance.sync(view, errors)
        self.power.sync(view, errors)
        self.operations.sync(view, errors)
        pruned = self.calls.take(PRUNE)  # the last prune, once over: its failure reported
        if pruned is not None and outcome(pruned)[1] is not None:
            errors.append(f"events not pruned: {outcome(pruned)[1]}")
        if self.events.due():  # it lists every event: off the pass, on a lane of its own
            self.calls.submit(PRUNE[0], PRUNE, self.events.prune, view.config.call_timeout, settled=False)
        self.stats.sync(view, errors, self.launch_stats)  # last: its round runs after the pass, off it

    def _record_watchdogs(self, view: View, conflicts: list[str]) -> None:
        """Record in each host the watchdog its agent now reports (armed, changed, disarmed):
        what self-fencing counts on and a disarming agent waits for (:mod:`clustercore.watchdog`)."""
        for name in sorted(self.observer.watchdogs):
            current, report = view.hosts.get(name), view.reports.get(name)
            new = None if current is None or report is None else watchdog.recorded(current.value, report)
            try:
                if new is not None and current is not None:
                    self.writer.update_host(current, new, view.now, f"watchdog {report.watchdog:g} s reported"
                                            if report and report.watchdog else "no watchdog reported")
                self.observer.watchdogs.discard(name)
            except Conflict as exc:  # decided on this pass: recorded on the next
                conflicts.append(str(exc))

    def _follow(self, view: View) -> None:
        """Keep each Up host's heartbeat deadline (grace end) for the hosts that changed since
        the last pass, or for every host when the grace itself changed. Followers too, so a
        new leader's deadlines are warm."""
        limit = view.config.liveness.connecting_after
        changed: Iterable[str] = self.observer.take_changed()
        if view.config.liveness != self._liveness:  # a resting host may be due sooner now
            self._liveness, self.asleep = view.config.liveness, Deadlines()
        with self.observer.beats_lock:  # heartbeats taken push deadlines back meanwhile
            if limit != self.observer.grace_limit:
                self.observer.grace_limit = limit
                for name in self.deadlines:
                    if name not in view.hosts:
                        self.deadlines.cancel(name)
                changed = list(view.hosts)
            hosts, last_seen, up = view.hosts, view.last_seen, HostState.UP
            for name in changed:
                self.asleep.cancel(name)
                current = hosts.get(name)
                if current is None or current.value.state is not up:
                    self.deadlines.cancel(name)
                else:
                    self.deadlines.arm(name, heard(current.value, last_seen.get(name)) + limit)

    def _needing_look(self, view: View) -> list[str]:
        """The hosts this pass looks at: every one not Up or missing a required network or
        storage, and the Up ones whose grace ran out unheard. An Up host that keeps beating
        costs nothing here: each heartbeat taken pushes its deadline back (a stale one is
        due again next pass, as long as it stays Up)."""
        hosts, now, last_seen = view.hosts, view.now, view.last_seen
        limit = view.config.liveness.connecting_after  # what _follow armed with, this pass
        arm, up = self.deadlines.arm, HostState.UP
        with self.observer.beats_lock:
            woken, self.observer.woken = self.observer.woken, set()
            for name in woken:
                self.asleep.cancel(name)
            self.asleep.pop_due(now)
            looking = {n for n in view.unsettled if n not in self.asleep}
            looking.update(n for n in self.topology.incomplete if n in hosts)
            for name in self.deadlines.pop_due(now):
                current = hosts.get(name)
                if current is None or current.value.state is not up:
                    continue  # never so: a change that made it so disarmed it
                seen = heard(current.value, last_seen.get(name))
                arm(name, seen + limit)
                if now - seen > limit:
                    looking.add(name)
        return sorted(looking)

    def _rest(self, host: Host, view: View) -> None:
        """A Connecting host with nothing to decide is not looked at again before the least
        NonResponsive grace has passed since it went Connecting, unless it beats or changes
        first (its heartbeat or change wakes it)."""
        if host.state is HostState.CONNECTING:
            wake = host.since + view.config.liveness.non_responsive_grace
            if wake > view.now:
                self.asleep.arm(host.name, wake)

    def _look(self, current: Versioned[Host], view: View, workloads: int, events: list[Event],
              conflicts: list[str], errors: list[str]) -> bool:
        """The host's first decision, committed; True when it waits on a call."""
        name = current.value.name
        try:
            for decide in self._deciders:
                decision = decide(current, view, workloads)
                if decision is not None:
                    break
            else:
                self._rest(current.value, view)
                return False
            if not self.may_act():
                return False
            if decision.event in STAGED:
                self.commits.stage(current, decision, view.now)
                return False
            self.commits.flush(events, conflicts)  # the store takes the decisions in the order they were made
            new, event = self.commit(current, decision, view.now)
            events.append(event)
            if new.state is HostState.FENCING and current.value.state is not HostState.FENCING:
                self.fence.launch(new, view.config.fencing)
        except Pending:
            return True
        except Conflict as exc:
            conflicts.append(str(exc))
            log.warning("%s: will decide %s again with fresh data", exc, name)
        except (NotLeader, StoreError):
            raise
        except Exception as exc:  # one bad host never stops the others
            errors.append(f"host {name}: {exc}")
            log.error("host %s: %s", name, exc)
        return False

    # ------------------------------------------------------------------ running

    def run(self, interval: float = 1.0, stop: threading.Event | None = None, steps: int | None = None) -> int:
        """Step every ``interval`` seconds (of the injected clock) until ``stop`` is set or
        ``steps`` passes are done. Returns the number of passes."""
        done = 0
        while not (stop is not None and stop.is_set()) and (steps is None or done < steps):
            started = self.clock.now()
            self.step(started)
            done += 1
            self.clock.sleep(max(0.0, interval - (self.clock.now() - started)))
        return done
