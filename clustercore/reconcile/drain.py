"""Drain: a host PreparingForMaintenance has its workloads moved away, then goes Maintenance;
a host NonOperational for a cause that clears by itself (storage or a required network lost)
has them moved away too, as oVirt migrates VMs off a non-operational host, and stays
NonOperational until the cause is gone (an evacuation never gives up the host's state).

Each pass of a drain collects ended moves, gives up after too many failures of one
workload (the host goes back Up, with the reason), finishes when nothing is left (the
flavors' ``prepare_maintenance``, off the pass, then Maintenance), else launches moves
(:func:`~clustercore.maintenance.plan_drain`) up to the parallel limit on the controller's
executor. :meth:`Drain.move` is one move through the workload's driver: the store says
Migrating while it moves and names the new host only once the driver succeeded (with
the new host of the workload's volumes on local domains, when its driver migrates
storage, in the same transaction).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from clustercore.driver import migrates_storage
from clustercore.errors import ClusterError, FlavorError
from clustercore.events import Event
from clustercore.lifecycle import HostEvent
from clustercore.maintenance import AvoidFilter, Drainer, DrainPolicy, Move, moves_to_launch, plan_drain
from clustercore.model import Host, HostState, Placement, Workload
from clustercore.placements import PlacementEvent, in_flight
from clustercore.plugins import Plugins
from clustercore.reconcile.calls import HostCalls, outcome
from clustercore.reconcile.hosts import Pending
from clustercore.reconcile.observe import View
from clustercore.reconcile.writer import Decision, Writer
from clustercore.scheduling.engine import Filter, HostFilter, Scheduler
from clustercore.state import ClusterState, Versioned
from clustercore.storage import Volume

E = PlacementEvent


class Drain:
    def __init__(self, state: ClusterState, plugins: Plugins, calls: HostCalls, writer: Writer, drainer: Drainer,
                 scheduler: Callable[[Sequence[Filter | HostFilter]], Scheduler], now: Callable[[], float],
                 may_act: Callable[[], bool], reached: Callable[[str], frozenset[str] | None] = lambda host: None
                 ) -> None:
        """``reached(host)``: the storage domains a probe last found ``host`` to reach
        (None: not probed)."""
        self.state = state
        self.plugins = plugins
        self.calls = calls
        self.writer = writer
        self.drainer = drainer
        self.scheduler = scheduler
        self.now = now
        self.may_act = may_act
        self.reached = reached
        self.errors: list[str] = []  # of the pass being run
        self._stranded: dict[str, str] = {}  # workload -> why it is not evacuated (said once)

    def decide(self, current: Versioned[Host], view: View, workloads: int) -> Decision | None:
        host = current.value
        evacuating = host.state is HostState.NON_OPERATIONAL and host.non_operational is not None \
            and host.non_operational.auto_recoverable
        if host.state is not HostState.PREPARING_FOR_MAINTENANCE and not evacuating:
            if host.name in self.drainer.attempts or host.name in self.drainer.avoid:
                self.drainer.forget(host.name)  # it left the drain or the evacuation (Up again...)
            return None
        config = view.config
        policy = DrainPolicy(config.drain_parallel, config.drain_attempts)
        drainer = self.drainer
        for ended in drainer.collect(host.name):
            if ended.error is not None:
                self.errors.append(f"{'evacuation' if evacuating else 'drain'} of {host.name}: "
                                   f"{ended.move.workload} -> {ended.move.target}: {ended.error}")
        attempts = drainer.attempts.get(host.name, {})
        for workload, count in attempts.items():
            if count >= policy.max_attempts and not evacuating:
                return self._give_up(host, workload, count, "")
        mine = [p for p in self.state.placements().values() if p.value.host == host.name]
        moving = drainer.in_flight(host.name)
        if not mine and not moving:
            return None if evacuating else self._finish(current, view)
        # A move or start some other manager began (it died mid-way) counts as in flight
        # until the settle reconciler has settled it.
        moving |= {p.value.workload for p in mine if in_flight(p.value)}
        if len(moving) >= policy.parallel:
            return None
        avoid = drainer.avoid.get(host.name, {})
        plan = plan_drain(host.name, self.scheduler([AvoidFilter(dict(avoid))] if avoid else []))
        for stuck in plan.stuck:
            if attempts.get(stuck.workload) and stuck.workload not in moving and not evacuating:
                # It failed to move and no other host is left to try: retrying cannot help.
                return self._give_up(host, stuck.workload, attempts[stuck.workload], "; no other host can take it")
            self.errors.append(str(stuck))
        for move in moves_to_launch(plan, moving, policy):
            if evacuating and attempts.get(move.workload, 0) >= policy.max_attempts:
                continue  # an evacuation stops trying a workload that failed to move that often
            if evacuating and self._stranded_by_storage(host, move.workload, view.now):
                continue
            if not self.may_act():
                break
            drainer.launch(move, self._run_move)
        return None

    def _stranded_by_storage(self, host: Host, workload: str, now: float) -> bool:
        """A workload with a volume on a domain its host no longer reaches stays: its
        flavor could not hand the volume over from there (a migration would fail, and
        could leave it paused); it runs on from what it holds open. Said once, as an event."""
        reached = self.reached(host.name)
        found = self.state.workloads().get(workload)
        if reached is None or found is None:
            return False
        volumes = self.state.volumes()
        lost = sorted(volumes[v].value.domain for v in found.value.volumes
                      if v in volumes and volumes[v].value.domain not in reached)
        if not lost:
            return False
        why = f"its storage {', '.join(lost)} is not reached from {host.name}: it stays there until it is"
        if self._stranded.get(workload) != why:
            self._stranded[workload] = why
            self.writer.record(Event(now, f"workload/{workload}", "not-evacuated", why, host.name, ""))
        return True

    def _finish(self, current: Versioned[Host], view: View) -> Decision | None:
        host = current.value
        key = ("drain", host.name, current.revision)
        call = self.calls.get(key) or self.calls.submit(host.name, key, lambda: self.plugins.prepare_maintenance(host),
                                                       view.config.call_timeout)
        if call.overdue():
            self.calls.forget(key)
            error: BaseException | None = TimeoutError(
                f"prepare_maintenance of {host.name} did not answer within {view.config.call_timeout:.0f} s")
        else:
            finished = self.calls.take(key)
            if finished is None:
                raise Pending(key)
            _, error = outcome(finished)
        if error is not None:
            self.errors.append(str(error))
            self.writer.record(Event(view.now, f"host/{host.name}", "prepare-maintenance-failed", str(error)))
            return None
        self.drainer.forget(host.name)
        return Decision(host, HostEvent.DRAINED, "no workloads left")

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
        return self.move(current, workload, move.target, self.now(), reason=f"drain of {move.source}")

    def _carried(self, workload: Workload, target: str) -> list[tuple[Versioned[Volume], Volume]]:
        """The workload's volumes on local domains, now on ``target`` (a storage migration
        took them there): stored with the placement, in one transaction."""
        domains = self.state.storage_domains()
        out = []
        for name, current in sorted(self.state.volumes().items()):
            domain = domains.get(current.value.domain)
            if name in workload.volumes and domain is not None and not domain.value.shared \
                    and current.value.host != target:
                out.append((current, attrs.evolve(current.value, host=target)))
        return out

    def move(self, current: Versioned[Placement], workload: Workload, target: str, now: float,
             reason: str = "") -> Placement:
        """Move a placed workload to ``target`` through its flavor's driver. The store says
        Migrating while it moves and names the new host only after the driver succeeds; on
        failure the placement is back on its source, Running."""
        source = self.state.host(current.value.host).value
        dest = self.state.host(target).value
        driver = self.plugins.driver(workload.flavor)
        moving = self.writer.place(current, E.MIGRATE, now, current.value.reason, target=target)
        assert moving is not None
        try:
            if driver.live_migration:
                driver.migrate(workload, source, dest)
            else:
                driver.stop(workload, source)
                driver.start(workload, dest)
        except Exception as exc:
            self.writer.place(moving, E.MIGRATION_FAILED, current.value.since, f"move failed: {exc}", Event(
                now, f"workload/{workload.name}", "migration-failed", str(exc), source.name, target))
            raise FlavorError(workload.flavor, "migrate", f"{type(exc).__name__}: {exc}") from exc
        carried = self._carried(workload, target) if migrates_storage(driver, workload) else []
        note = f" with volumes {', '.join(after.name for _, after in carried)}" if carried else ""
        moved = self.writer.place(moving, E.MIGRATED, now, f"moved from {source.name}", Event(
            now, f"workload/{workload.name}", "migrated", reason + note, source.name, target), volumes=carried)
        assert moved is not None
        return moved.value
