"""Power saving: the leader empties, powers off and wakes hosts (:mod:`clustercore.powersaving`).

While the cluster's ``rebalance.mode`` is ``power_saving``, every ``rebalance.interval``
seconds: a host this manager is emptying goes on draining (PreparingForMaintenance, the
drain's own path), and once in Maintenance is powered off through its fence devices with
the power confirmed OFF (a job, as a fencing), then made **Standby**; otherwise, when a
Standby host is needed (:func:`~clustercore.powersaving.wake_needed`) one is powered on (a
job) and made Rebooting (it comes back Up through its heartbeats); otherwise, when a host
can be emptied (:func:`~clustercore.powersaving.to_empty`) its maintenance starts through
the operator's own call (vetoes and storage pins count), but not within ``cooldown`` of a
wake (no flapping between Standby and Up). One thing at a time, each an event.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future

from clustercore.events import Event
from clustercore.fencing import Fencer, hard_fence
from clustercore.lifecycle import HostEvent
from clustercore.model import Host, HostState, Workload
from clustercore.powersaving import power_on, to_empty, wake_needed
from clustercore.reconcile.observe import View
from clustercore.reconcile.writer import Decision
from clustercore.scheduling.engine import Scheduler
from clustercore.state import Versioned
from clustercore.statistics import Load

log = logging.getLogger(__name__)
S = HostState


class PowerSaving:
    def __init__(self, loads: Callable[[], Mapping[str, Load]], scheduler: Callable[[], Scheduler],
                 movable: Callable[[Workload], bool], fencer: Fencer, jobs: Executor,
                 commit: Callable[[Versioned[Host], Decision, float], object],
                 start_maintenance: Callable[[str], object], record: Callable[[Event], None],
                 may_act: Callable[[], bool]) -> None:
        self.loads, self.scheduler, self.movable, self.fencer = loads, scheduler, movable, fencer
        self.jobs, self.commit, self.start_maintenance = jobs, commit, start_maintenance
        self.record, self.may_act = record, may_act
        self.emptying: str | None = None
        self.job: tuple[str, str, Future[list[str]]] | None = None  # (action, host, its future)
        self.demand = False
        self.next_at = float("-inf")
        self.woke_at = float("-inf")  # no host is emptied within the cooldown after a wake

    def wanted(self) -> None:
        """A workload found no host with room: wake a Standby host on the next round."""
        self.demand = True

    def sync(self, view: View, errors: list[str]) -> None:
        policy = view.config.rebalance
        if policy.mode != "power_saving" or not self.may_act():
            return
        now = view.now
        if self.job is not None and not self._finish(view, errors):
            return
        if now < self.next_at and not self.demand:
            return
        self.next_at = now + policy.interval
        hosts = view.hosts
        if self.emptying is not None:
            current = hosts.get(self.emptying)
            state = None if current is None else current.value.state
            if state is S.MAINTENANCE and current is not None:
                self._launch("off", current.value, functools.partial(
                    hard_fence, current.value, view.config.fencing, self.fencer.agent_for, self.fencer.sleep,
                    self.fencer.monotonic))
                return
            if state is S.PREPARING_FOR_MAINTENANCE:
                return
            self.emptying = None  # cancelled, failed or gone
        loads = self.loads()
        up = [n for n, v in hosts.items() if v.value.state is S.UP]
        standby = sorted(n for n, v in hosts.items() if v.value.state is S.STANDBY)
        why = wake_needed(loads, up, standby, self.demand, policy)
        if why is not None:
            self.demand, self.woke_at = False, now
            host = hosts[standby[0]].value
            self.record(Event(now, f"host/{host.name}", "power-saving", f"powering on: {why}"))
            self._launch("on", host, functools.partial(power_on, host, self.fencer.agent_for,
                                                       view.config.fencing.confirm_timeout))
            return
        self.demand = False
        if now - self.woke_at < policy.cooldown:
            return  # it was needed a moment ago: no flapping between Standby and Up
        name = to_empty(self.scheduler(), {n: loads[n] for n in up if n in loads}, policy, self.movable)
        if name is None:
            return
        try:
            self.start_maintenance(name)
        except Exception as exc:  # a veto, a conflict: another round decides again
            errors.append(f"power saving cannot empty {name}: {exc}")
            return
        self.emptying = name
        self.record(Event(now, f"host/{name}", "power-saving", "emptying it: its load and the others' allow"))

    def _launch(self, action: str, host: Host, run: Callable[[], list[str]]) -> None:
        self.job = (action, host.name, self.jobs.submit(run))

    def _finish(self, view: View, errors: list[str]) -> bool:
        """Collect a finished job (True), or say one still runs (False)."""
        assert self.job is not None
        action, name, future = self.job
        if not future.done():
            return False
        self.job = None
        current = view.hosts.get(name)
        try:
            attempts = future.result()
        except Exception as exc:
            errors.append(f"power saving could not power {name} {action}: {exc}")
            self.record(Event(view.now, f"host/{name}", "power-failed", f"power {action}: {exc}"))
            return True
        if current is None:
            return True
        if action == "off" and current.value.state is S.MAINTENANCE:
            self.commit(current, Decision(current.value, HostEvent.STANDBY,
                                          "powered off by power saving, confirmed by status: " + "; ".join(attempts)),
                        view.now)
            self.emptying = None
        elif action == "on" and current.value.state is S.STANDBY:
            self.commit(current, Decision(current.value, HostEvent.WAKE, "powered on by power saving: "
                                          + "; ".join(attempts)), view.now)
        return True
