"""Settle: placements a manager left Starting or Migrating when it died mid-way.

Once such a placement has sat unchanged for the cluster's ``orphan_after`` seconds (a
deadline armed when the observer sees it enter or change in flight) and this manager is
not running it, the hosts are asked (off the pass, on the source host's
call lane; a driver's ``settle`` first ends a move still in progress) where the workload
runs, and that is recorded: Running where it runs, Failed when nowhere (HA ones then
restart), untouched when the hosts do not answer or it seems to run on both.
"""

from __future__ import annotations

from collections.abc import Callable

from clustercore.deadlines import Deadlines
from clustercore.driver import SettlingDriver, WorkloadDriver, WorkloadState
from clustercore.errors import ClusterError
from clustercore.events import Event
from clustercore.model import Host, HostState, Placement, PlacementState, Workload
from clustercore.placements import PlacementEvent
from clustercore.plugins import Plugins
from clustercore.reconcile.calls import HostCalls, outcome
from clustercore.reconcile.observe import Observer, View
from clustercore.reconcile.writer import Writer
from clustercore.state import ClusterState, Versioned

E = PlacementEvent
AFTER = "after the manager that began it was lost"


def where_runs(driver: WorkloadDriver, workload: Workload, source: Host, target: Host | None) -> tuple[bool, bool]:
    """(on source, on target) by asking the hosts; a host that is Down runs nothing and is not asked."""
    if target is not None and isinstance(driver, SettlingDriver):
        driver.settle(workload, source, target)
    on_source = source.state is not HostState.DOWN and driver.inspect(workload, source) is WorkloadState.RUNNING
    on_target = target is not None and target.state is not HostState.DOWN and \
        driver.inspect(workload, target) is WorkloadState.RUNNING
    return on_source, on_target


def settled(p: Placement, on_source: bool, on_target: bool) -> tuple[PlacementEvent, str, str]:
    """What the hosts' answers mean for placement ``p``: (event, event kind, why). Pure."""
    if p.state is PlacementState.MIGRATING and p.target is not None:
        if on_source and on_target:
            raise ClusterError(f"{p.workload} seems to run on both {p.host} and {p.target}; asking again later")
        if on_target:
            return E.MIGRATED, "migrated", f"finished {AFTER}"
        if on_source:
            return E.MIGRATION_FAILED, "migration-failed", f"rolled back {AFTER}"
        return E.FAIL, "failed", f"runs nowhere {AFTER}"
    if on_source:
        return E.STARTED, "started", f"runs {AFTER}"
    return E.FAIL, "failed", f"did not start {AFTER}"


_REASONS = {E.MIGRATED: "moved from {host}", E.MIGRATION_FAILED: f"move rolled back {AFTER}",
            E.FAIL: "runs nowhere " + AFTER, E.STARTED: "started " + AFTER}


class Settle:
    def __init__(self, state: ClusterState, plugins: Plugins, calls: HostCalls, writer: Writer,
                 observer: Observer, launched: Callable[[], set[str]], may_act: Callable[[], bool]) -> None:
        self.state = state
        self.plugins = plugins
        self.calls = calls
        self.writer = writer
        self.observer = observer
        self.launched = launched
        self.may_act = may_act
        #: In-flight placements by name, due once unchanged for ``orphan_after`` (armed as
        #: the observer sees them enter or change in flight), so a pass looks only at those due.
        self.due: Deadlines[str] = Deadlines()
        self._asking: set[str] = set()
        self._after: float | None = None

    def take_over(self) -> None:
        """A new leader gives every placement in flight the whole ``orphan_after`` from now."""
        self._after = None

    def sync(self, view: View, events: list[Event], errors: list[str]) -> None:
        after, now, flying = view.config.orphan_after, view.now, self.observer.in_flight
        changed, self.observer.flights = self.observer.flights, set()
        if after != self._after:  # first pass, a new leader or a new setting: every one afresh
            self._after = after
            self.due = Deadlines()
            changed = set(flying)
        for name in changed:
            if name in flying:
                self.due.arm(name, now + after)
            else:
                self.due.cancel(name)
        due = self.due.pop_due(now)
        names = list(dict.fromkeys([*due, *(n for n in sorted(self._asking) if n not in self.due)]))  # each once
        launched = self.launched() if names else set()
        for name in names:
            current = flying.get(name)
            if current is None:
                self._asking.discard(name)
                continue
            if name in launched or not self.may_act():  # this manager runs it, or may not act
                self.due.arm(name, now + after)
                continue
            try:
                event = self._settle(current, view)
            except ClusterError as exc:
                errors.append(f"settling {name} ({current.value.state}): {exc}")
                self.due.arm(name, now + after / 2)  # asked again later
                continue
            if event is not None:
                events.append(event)

    def _settle(self, current: Versioned[Placement], view: View) -> Event | None:
        p = current.value
        name = p.workload
        key = ("settle", name, current.revision)
        call = self.calls.get(key)
        if call is None:
            workload = self.state.workload(name).value
            source = self.state.host(p.host).value
            target = self.state.host(p.target).value if p.state is PlacementState.MIGRATING and p.target else None
            if self.calls.hung(source.name) or (target is not None and self.calls.hung(target.name)):
                raise ClusterError(f"{source.name} or {p.target} does not answer; asking again later")
            driver = self.plugins.driver(workload.flavor)
            call = self.calls.submit(source.name, key, lambda: where_runs(driver, workload, source, target),
                                     view.config.call_timeout)
            self._asking.add(name)
        if call.overdue():
            self.calls.forget(key)
            self._asking.discard(name)
            raise ClusterError(f"the hosts did not answer within {view.config.call_timeout:.0f} s")
        finished = self.calls.take(key)
        if finished is None:
            return None
        self._asking.discard(name)
        answer, error = outcome(finished)
        if error is not None:
            raise ClusterError(f"{type(error).__name__}: {error}")
        event, kind, why = settled(p, *answer)
        reason = _REASONS[event].format(host=p.host)
        recorded = Event(view.now, f"workload/{name}", kind, why, p.host if p.target else "", p.target or p.host)
        new = self.writer.place(current, event, view.now, reason, recorded)
        if new is not None and new.value.state is PlacementState.FAILED:
            self.observer.failed.add(name)
        return recorded
