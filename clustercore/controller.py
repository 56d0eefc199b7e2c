"""The reconcile loop: read the store, decide purely, act through flavors, record.

One ``step(now)`` is one pass over every host:

1. observe heartbeats: a host is *seen* at ``now`` when its ``heartbeats/NAME`` key has a
   new revision (the controller's clock, not the host's); a changed report updates the
   topology (networks and storage it reaches);
2. for each host, the first decision that applies:
   Installing → bootstrap through the flavors;
   liveness (:func:`~clustercore.lifecycle.liveness_event`: missed or resumed heartbeats);
   Initializing (with a report) → discover facts, check connectivity, then Up;
   connectivity (:func:`~clustercore.lifecycle.connectivity_event`: NonOperational and back);
   PreparingForMaintenance → launch drain moves (:class:`~clustercore.maintenance.Drainer`),
   give up after repeated failures, or Maintenance when empty;
3. each decision is committed as one transaction (host compare-and-swap + its event), then
   flavors are told. A lost compare-and-swap is reported in the step's result and the host
   is decided again on the next pass with fresh data: nothing is overwritten.

Use ``step`` from another program's loop, or ``run`` as a long-running runner.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

import attrs

from clustercore import join
from clustercore.clock import Clock
from clustercore.driver import WorkloadState
from clustercore.errors import ClusterError, Conflict, CorruptEntry, FlavorError, NotLeader
from clustercore.events import Event, EventLog
from clustercore.fencing import FencePolicy, Fencer, fence_decision
from clustercore.lifecycle import (
    HostEvent,
    LivenessPolicy,
    connectivity_event,
    liveness_event,
    transition,
)
from clustercore.maintenance import AvoidFilter, Drainer, DrainPolicy, Move, moves_to_launch, plan_drain
from clustercore.model import (
    Host,
    HostReport,
    HostState,
    NonOperationalReason,
    Placement,
    PlacementState,
    Workload,
)
from clustercore.plugins import Plugins
from clustercore.scheduling.engine import Filter, HostFilter, Scheduler
from clustercore.scheduling.snapshot import Snapshot
from clustercore.state import HEARTBEATS, HOSTS, PLACEMENTS, ClusterState, Informer, Versioned, encode
from clustercore.store.base import Check, Delete, Put, Store
from clustercore.topology import Topology

log = logging.getLogger(__name__)

S = HostState


@attrs.frozen
class StepReport:
    """What one pass did: the events it recorded, the conflicts it met, the errors it saw."""

    time: float
    hosts: int
    events: tuple[Event, ...] = ()
    conflicts: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


@attrs.frozen
class Decision:
    """A transition to commit: ``base`` is the host to transition (it may carry new facts)."""

    base: Host
    event: HostEvent
    reason: str
    non_operational: NonOperationalReason | None = None


class Controller:
    def __init__(self, store: Store, plugins: Plugins, clock: Clock, state: ClusterState | None = None,
                 events: EventLog | None = None, executor: Executor | None = None) -> None:
        self.store = store
        self.plugins = plugins
        self.clock = clock
        self.state = state or ClusterState(store)
        self.events = events or EventLog(store)
        self.topology = Topology()
        self._host_informer = Informer(store, HOSTS)
        self._beat_informer = Informer(store, HEARTBEATS)
        self._placement_informer = Informer(store, PLACEMENTS)
        self._hosts: dict[str, Versioned[Host]] = {}
        self._last_seen: dict[str, float] = {}
        self._report_bytes: dict[str, bytes] = {}
        self.reports: dict[str, HostReport] = {}
        self._lock = threading.Lock()
        self.drainer = Drainer(executor)
        self.fencer = Fencer()
        self.started = clock.now()  # no fencing in the first minutes after the manager starts
        self._skip_reason: dict[str, str] = {}
        self._ha_retry: dict[str, tuple[float, float]] = {}  # workload -> (next try, delay)
        self._failed: set[str] = set()  # placements Failed, by anyone (see _sync_failed)
        self._reboots: set[str] = set()  # hosts seen rebooting while this manager could not act
        self._in_flight_seen: dict[str, tuple[int, float]] = {}  # Starting/Migrating placement -> (rev, first seen)
        self._orphan_scan = float("-inf")
        # Whether this manager may act now (leads, lease valid; see clustercore.leadership).
        self.may_act: Callable[[], bool] = lambda: True

    # ------------------------------------------------------------------ observation

    def last_seen(self, host: str) -> float | None:
        """When this controller last saw ``host``'s heartbeat change."""
        return self._last_seen.get(host)

    def _sync_hosts(self, errors: list[str]) -> None:
        changed, deleted = self._host_informer.sync()
        for name in deleted:
            self._hosts.pop(name, None)
            self.topology.remove_host(name)
        for name in changed:
            kv = self._host_informer.items[name]
            try:
                current = self.state.decode_host(kv)
            except CorruptEntry as exc:
                errors.append(str(exc))
                log.error("%s (skipped)", exc)
                self._hosts.pop(name, None)
                continue
            self._hosts[name] = current
            self.topology.add_host(current.value)

    def _observe(self, now: float, errors: list[str]) -> None:
        """Heartbeats that changed since the last pass: those hosts are seen ``now``."""
        changed, _ = self._beat_informer.sync()
        items, report_bytes = self._beat_informer.items, self._report_bytes
        for name in changed:
            self._last_seen[name] = now
            kv = items[name]
            if report_bytes.get(name) == kv.value:
                continue
            try:
                report = self.state.report(kv)
            except CorruptEntry as exc:
                errors.append(str(exc))
                log.error("%s", exc)
                continue
            report_bytes[name] = kv.value
            old = self.reports.get(name)
            self.reports[name] = report
            if old is not None and old.boot_id and report.boot_id != old.boot_id:
                self._reboots.add(name)
            self.topology.set_reachable(name, report.networks, report.storage)

    def take_over(self, now: float) -> None:
        """This controller's manager just became the leader: what it remembers of the cluster
        beyond the store may be stale. Grace periods start now (it saw no heartbeat as
        leader yet); Failed and in-flight placements are scanned afresh."""
        self.started = now
        self._in_flight_seen.clear()
        self._orphan_scan = float("-inf")
        for host, episode in list(self.fencer.episodes.items()):
            if episode.job is None:
                self.fencer.forget(host)

    def _sync_failed(self) -> None:
        """Placements that became Failed, whoever wrote them (this manager, an operator's
        confirm_down, another manager), from the placements' watch. Followers sync too, so
        the watch never piles up and a new leader knows them at once. This manager's own
        writes are also added where it makes them, for the same pass."""
        changed, deleted = self._placement_informer.sync()
        items = self._placement_informer.items
        for name in changed:
            if b'"state":"Failed"' in items[name].value:  # cheap; the state is read again before acting
                self._failed.add(name)
        self._failed -= deleted

    def _rebooted(self, host: str, now: float, errors: list[str]) -> None:
        """The host booted since its last heartbeat: what ran there died. Its placements
        become Failed (HA ones restart, see :meth:`_restart_failed`)."""
        for name, p in self.state.placements().items():
            if p.value.host != host or p.value.state in (PlacementState.STOPPED, PlacementState.FAILED):
                continue
            failed = attrs.evolve(p.value, state=PlacementState.FAILED, since=now, target=None,
                                  reason=f"{host} rebooted (new boot id)")
            try:
                self.store.txn([Check(PLACEMENTS + name, p.revision)], [Put(PLACEMENTS + name, encode(failed)),
                               self.events.put_op(Event(now, f"workload/{name}", "host-rebooted",
                                                        f"{host} rebooted: {name} died with it", host, ""))])
            except ClusterError as exc:
                errors.append(f"{name} on rebooted {host}: {exc}")
                continue
            self._failed.add(name)

    # ------------------------------------------------------------------ committing

    def commit(self, current: Versioned[Host], decision: Decision, now: float,
               extra: Sequence[Put | Delete] = (), delete: bool = False) -> tuple[Host, Event]:
        """Store ``decision`` (compare-and-swap on ``current``) with its event, then tell the
        flavors. Raises Conflict when the host changed since it was read."""
        old = current.value
        new = transition(decision.base, decision.event, now, decision.reason, decision.non_operational)
        event = Event(now, f"host/{old.name}", decision.event.value, decision.reason, str(old.state), str(new.state))
        key = HOSTS + old.name
        write: Put | Delete = Delete(key) if delete else Put(key, encode(new))
        checks = [Check(key, current.revision)]
        dead: list[str] = []
        if new.state is S.DOWN and old.state is not S.DOWN:
            # Powered off for sure: whatever ran there died, in the same transaction, so a
            # host that comes back at once cannot make its dead workloads look alive.
            for name, p in self.state.placements().items():
                if p.value.host == old.name and p.value.state is not PlacementState.STOPPED:
                    # A move's target is kept: the move may have finished just before (see _restart_failed).
                    target = p.value.target if p.value.state is PlacementState.MIGRATING else None
                    failed = attrs.evolve(p.value, state=PlacementState.FAILED, since=now, target=target,
                                          reason=f"{old.name} is down: {decision.reason}")
                    checks.append(Check(PLACEMENTS + name, p.revision))
                    extra = [*extra, Put(PLACEMENTS + name, encode(failed))]
                    dead.append(name)
        self.store.txn(checks, [write, self.events.put_op(event), *extra])
        self._failed.update(dead)
        log.info("%s", event)
        for failure in self.plugins.host_transition(old, new, decision.event.value, decision.reason):
            self.events.record(Event(now, f"host/{old.name}", "flavor-error", str(failure)))
        return new, event

    # ------------------------------------------------------------------ deciding

    def decide(self, host: Host, now: float, policy: LivenessPolicy, workloads: int) -> Decision | None:
        """The next transition for ``host``, or None. Only Installing and Initializing call
        flavors (bootstrap, discovery); everything else is pure."""
        state = host.state
        if state is S.INSTALLING:
            event, reason = join.bootstrap(host, self.plugins)
            return Decision(host, event, reason)
        live = liveness_event(host, self._last_seen.get(host.name), now, policy, workloads)
        if live is not None:
            return Decision(host, live[0], live[1])
        if state is S.INITIALIZING:
            return self._initialize(host) if host.name in self.reports else None
        missing = self.topology.missing(host.name)
        conn = connectivity_event(host, *missing)
        if conn is not None:
            return Decision(host, *conn)
        return None

    def _initialize(self, host: Host) -> Decision:
        try:
            updated = join.with_descriptions(host, self.plugins.describe_host(host))
        except FlavorError as exc:
            return Decision(host, HostEvent.NOT_OPERATIONAL, str(exc), NonOperationalReason.FLAVOR_CHECK_FAILED)
        conn = connectivity_event(updated, *self.topology.missing(host.name))
        if conn is not None:
            return Decision(updated, *conn)
        return Decision(updated, HostEvent.INITIALIZED, "facts discovered, required networks and storage reached")

    # ------------------------------------------------------------------ the pass

    def step(self, now: float | None = None) -> StepReport:
        """One reconcile pass at ``now`` (the clock's time by default)."""
        with self._lock:
            return self._step(self.clock.now() if now is None else now)

    def _step(self, now: float) -> StepReport:
        events: list[Event] = []
        conflicts: list[str] = []
        errors: list[str] = []
        config = self.state.config().value
        self.topology.require(config.required_networks, config.required_storage)
        self._sync_hosts(errors)
        self._observe(now, errors)  # followers too: a warm cache and heartbeats timed when taking over
        self._sync_failed()
        if not self.may_act():
            return StepReport(now, len(self._hosts), (), (), ("not the leader: observing only",))
        while self._reboots:
            self._rebooted(self._reboots.pop(), now, errors)
        hosts = self._hosts
        counts: dict[str, int] | None = None
        up = S.UP
        connecting_after = config.liveness.connecting_after
        incomplete = self.topology.incomplete
        last_seen = self._last_seen
        for name, current in hosts.items():
            host = current.value
            if host.state is up and name not in incomplete:
                # The common case, kept cheap: an Up host, heard from recently, missing nothing.
                seen = last_seen.get(name)
                since = host.since
                if now - (since if seen is None or seen < since else seen) <= connecting_after:
                    continue
            workloads = 0
            if host.state is S.CONNECTING:
                if counts is None:
                    counts = self._counts()
                workloads = counts.get(name, 0)
            try:
                decision = self.decide(host, now, config.liveness, workloads)
                state = host.state
                if decision is None and state is S.PREPARING_FOR_MAINTENANCE:
                    decision = self._drain(current, now, events, errors)
                if decision is None and state in (S.NON_RESPONSIVE, S.FENCING):
                    decision = self._fence(host, now, config.fencing, errors)
                elif name in self.fencer.episodes and state not in (S.NON_RESPONSIVE, S.FENCING):
                    self.fencer.forget(name)
                    self._skip_reason.pop(name, None)
                if decision is None:
                    continue
                events.append(self.commit(current, decision, now)[1])
                if decision.event is HostEvent.FENCE and self.may_act():
                    episode = self.fencer.episode(name)
                    episode.job = self.drainer.executor.submit(self.fencer.run, host, config.fencing)
            except Conflict as exc:
                conflicts.append(str(exc))
                log.warning("%s: will decide %s again with fresh data", exc, name)
            except NotLeader as exc:  # deposed mid-pass: nothing more may be written
                errors.append(str(exc))
                log.warning("pass stopped: %s", exc)
                return StepReport(now, len(hosts), tuple(events), tuple(conflicts), tuple(errors))
            except ClusterError as exc:
                errors.append(str(exc))
                log.error("host %s: %s", name, exc)
        if now - self._orphan_scan >= config.orphan_after / 2:
            self._orphan_scan = now
            self._settle_orphans(now, config.orphan_after, events, errors)
        self._restart_failed(now, errors)
        self.events.maybe_prune()
        return StepReport(now, len(hosts), tuple(events), tuple(conflicts), tuple(errors))

    def _counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self.state.placements().values():
            counts[p.value.host] = counts.get(p.value.host, 0) + 1
        return counts

    # ------------------------------------------------------------------ maintenance

    def _drain(self, current: Versioned[Host], now: float, events: list[Event], errors: list[str]) -> Decision | None:
        """One pass of a drain: collect ended moves, give up after too many failures of one
        workload, finish when nothing is left, else launch moves up to the parallel limit."""
        host = current.value
        config = self.state.config().value
        policy = DrainPolicy(config.drain_parallel, config.drain_attempts)
        drainer = self.drainer
        for outcome in drainer.collect(host.name):
            if outcome.error is not None:
                errors.append(f"drain of {host.name}: {outcome.move.workload} -> {outcome.move.target}: "
                              f"{outcome.error}")
        attempts = drainer.attempts.get(host.name, {})
        for workload, count in attempts.items():
            if count >= policy.max_attempts:
                return self._give_up(host, workload, count, "")
        placements = self.state.placements()
        mine = [p for p in placements.values() if p.value.host == host.name]
        in_flight = drainer.in_flight(host.name)
        if not mine and not in_flight:
            try:
                self.plugins.prepare_maintenance(host)
            except FlavorError as exc:
                errors.append(str(exc))
                self.events.record(Event(now, f"host/{host.name}", "prepare-maintenance-failed", str(exc)))
                return None
            drainer.forget(host.name)
            return Decision(host, HostEvent.DRAINED, "no workloads left")
        # A move or start some other manager began (it died mid-way) counts as in flight
        # until :meth:`_settle_orphans` has settled it.
        in_flight |= {p.value.workload for p in mine
                      if p.value.state in (PlacementState.STARTING, PlacementState.MIGRATING)}
        if len(in_flight) >= policy.parallel:
            return None
        avoid = drainer.avoid.get(host.name, {})
        plan = plan_drain(host.name, self.scheduler(extra_filters=[AvoidFilter(dict(avoid))] if avoid else []))
        for stuck in plan.stuck:
            if attempts.get(stuck.workload) and stuck.workload not in in_flight:
                # It failed to move and no other host is left to try: retrying cannot help.
                return self._give_up(host, stuck.workload, attempts[stuck.workload], "; no other host can take it")
            errors.append(str(stuck))
        for move in moves_to_launch(plan, in_flight, policy):
            drainer.launch(move, self._run_move)
        # Inline moves are already done: let this pass see them (and finish the drain).
        return None

    # ------------------------------------------------------------------ fencing and HA

    def _fence(self, host: Host, now: float, policy: FencePolicy, errors: list[str]) -> Decision | None:
        """A NonResponsive host: soft fence, then hard fence when the policy allows (see
        :mod:`clustercore.fencing`); a Fencing host: the job's outcome."""
        episode = self.fencer.episode(host.name)
        if host.state is S.FENCING:
            job = episode.job
            if job is None:  # another manager began and died: finish it (no power-off if already off)
                if self.may_act():
                    episode.job = self.drainer.executor.submit(self.fencer.resume, host, policy)
                    self.events.record(Event(now, f"host/{host.name}", "fence-resumed",
                                             "fencing begun by a manager that is gone: checking power first"))
                return None
            if not job.done():
                return None
            episode.job = None
            try:
                attempts = job.result()
            except Exception as exc:
                episode.failed_at, episode.failures = now, episode.failures + 1
                errors.append(str(exc))
                return Decision(host, HostEvent.FENCE_FAILED, str(exc))
            self.fencer.forget(host.name)
            return Decision(host, HostEvent.FENCED, "powered off, confirmed by status: " + "; ".join(attempts))
        hosts = [v.value for v in self._hosts.values()]
        decision = fence_decision(host, hosts, now, self.started, policy, self.plugins.host_alive(host),
                                  episode.failed_at)
        if not decision.fence:
            kind = re.sub(r"\d+", "#", decision.reason)  # one event per kind of reason, not per pass
            if self._skip_reason.get(host.name) != kind:
                self._skip_reason[host.name] = kind
                self.events.record(Event(now, f"host/{host.name}", "fence-skipped", decision.reason))
            return None
        if policy.soft_first and episode.soft_at is None:
            episode.soft_at = now
            tried = self.plugins.soft_fence(host)
            episode.soft_tried = bool(tried)
            if tried:
                self.events.record(Event(now, f"host/{host.name}", "soft-fence",
                                         f"tried by {', '.join(tried)}; waiting {policy.soft_wait:.0f} s"))
                return None
        if episode.soft_tried and episode.soft_at is not None and now - episode.soft_at < policy.soft_wait:
            return None
        return Decision(host, HostEvent.FENCE, decision.reason)

    def _restart_failed(self, now: float, errors: list[str]) -> None:
        """Workloads whose host went Down (fenced, or confirmed by an operator): the HA ones
        start elsewhere, highest priority first, retried with backoff while capacity is
        short; the others are lost with their host. Whatever the host does meanwhile."""
        if not self._failed:
            return
        workloads = {n: v.value for n, v in self.state.workloads().items()}
        failed = [(n, self.state.placement(n)) for n in self._failed]
        order = sorted(((n, p) for n, p in failed if p is not None and p.value.state is PlacementState.FAILED),
                       key=lambda np: -(workloads[np[0]].priority if np[0] in workloads else 0))
        self._failed = {n for n, _ in order}
        for name, current in order:
            dead = current.value.host
            workload = workloads.get(name)
            key = PLACEMENTS + name
            if workload is not None and current.value.target is not None:
                # It was moving when its host went down: it may run on the target already.
                try:
                    cleared = self._finished_on_target(current, workload, now)
                except Exception as exc:
                    errors.append(f"{name}: is it on {current.value.target}? {exc}")
                    continue
                if cleared is None:
                    self._failed.discard(name)
                    continue
                current = cleared
            if workload is None or not workload.ha:
                self.store.txn([Check(key, current.revision)], [Delete(key), self.events.put_op(
                    Event(now, f"workload/{name}", "lost", f"{dead} is down and {name} is not HA", dead, ""))])
                self._failed.discard(name)
                continue
            retry = self._ha_retry.get(name)
            if retry is not None and now < retry[0]:
                continue
            if not self.may_act():
                return
            target = ""
            try:
                target = self.scheduler().select(workload)
                # Starting is in the store before the driver acts (a deposed leader's write fails here).
                starting = Placement(name, target, PlacementState.STARTING, now, None, f"restarting: {dead} is down")
                revision = self.store.txn([Check(key, current.revision)], [Put(key, encode(starting))])
                try:
                    self.plugins.driver(workload.flavor).start(workload, self.state.host(target).value)
                except Exception:
                    self.store.txn([Check(key, revision)], [Put(key, encode(current.value))])  # Failed again
                    raise
            except Exception as exc:
                delay = min(2 * retry[1], 300.0) if retry else 10.0
                self._ha_retry[name] = (now + delay, delay)
                where = f" on {target}" if target else ""
                detail = str(exc) if isinstance(exc, ClusterError) else f"{type(exc).__name__}: {exc}"
                errors.append(f"HA restart of {name}{where}: {detail} (retry in {delay:.0f} s)")
                continue
            self._ha_retry.pop(name, None)
            self._failed.discard(name)
            moved = Placement(name, target, PlacementState.RUNNING, now, None, f"restarted: {dead} is down")
            self.store.txn([Check(key, revision)], [Put(key, encode(moved)), self.events.put_op(
                Event(now, f"workload/{name}", "restarted", f"{dead} is down", dead, target))])

    def _settle_orphans(self, now: float, after: float, events: list[Event], errors: list[str]) -> None:
        """Placements left Starting or Migrating by a manager that died mid-way: once one
        has sat unchanged for ``after`` seconds and this manager is not running it, ask the
        hosts where the workload runs (a driver's ``settle`` first ends a move still in
        progress) and record that: Running where it runs, Failed when nowhere (HA ones then
        restart), untouched when the hosts do not answer or it seems to run on both."""
        launched = self.drainer.moving()
        seen = self._in_flight_seen
        current_names: set[str] = set()
        for name, current in self.state.placements().items():
            p = current.value
            if p.state not in (PlacementState.STARTING, PlacementState.MIGRATING) or name in launched:
                continue
            current_names.add(name)
            first = seen.get(name)
            if first is None or first[0] != current.revision:
                seen[name] = (current.revision, now)
                continue
            if now - first[1] < after or not self.may_act():
                continue
            try:
                event = self._settle(current, now)
            except Exception as exc:
                detail = str(exc) if isinstance(exc, ClusterError) else f"{type(exc).__name__}: {exc}"
                errors.append(f"settling {name} ({p.state}): {detail}")
                continue
            if event is not None:
                events.append(event)
        for name in set(seen) - current_names:
            del seen[name]

    def _settle(self, current: Versioned[Placement], now: float) -> Event | None:
        p = current.value
        name = p.workload
        workload = self.state.workload(name).value
        driver = self.plugins.driver(workload.flavor)
        source = self.state.host(p.host).value
        key = PLACEMENTS + name
        after = "after the manager that began it was lost"
        if p.state is PlacementState.MIGRATING and p.target is not None:
            target = self.state.host(p.target).value
            settle = getattr(driver, "settle", None)
            if settle is not None:
                settle(workload, source, target)
            # A host that is Down (fenced, or confirmed by an operator) runs nothing: not asked.
            on_source = source.state is not S.DOWN and driver.inspect(workload, source) is WorkloadState.RUNNING
            on_target = target.state is not S.DOWN and driver.inspect(workload, target) is WorkloadState.RUNNING
            if on_source and on_target:
                raise ClusterError(f"{name} seems to run on both {source.name} and {target.name}; asking again later")
            if on_target:
                new, kind, why = Placement(name, target.name, PlacementState.RUNNING, now, None,
                                           f"moved from {source.name}"), "migrated", f"finished {after}"
            elif on_source:
                new, kind, why = attrs.evolve(p, state=PlacementState.RUNNING, target=None, since=now,
                                              reason=f"move rolled back {after}"), "migration-failed", \
                                 f"rolled back {after}"
            else:
                new, kind, why = attrs.evolve(p, state=PlacementState.FAILED, target=None, since=now,
                                              reason=f"runs nowhere {after}"), "failed", f"runs nowhere {after}"
            event = Event(now, f"workload/{name}", kind, why, source.name, target.name)
        else:
            if driver.inspect(workload, source) is WorkloadState.RUNNING:
                new, kind, why = attrs.evolve(p, state=PlacementState.RUNNING, since=now,
                                              reason=f"started {after}"), "started", f"runs {after}"
            else:
                new, kind, why = attrs.evolve(p, state=PlacementState.FAILED, since=now,
                                              reason=f"start abandoned {after}"), "failed", f"did not start {after}"
            event = Event(now, f"workload/{name}", kind, why, "", source.name)
        self.store.txn([Check(key, current.revision)], [Put(key, encode(new)), self.events.put_op(event)])
        if new.state is PlacementState.FAILED:
            self._failed.add(name)
        return event

    def _finished_on_target(self, current: Versioned[Placement], workload: Workload,
                            now: float) -> Versioned[Placement] | None:
        """A Failed placement whose host went down mid-move: when the move's target runs it,
        record it Running there (None); else clear the target and return the placement."""
        p = current.value
        assert p.target is not None
        key = PLACEMENTS + p.workload
        target = self.state.host(p.target).value
        if target.state is not S.DOWN and \
                self.plugins.driver(workload.flavor).inspect(workload, target) is WorkloadState.RUNNING:
            moved = Placement(p.workload, target.name, PlacementState.RUNNING, now, None, f"moved from {p.host}")
            self.store.txn([Check(key, current.revision)], [Put(key, encode(moved)), self.events.put_op(
                Event(now, f"workload/{p.workload}", "migrated", f"the move had finished when {p.host} went down",
                      p.host, target.name))])
            return None
        cleared = attrs.evolve(p, target=None)
        return Versioned(cleared, self.store.txn([Check(key, current.revision)], [Put(key, encode(cleared))]))

    def _give_up(self, host: Host, workload: str, count: int, why: str) -> Decision:
        tried = ", ".join(sorted(self.drainer.avoid.get(host.name, {}).get(workload, ())))
        self.drainer.forget(host.name)
        return Decision(host, HostEvent.CANCEL_MAINTENANCE,
                        f"drain gave up: {workload} failed to move {count} times (tried {tried}){why}")

    def _run_move(self, move: Move) -> Placement:
        current = self.state.placement(move.workload)
        if current is None or current.value.host != move.source:
            raise ClusterError(f"{move.workload} is no longer on {move.source}")
        workload = self.state.workload(move.workload).value
        return self.move(current, workload, move.target, self.clock.now(), reason=f"drain of {move.source}")

    def scheduler(self, seed: int = 0, extra_filters: Sequence[Filter | HostFilter] = ()) -> Scheduler:
        """A scheduler over the store's current hosts, workloads and placements, with the
        cluster's policy, overcommit and the flavors' filters and weighers."""
        config = self.state.config().value
        snap = Snapshot.build(
            (v.value for v in self.state.hosts().values()),
            {n: v.value for n, v in self.state.workloads().items()},
            (v.value for v in self.state.placements().values()),
            self.topology,
        )
        return Scheduler(snap, self.plugins.policy(config.policy), [*self.plugins.filters, *extra_filters],
                         self.plugins.weighers, config.overcommit, config.ha_headroom, seed)

    def move(self, current: Versioned[Placement], workload: Workload, target: str, now: float,
             reason: str = "") -> Placement:
        """Move a placed workload to ``target`` through its flavor's driver. The store says
        MIGRATING while it moves and names the new host only after the driver succeeds; on
        failure the placement is back on its source, RUNNING."""
        placement = current.value
        key = PLACEMENTS + placement.workload
        source = self.state.host(placement.host).value
        dest = self.state.host(target).value
        driver = self.plugins.driver(workload.flavor)
        moving = attrs.evolve(placement, state=PlacementState.MIGRATING, target=target, since=now)
        rev = self.store.put(key, encode(moving), expect=current.revision)
        try:
            if driver.live_migration:
                driver.migrate(workload, source, dest)
            else:
                driver.stop(workload, source)
                driver.start(workload, dest)
        except Exception as exc:
            back = attrs.evolve(placement, state=PlacementState.RUNNING, target=None, reason=f"move failed: {exc}")
            self.store.txn([Check(key, rev)], [Put(key, encode(back)), self.events.put_op(
                Event(now, f"workload/{workload.name}", "migration-failed", str(exc), source.name, target))])
            raise FlavorError(workload.flavor, "migrate", f"{type(exc).__name__}: {exc}") from exc
        moved = Placement(workload.name, target, PlacementState.RUNNING, now, None, f"moved from {source.name}")
        self.store.txn([Check(key, rev)], [Put(key, encode(moved)), self.events.put_op(
            Event(now, f"workload/{workload.name}", "migrated", reason, source.name, target))])
        return moved

    # ------------------------------------------------------------------ running

    def run(self, interval: float = 1.0, stop: threading.Event | None = None, steps: int | None = None) -> int:
        """Step every ``interval`` seconds (of the injected clock) until ``stop`` is set or
        ``steps`` passes are done. Returns the number of passes."""
        done = 0
        while not (stop is not None and stop.is_set()) and (steps is None or done < steps):
            started = self.clock.now()
            try:
                self.step(started)
            except Exception:  # a runner must survive a bad pass; the next one retries
                log.exception("reconcile pass failed")
            done += 1
            self.clock.sleep(max(0.0, interval - (self.clock.now() - started)))
        return done
