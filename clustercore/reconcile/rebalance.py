"""Rebalance: the leader evens out measured load by moving workloads (:mod:`clustercore.rebalance`).

Every ``rebalance.interval`` seconds (when the cluster's ``rebalance.mode`` is not
``off``) it reads the Up hosts' smoothed loads, updates the hysteresis (which hosts are
over, since when) and, for the hosts over for ``hold``, plans a batch with
:func:`~clustercore.rebalance.plan`. The moves run as jobs through the same path as a
drain's (:meth:`~clustercore.reconcile.drain.Drain.move`: Migrating in the store, the
driver, then the new host, each an event naming the measured score before and after). One
batch at a time; after a batch the hosts must be over for ``hold`` again (the loads must
first show the moves), and the moved workloads stay put for ``cooldown``. A batch is at most
the cluster's ``drain_parallel`` moves too (its migration limit).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future

import attrs

from clustercore.driver import MovabilityDriver
from clustercore.events import Event
from clustercore.model import Host, HostState, Workload
from clustercore.plugins import Plugins
from clustercore.rebalance import Hysteresis, Plan, RebalancePolicy, held, moved, observe, over, plan
from clustercore.reconcile.observe import View
from clustercore.reconcile.stats import stored_loads
from clustercore.scheduling.engine import Scheduler
from clustercore.state import ClusterState, Versioned
from clustercore.statistics import Load

log = logging.getLogger(__name__)


class Rebalance:
    def __init__(self, state: ClusterState, plugins: Plugins, loads: Callable[[], Mapping[str, Load]],
                 scheduler: Callable[[], Scheduler], move: Callable[..., object], jobs: Executor,
                 record: Callable[[Event], None], may_act: Callable[[], bool]) -> None:
        """``move(current placement, workload, target, now, reason)``: the drain's move."""
        self.state, self.plugins, self.loads, self.scheduler = state, plugins, loads, scheduler
        self.move, self.jobs, self.record, self.may_act = move, jobs, record, may_act
        self.memory = Hysteresis()
        self.next_at = float("-inf")
        self.running: dict[str, Future[object]] = {}
        self.last: Plan | None = None

    def movable(self, workload: Workload) -> bool:
        """Only what its flavor moves live, and says may move."""
        try:
            driver = self.plugins.driver(workload.flavor)
        except Exception:
            return False
        return driver.live_migration and (not isinstance(driver, MovabilityDriver) or driver.movable(workload))

    def _up_loads(self, hosts: Mapping[str, Versioned[Host]], loads: Mapping[str, Load]) -> dict[str, Load]:
        return {n: loads[n] for n, v in hosts.items() if v.value.state is HostState.UP and n in loads}

    def dry_run(self, policy: RebalancePolicy, now: float) -> Plan:
        """What a round would move now, the hold aside: the plan off every host over (with
        the loads this manager measured, else those the leader stored, and the cooldowns
        this manager knows)."""
        loads = self._up_loads(self.state.hosts(), self.loads() or stored_loads(self.state.store))
        return plan(self.scheduler(), loads, over(loads, policy.threshold), self.memory, now, policy, self.movable)

    def sync(self, view: View, errors: list[str]) -> None:
        policy = view.config.rebalance
        for name, job in list(self.running.items()):
            if job.done():
                del self.running[name]
                if job.exception() is not None:
                    errors.append(f"rebalancing {name}: {job.exception()}")
        if policy.mode != "evenly_distributed" or self.running or view.now < self.next_at or not self.may_act():
            return
        now = view.now
        self.next_at = now + policy.interval
        loads = self._up_loads(view.hosts, self.loads())
        if len(loads) < 2:
            return
        self.memory = observe(self.memory, over(loads, policy.threshold), now)
        due = held(self.memory, now, policy.hold)
        if not due:
            return
        limited = attrs.evolve(policy, batch=min(policy.batch, view.config.drain_parallel))  # the migration limit
        self.last = result = plan(self.scheduler(), loads, due, self.memory, now, limited, self.movable)
        if not result.moves:
            return
        self.record(Event(now, "cluster", "rebalance", f"{len(result.moves)} move(s) off {', '.join(due)}: measured "
                                                       f"score {result.before:.3f} -> {result.after:.3f}"))
        placements = self.state.placements()
        workloads = self.state.workloads()
        for m in result.moves:
            current = placements.get(m.workload)
            if current is None or current.value.host != m.source or m.workload not in workloads:
                continue  # it moved or stopped meanwhile
            reason = f"rebalance: measured score {m.before:.3f} -> {m.after:.3f}"
            self.running[m.workload] = self.jobs.submit(self.move, current, workloads[m.workload].value, m.target,
                                                        now, reason)
        # Measures must show the moves before the next batch; the moved stay put for the cooldown.
        self.memory = attrs.evolve(moved(self.memory, [m.workload for m in result.moves], now, policy.cooldown),
                                   over_since={})
