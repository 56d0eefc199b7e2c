"""Recovery: what died with a host comes back elsewhere (HA restart), or is lost.

A placement is Failed when its host went Down (fenced, or confirmed by an operator), was
seen rebooting, or a settled move found it nowhere (:func:`clustercore.placements.fail_host`).
Each pass, highest priority first:

* a Failed placement that was moving keeps its move's target: the target is asked first
  (off the pass); when it runs the workload, the placement is Running there;
* a workload that is not HA is lost with its host (the placement is deleted, ``lost``);
* an HA one is restarted where the scheduler says: Starting is in the store before the
  driver acts (a deposed leader's write fails there), the start runs on the target's call
  lane; Running once it returns, Failed again with a doubling backoff (10 s to 300 s) if it
  fails (a deadline: a pass reads only the placements and workloads whose try is due). A
  start that outlives its deadline is left Starting: the settle reconciler asks the host
  later, so nothing is started twice;
* an HA workload with a volume on a host-local storage domain is not restarted elsewhere
  (its data is on the dead host): it stays Failed, reported once (``ha-blocked``), for an
  operator to decide (:func:`clustercore.storage.ha_blocker`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs

from clustercore.deadlines import Deadlines
from clustercore.driver import WorkloadState
from clustercore.errors import ClusterError, UnknownWorkload
from clustercore.events import Event
from clustercore.model import Placement, PlacementState, Workload
from clustercore.placements import PlacementEvent
from clustercore.plugins import Plugins
from clustercore.reconcile.calls import HostCalls, outcome
from clustercore.reconcile.observe import Observer, View
from clustercore.reconcile.writer import Writer
from clustercore.scheduling.engine import Scheduler
from clustercore.state import ClusterState, Versioned
from clustercore.storage import ha_blocker

log = logging.getLogger(__name__)
E = PlacementEvent


@attrs.frozen
class Restart:
    """An HA restart under way: the Starting placement's revision, where, and from where."""

    revision: int
    target: str
    dead: str


class Recovery:
    def __init__(self, state: ClusterState, plugins: Plugins, calls: HostCalls, writer: Writer,
                 observer: Observer, scheduler: Callable[[], Scheduler], may_act: Callable[[], bool]) -> None:
        self.state = state
        self.plugins = plugins
        self.calls = calls
        self.writer = writer
        self.observer = observer
        self.scheduler = scheduler
        self.may_act = may_act
        self.retry: dict[str, tuple[float, float]] = {}  # workload -> (next try, delay)
        self.waiting: Deadlines[str] = Deadlines()  # Failed HA workloads in their backoff, until their next try
        self.restarting: dict[str, Restart] = {}
        self.blocked: set[str] = set()  # HA workloads that cannot restart elsewhere (local volumes), reported

    def rebooted(self, view: View, errors: list[str]) -> None:
        """Hosts seen with a new boot id: a heartbeat alone is not proof (a second agent
        writing for the same host says the same), so the host's own drivers are asked
        (off the pass) what still runs there. What runs is kept, with a
        ``reboot-unconfirmed`` event; the rest fails (HA ones restart). No answer: asked
        again next pass, nothing failed meanwhile (a host really gone stops beating and is
        fenced)."""
        for host in list(self.observer.reboots):
            try:
                self._confirm_reboot(host, view, errors)
            except ClusterError as exc:
                errors.append(f"reboot of {host}: {exc}")

    def _confirm_reboot(self, name: str, view: View, errors: list[str]) -> None:
        key = ("reboot", name)
        call = self.calls.get(key)
        if call is None:
            placed = {p.value.workload: p for p in self.state.placements().values()
                      if p.value.host == name and p.value.state is not PlacementState.FAILED}
            if not placed:
                self.observer.reboots.discard(name)
                return
            host = self.state.host(name).value
            workloads = {n: v.value for n, v in self.state.workloads().items()}
            plugins = self.plugins

            def ask() -> dict[str, tuple[int, WorkloadState]]:
                """What the host runs of each placement (with the revision asked about)."""
                return {w: (p.revision, plugins.driver(workloads[w].flavor).inspect(workloads[w], host)
                            if w in workloads else WorkloadState.ABSENT) for w, p in placed.items()}

            call = self.calls.submit(name, key, ask, view.config.call_timeout)
        if call.overdue():
            self.calls.forget(key)
            errors.append(f"{name} reported a new boot id; it did not say what runs there within "
                          f"{view.config.call_timeout:.0f} s: asking again")
            return
        finished = self.calls.take(key)
        if finished is None:
            return
        answer, error = outcome(finished)
        if error is not None:
            errors.append(f"{name} reported a new boot id; asking what runs there failed ({error}): asking again")
            return
        self.observer.reboots.discard(name)
        dead = {w: revision for w, (revision, state) in answer.items() if state is not WorkloadState.RUNNING}
        failed, problems = self.writer.host_rebooted(name, view.now, dead)
        self.observer.failed.update(failed)
        errors.extend(problems)
        for workload in sorted(set(answer) - set(dead)):
            self.writer.record(Event(view.now, f"workload/{workload}", "reboot-unconfirmed",
                                     f"{name} reported a new boot id but still runs {workload}: not restarted",
                                     name, name))

    def sync(self, view: View, errors: list[str]) -> None:
        now = view.now
        for name in list(self.restarting):
            self._collect(name, now, view.config.call_timeout, errors)
        failed = self.observer.failed
        if not failed:
            return
        self.waiting.pop_due(now)  # their backoff is over: tried again now
        ready = [n for n in failed if n not in self.waiting]
        if not ready:
            return
        found = [(n, p) for n in ready
                 if (p := self.state.placement(n)) is not None and p.value.state is PlacementState.FAILED]
        failed.difference_update(set(ready) - {n for n, _ in found})
        workloads = {n: self._workload(n) for n, _ in found}
        order = sorted(found, key=lambda np: -(w.priority if (w := workloads[np[0]]) is not None else 0))
        for name, current in order:
            if not self.may_act():
                return
            try:
                self._recover(current, workloads[name], view, errors)
            except ClusterError as exc:
                errors.append(f"recovery of {name}: {exc}")

    def _workload(self, name: str) -> Workload | None:
        try:
            return self.state.workload(name).value
        except UnknownWorkload:
            return None

    def _recover(self, current: Versioned[Placement], workload: Workload | None, view: View,
                 errors: list[str]) -> None:
        now, p = view.now, current.value
        name, dead = p.workload, p.host
        if workload is not None and p.target is not None:
            cleared = self._moved_meanwhile(current, workload, view)
            if cleared is None:
                return
            current = cleared
        if workload is None or not workload.ha:
            self.writer.place(current, E.LOSE, now, recorded=Event(
                now, f"workload/{name}", "lost", f"{dead} is down and {name} is not HA", dead, ""))
            self.observer.failed.discard(name)
            return
        blocker = ha_blocker((v.value for n, v in self.state.volumes().items() if n in workload.volumes),
                             {n: v.value for n, v in self.state.storage_domains().items()})
        if blocker is not None:
            if name not in self.blocked:  # reported once; it stays Failed for an operator's decision
                self.blocked.add(name)
                self.writer.record(Event(now, f"workload/{name}", "ha-blocked", blocker, dead, ""))
            return
        retry = self.retry.get(name)
        if retry is not None and now < retry[0]:
            return
        try:
            target = self.scheduler().select(workload)
        except ClusterError as exc:
            self._backoff(name, now, f"HA restart of {name}: {exc}", errors)
            return
        # Starting is in the store before the driver acts (a deposed leader's write fails here).
        starting = self.writer.place(current, E.RESTART, now, f"restarting: {dead} is down", host=target)
        assert starting is not None
        self.observer.failed.discard(name)
        host = self.state.host(target).value
        driver = self.plugins.driver(workload.flavor)
        self.restarting[name] = Restart(starting.revision, target, dead)
        self.calls.submit(target, ("start", name, starting.revision), lambda: driver.start(workload, host),
                          view.config.call_timeout)

    def _collect(self, name: str, now: float, timeout: float, errors: list[str]) -> None:
        restart = self.restarting[name]
        key = ("start", name, restart.revision)
        call = self.calls.get(key)
        if call is not None and call.overdue():
            self.calls.forget(key)
            del self.restarting[name]
            errors.append(f"HA restart of {name} on {restart.target}: no answer within {timeout:.0f} s; "
                          "left Starting for the settle reconciler")
            return
        finished = self.calls.take(key)
        if finished is None and call is not None:
            return
        del self.restarting[name]
        current = self.state.placement(name)
        if current is None or current.revision != restart.revision:
            return  # someone else changed it meanwhile: decided again from the store
        error = outcome(finished)[1] if finished is not None else RuntimeError("the start was dropped")
        if error is not None:
            self.writer.place(current, E.RESTART_FAILED, current.value.since,
                              f"restart on {restart.target} failed: {error}", host=restart.dead)
            self.observer.failed.add(name)
            detail = str(error) if isinstance(error, ClusterError) else f"{type(error).__name__}: {error}"
            self._backoff(name, now, f"HA restart of {name} on {restart.target}: {detail}", errors)
            return
        self.retry.pop(name, None)
        self.writer.place(current, E.STARTED, now, f"restarted: {restart.dead} is down", Event(
            now, f"workload/{name}", "restarted", f"{restart.dead} is down", restart.dead, restart.target))

    def _backoff(self, name: str, now: float, why: str, errors: list[str]) -> None:
        retry = self.retry.get(name)
        delay = min(2 * retry[1], 300.0) if retry else 10.0
        self.retry[name] = (now + delay, delay)
        self.waiting.arm(name, now + delay)
        errors.append(f"{why} (retry in {delay:.0f} s)")

    def _moved_meanwhile(self, current: Versioned[Placement], workload: Workload,
                         view: View) -> Versioned[Placement] | None:
        """It was moving when its host went down: when the move's target runs it, it is
        Running there (None); else the target is cleared. None too while the target is asked."""
        p = current.value
        assert p.target is not None
        target = self.state.host(p.target).value
        key = ("found", p.workload, current.revision)
        if target.state is not target.state.DOWN:
            driver = self.plugins.driver(workload.flavor)
            call = self.calls.get(key) or self.calls.submit(target.name, key, lambda: driver.inspect(workload, target),
                                                           view.config.call_timeout)
            if call.overdue():
                self.calls.forget(key)
                raise ClusterError(f"is {p.workload} on {target.name}? no answer within "
                                   f"{view.config.call_timeout:.0f} s")
            finished = self.calls.take(key)
            if finished is None:
                return None
            state, error = outcome(finished)
            if error is not None:
                raise ClusterError(f"is {p.workload} on {target.name}? {error}")
            if state is WorkloadState.RUNNING:
                self.writer.place(current, E.FOUND, view.now, f"moved from {p.host}", Event(
                    view.now, f"workload/{p.workload}", "migrated", f"the move had finished when {p.host} went down",
                    p.host, target.name), host=target.name)
                self.observer.failed.discard(p.workload)
                return None
        return self.writer.place(current, E.CLEAR_TARGET, p.since, p.reason)

    def launched(self) -> set[str]:
        return set(self.restarting)

    def cancel(self) -> None:
        self.restarting.clear()
