"""``Cluster``: the operator's handle on everything — hosts, workloads, maintenance, events.

It owns the store (the memory store unless given one), the loaded flavors, the clock and
the controller. Operator actions are host transitions committed with compare-and-swap:
each re-reads the host and re-validates the event, so two operators (or an operator and
the controller) never overwrite each other; a transition still contested after a few
attempts raises :class:`~clustercore.errors.Conflict`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any

import attrs

from clustercore import join
from clustercore.clock import Clock, SystemClock
from clustercore.config import ClusterConfig
from clustercore.controller import Controller, Decision, StepReport
from clustercore.errors import Conflict, FlavorError, HostBusy, HostExists, MaintenanceVetoed, UnknownWorkload
from clustercore.events import Event, EventLog
from clustercore.lifecycle import HostEvent
from clustercore.model import Host, HostReport, HostState, Placement, PlacementState, Workload
from clustercore.plugins import Plugins
from clustercore.scheduling.engine import Row
from clustercore.state import CONFIG_KEY, HEARTBEATS, HOSTS, PLACEMENTS, WORKLOADS, ClusterState, encode
from clustercore.store.base import Check, Delete, Put, Store
from clustercore.store.memory import MemoryStore
from clustercore.upgrade import RollingUpgrade, UpgradeStatus, read_status

log = logging.getLogger(__name__)

ATTEMPTS = 3


def movable(driver: object, workload: Workload) -> bool:
    """Whether ``workload`` can leave its host (drivers may define ``movable(workload)``;
    without it, every workload can)."""
    check = getattr(driver, "movable", None)
    return True if check is None else bool(check(workload))


class Cluster:
    """A cluster on a store. ``Cluster()`` alone is the embedded default: a memory store,
    the flavors installed under the ``clustercore.flavors`` entry points, the system clock."""

    def __init__(self, store: Store | None = None, plugins: Plugins | None = None, clock: Clock | None = None,
                 config: ClusterConfig | None = None, executor: Executor | None = None) -> None:
        self.clock = clock or SystemClock()
        self.store = store if store is not None else MemoryStore(clock=self.clock)
        self.plugins = plugins if plugins is not None else Plugins()
        self.state = ClusterState(self.store)
        if config is not None:
            self.configure(config)
        self.events = EventLog(self.store, retain=self.config.events_retained)
        self.controller = Controller(self.store, self.plugins, self.clock, self.state, self.events, executor)

    # ------------------------------------------------------------------ configuration

    @property
    def config(self) -> ClusterConfig:
        return self.state.config().value

    def configure(self, config: ClusterConfig | Mapping[str, Any]) -> ClusterConfig:
        if not isinstance(config, ClusterConfig):
            config = ClusterConfig.from_dict(config)
        current = self.state.config()
        self.store.put(CONFIG_KEY, encode(config), expect=current.revision)
        return config

    # ------------------------------------------------------------------ reading

    def hosts(self) -> dict[str, Host]:
        return {name: v.value for name, v in self.state.hosts().items()}

    def host(self, name: str) -> Host:
        return self.state.host(name).value

    def workloads(self) -> dict[str, Workload]:
        return {name: v.value for name, v in self.state.workloads().items()}

    def placements(self) -> dict[str, Placement]:
        return {name: v.value for name, v in self.state.placements().items()}

    def query_events(self, subject: str | None = None, kind: str | None = None) -> list[Event]:
        return self.events.query(subject=subject, kind=kind)

    # ------------------------------------------------------------------ hosts

    def register_host(self, host: Host | Mapping[str, Any]) -> Host:
        """Add a host: it joins through approval (when the config requires it), bootstrap
        and discovery as the controller runs. A taken name raises HostExists."""
        if not isinstance(host, Host):
            host = Host.from_dict(host)
        now = self.clock.now()
        new = join.registered(host, self.config.approval_required, now)
        event = Event(now, f"host/{new.name}", "registered", "", "", str(new.state))
        try:
            key = HOSTS + new.name
            self.store.txn([Check(key, 0)], [Put(key, encode(new)), self.events.put_op(event)])
        except Conflict:
            raise HostExists(new.name) from None
        log.info("%s", event)
        return new

    def _operate(self, name: str, event: HostEvent, reason: str, delete: bool = False) -> Host:
        for attempt in range(ATTEMPTS):
            current = self.state.host(name)
            if event is HostEvent.REMOVE:
                join.check_removable(current.value, self.placements().values())
            try:
                extra = [Delete(HEARTBEATS + name)] if delete and self.store.get(HEARTBEATS + name) else []
                new, _ = self.controller.commit(current, Decision(current.value, event, reason), self.clock.now(),
                                                extra=extra, delete=delete)
                return new
            except Conflict:
                if attempt == ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def approve_host(self, name: str) -> Host:
        return self._operate(name, HostEvent.APPROVE, "approved by operator")

    def reinstall_host(self, name: str) -> Host:
        return self._operate(name, HostEvent.REINSTALL, "reinstall requested by operator")

    def activate_host(self, name: str) -> Host:
        return self._operate(name, HostEvent.ACTIVATE, "activated by operator")

    def start_maintenance(self, name: str, stop_unmovable: bool = False) -> Host:
        """PreparingForMaintenance (the controller drains it), unless a flavor vetoes.
        Workloads whose driver says they cannot move (``movable``, for example a VM with a
        passthrough device) veto it with the flavor's reason; ``stop_unmovable`` stops
        them first instead (their definitions stay, to be started again later)."""
        host = self.host(name)
        workloads = self.workloads()
        if stop_unmovable:
            for p in list(self.placements().values()):
                w = workloads.get(p.workload)
                if p.host == name and w is not None and not movable(self.plugins.driver(w.flavor), w):
                    self.stop(w.name)
                    self.events.record(Event(self.clock.now(), f"workload/{w.name}", "stopped-for-maintenance",
                                             f"cannot move off {name}", name, ""))
        placed = [p.workload for p in self.placements().values() if p.host == name]
        vetoes = self.plugins.maintenance_vetoes(host, [workloads[w] for w in placed if w in workloads])
        if vetoes:
            raise MaintenanceVetoed(name, vetoes)
        if placed and host.state in (HostState.DOWN, HostState.INSTALL_FAILED):
            raise HostBusy(name, "put into maintenance without a drain", placed)
        return self._operate(name, HostEvent.PREPARE_MAINTENANCE, "maintenance requested by operator")

    def cancel_maintenance(self, name: str) -> Host:
        return self._operate(name, HostEvent.CANCEL_MAINTENANCE, "maintenance cancelled by operator")

    def confirm_down(self, name: str) -> Host:
        """The operator vouches that a NonResponsive host is really off ("host has been rebooted")."""
        return self._operate(name, HostEvent.CONFIRM_DOWN, "operator confirmed the host is down")

    def remove_host(self, name: str) -> None:
        """Forget a host (from PendingApproval, InstallFailed, Maintenance or Down). Refused
        with HostBusy while workloads are placed on it."""
        self._operate(name, HostEvent.REMOVE, "removed by operator", delete=True)

    def heartbeat(self, name: str, report: HostReport | None = None, lease: int = 0) -> None:
        """What a host agent does every ``heartbeat_interval``: say it is alive, and what it
        reaches. With a store ``lease`` (as Kubernetes node leases) the key vanishes when
        the agent stops renewing it, whichever manager is watching."""
        self.store.put(HEARTBEATS + name, encode(report or HostReport()), lease=lease)

    # ------------------------------------------------------------------ workloads

    def submit(self, workload: Workload | Mapping[str, Any]) -> Placement:
        """Define a workload and start it where the scheduler says. The placement is in the
        store as Starting before the driver is called and Running once it returns; if the
        driver fails, the placement is removed, the workload stays defined, and the
        FlavorError is raised."""
        if not isinstance(workload, Workload):
            workload = Workload.from_dict(workload)
        self.plugins.driver(workload.flavor)  # UnknownFlavor before anything is written
        now = self.clock.now()
        self.store.put(WORKLOADS + workload.name, encode(workload), expect=0)
        self.events.record(Event(now, f"workload/{workload.name}", "defined"))
        return self.start(workload.name)

    def start(self, name: str) -> Placement:
        workload = self.state.workload(name).value
        if self.state.placement(name) is not None:
            raise Conflict(PLACEMENTS + name, 0, self.state.placement(name).revision)  # type: ignore[union-attr]
        driver = self.plugins.driver(workload.flavor)
        target = self.controller.scheduler().select(workload)
        now = self.clock.now()
        key = PLACEMENTS + name
        starting = Placement(name, target, PlacementState.STARTING, now)
        rev = self.store.put(key, encode(starting), expect=0)
        try:
            driver.start(workload, self.host(target))
        except Exception as exc:
            self.store.txn([Check(key, rev)], [Delete(key), self.events.put_op(
                Event(now, f"workload/{name}", "start-failed", f"{type(exc).__name__}: {exc}", "", target))])
            raise FlavorError(workload.flavor, "start", f"{type(exc).__name__}: {exc}") from exc
        running = attrs.evolve(starting, state=PlacementState.RUNNING)
        self.store.txn([Check(key, rev)], [Put(key, encode(running)), self.events.put_op(
            Event(now, f"workload/{name}", "placed", "", "", target))])
        return running

    def stop(self, name: str, force: bool = False) -> None:
        """Stop a workload and drop its placement (its definition stays)."""
        workload = self.state.workload(name).value
        current = self.state.placement(name)
        if current is None:
            return
        self.plugins.driver(workload.flavor).stop(workload, self.host(current.value.host), force=force)
        self.store.txn([Check(PLACEMENTS + name, current.revision)], [Delete(PLACEMENTS + name), self.events.put_op(
            Event(self.clock.now(), f"workload/{name}", "stopped", "", current.value.host, ""))])

    def update_workload(self, name: str, change: Callable[[Workload], Workload], reason: str = "") -> Workload:
        """Store ``change(current definition)`` as the workload's definition (compare-and-swap:
        a concurrent update raises Conflict and nothing is written). Flavors call this after
        an operation the host confirmed (a hotplug), so the store follows the host."""
        current = self.state.workload(name)
        new = change(current.value)
        if new.name != name or new.flavor != current.value.flavor:
            raise ValueError(f"an update cannot rename {name!r} or change its flavor")
        self.store.txn([Check(WORKLOADS + name, current.revision)], [Put(WORKLOADS + name, encode(new)),
                       self.events.put_op(Event(self.clock.now(), f"workload/{name}", "updated", reason))])
        return new

    # ------------------------------------------------------------------ upgrades

    def rolling_upgrade(self, hosts: Sequence[str] | None = None) -> RollingUpgrade:
        """Start a rolling upgrade (least loaded host first unless ``hosts`` gives the
        order); call its ``step()`` after each ``cluster.step()``."""
        return RollingUpgrade(self, hosts)

    def upgrade_status(self) -> UpgradeStatus | None:
        """The last rolling upgrade's progress (percent, current host, phase, failure)."""
        return read_status(self)

    def delete(self, name: str) -> None:
        """Stop (if placed) and forget a workload."""
        self.stop(name)
        current = self.store.get(WORKLOADS + name)
        if current is None:
            raise UnknownWorkload(name)
        self.store.delete(WORKLOADS + name, expect=current.mod_revision)

    def explain(self, workload: Workload | Mapping[str, Any]) -> list[Row]:
        """Dry run of placing ``workload``: every host with its reason or its scores."""
        if not isinstance(workload, Workload):
            workload = Workload.from_dict(workload)
        return self.controller.scheduler().explain(workload)

    # ------------------------------------------------------------------ reconciling

    def step(self) -> StepReport:
        return self.controller.step()
