"""The operator's calls on workloads (a mixin of :class:`~clustercore.cluster.Cluster`):
check, define, submit, start, stop, migrate, update, delete, explain.

``checked`` is the one path a new definition takes before it is written (read like a dict,
a known flavor, a free name, its volumes, every flavor's completion and validation);
``submit`` writes the definition and its Starting placement together; the driver runs in
the caller. Through a manager the same work is requested as operations
(:mod:`clustercore.operations`) and carried out by the leader.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from clustercore.driver import WorkloadDriver
from clustercore.errors import Conflict, FlavorError, NoValidHost, ValidationError, WorkloadExists
from clustercore.events import Event
from clustercore.maintenance import AvoidFilter
from clustercore.model import HostState, Placement, Workload
from clustercore.placements import PlacementEvent
from clustercore.scheduling.engine import Row
from clustercore.state import PLACEMENTS, Versioned

if TYPE_CHECKING:
    from clustercore.clock import Clock
    from clustercore.config import ClusterConfig
    from clustercore.controller import Controller
    from clustercore.model import Host
    from clustercore.plugins import Plugins
    from clustercore.reconcile.writer import Writer
    from clustercore.state import ClusterState
    from clustercore.storage import StorageView, Volume

E = PlacementEvent


class WorkloadOps:
    state: ClusterState
    writer: Writer
    plugins: Plugins
    clock: Clock
    controller: Controller
    if TYPE_CHECKING:  # the Cluster's own
        @property
        def config(self) -> ClusterConfig: ...
        def hosts(self) -> dict[str, Host]: ...
        def host(self, name: str) -> Host: ...
        def workloads(self) -> dict[str, Workload]: ...
        def volumes(self) -> dict[str, Volume]: ...
        def storage_view(self) -> StorageView: ...
        def drop_owned_volumes(self, workload: Workload) -> None: ...

    def submit(self, workload: Workload | Mapping[str, Any]) -> Placement:
        """Define a workload and start it where the scheduler says. Atomic up to the start:
        the definition is checked (:meth:`checked`) and a host chosen (NoValidHost) before
        anything is written; then the definition and its Starting placement are written
        together, and the placement is Running once the driver returns. If the driver fails,
        the placement is removed, the workload stays defined, and the FlavorError is raised."""
        workload = self.checked(workload)
        driver = self.plugins.driver(workload.flavor)
        try:
            target = self.controller.scheduler().select(workload)
        except NoValidHost:
            if any(h.value.state is HostState.STANDBY for h in self.state.hosts().values()):
                self.controller.power.wanted()  # power saving wakes a Standby host: submit again once it is Up
                self.writer.record(Event(self.clock.now(), f"workload/{workload.name}", "capacity-wanted",
                                         "no host with room: a Standby host will be powered on"))
            raise
        now = self.clock.now()
        try:
            starting = self.writer.define_and_place(workload, target, now)
        except Conflict:
            raise WorkloadExists(workload.name) from None
        return self._started(workload, driver, starting, now)

    def define(self, workload: Workload | Mapping[str, Any]) -> Workload:
        """Write a workload's definition (checked as :meth:`submit` checks it), placed
        nowhere: a ``start`` (or the leader, through a start operation) places it."""
        workload = self.checked(workload)
        try:
            self.writer.define(workload, self.clock.now())
        except Conflict:
            raise WorkloadExists(workload.name) from None
        return workload

    def checked(self, workload: Workload | Mapping[str, Any]) -> Workload:
        """A new workload as it would be written: read like a dict (typed objects too), its
        flavor known (UnknownFlavor), its name free (WorkloadExists), its volumes there and
        free or its own, completed and validated by every flavor (ValidationError naming
        the field). Writes nothing."""
        workload = Workload.from_dict(workload.to_dict() if isinstance(workload, Workload) else workload)
        self.plugins.driver(workload.flavor)
        existing = self.workloads()
        if workload.name in existing:
            raise WorkloadExists(workload.name)
        volumes = self.volumes()
        for volume in sorted(workload.volumes):
            owner = volumes[volume].workload if volume in volumes else ""
            if volume not in volumes or owner not in (None, workload.name):
                raise ValidationError("workload", "volumes", "no such volume" if volume not in volumes
                                      else f"owned by {owner}", volume)
        storage = self.storage_view()
        workload = self.plugins.complete_workload(workload, existing, self.config, storage)
        self.plugins.validate_workload(workload, existing, self.config, storage)
        return workload

    def start(self, name: str) -> Placement:
        workload = self.state.workload(name).value
        placed = self.state.placement(name)
        if placed is not None:
            raise Conflict(PLACEMENTS + name, 0, placed.revision)
        driver = self.plugins.driver(workload.flavor)
        target = self.controller.scheduler().select(workload)
        now = self.clock.now()
        starting = self.writer.place(None, E.PLACE, now, workload=name, host=target)
        assert starting is not None
        return self._started(workload, driver, starting, now)

    def _started(self, workload: Workload, driver: WorkloadDriver, starting: Versioned[Placement],
                 now: float) -> Placement:
        name, target = workload.name, starting.value.host
        try:
            driver.start(workload, self.host(target))
        except Exception as exc:
            self.writer.place(starting, E.START_FAILED, now, recorded=Event(
                now, f"workload/{name}", "start-failed", f"{type(exc).__name__}: {exc}", "", target))
            raise FlavorError(workload.flavor, "start", f"{type(exc).__name__}: {exc}") from exc
        running = self.writer.place(starting, E.STARTED, now, recorded=Event(
            now, f"workload/{name}", "placed", "", "", target))
        assert running is not None
        return running.value

    def stop(self, name: str, force: bool = False) -> None:
        """Stop a workload and drop its placement (its definition stays)."""
        workload = self.state.workload(name).value
        current = self.state.placement(name)
        if current is None:
            return
        self.plugins.driver(workload.flavor).stop(workload, self.host(current.value.host), force=force)
        self.writer.place(current, E.STOP, self.clock.now(), recorded=Event(
            self.clock.now(), f"workload/{name}", "stopped", "", current.value.host, ""))

    def migrate(self, name: str, target: str | None = None) -> Placement:
        """Move a running workload to ``target`` (checked by the scheduler's filters, as a
        move: a driver that migrates storage takes local volumes along), or where the
        scheduler says; returns once its driver has moved it (the store says Migrating
        meanwhile). NoValidHost naming each host's reason; FlavorError when the move fails
        (the workload is then still Running on its source)."""
        workload = self.state.workload(name).value
        current = self.state.placement(name)
        if current is None:
            raise ValidationError("workload", "name", "is not running", name)
        source = current.value.host
        if target == source:
            raise ValidationError("workload", "target", f"{name} runs on {source} already", target)
        avoid = set(self.hosts()) - {target} if target is not None else {source}
        keep_off = AvoidFilter({name: frozenset(avoid)}, "migration-target",
                               "not the target asked for" if target is not None else "its current host")
        chosen = self.controller.scheduler([keep_off], moving=True).select(workload)
        return self.controller.drain.move(current, workload, chosen, self.clock.now(),
                                          reason="migration requested by operator")

    def update_workload(self, name: str, change: Callable[[Workload], Workload], reason: str = "") -> Workload:
        """Store ``change(current definition)`` as the workload's definition (compare-and-swap:
        a concurrent update raises Conflict and nothing is written). Flavors call this after
        an operation the host confirmed (a hotplug), so the store follows the host."""
        current = self.state.workload(name)
        new = change(current.value)
        if new.name != name or new.flavor != current.value.flavor:
            raise ValueError(f"an update cannot rename {name!r} or change its flavor")
        self.writer.update_workload(current, new, self.clock.now(), reason)
        return new

    def delete(self, name: str) -> None:
        """Stop (if placed) and forget a workload."""
        self.stop(name)
        current = self.state.workload(name)  # UnknownWorkload
        self.writer.forget_workload(name, current.revision, self.clock.now())
        self.drop_owned_volumes(current.value)  # its own volumes go with it unless kept

    def explain(self, workload: Workload | Mapping[str, Any]) -> list[Row]:
        """Dry run of placing ``workload``: every host with its reason or its scores."""
        if not isinstance(workload, Workload):
            workload = Workload.from_dict(workload)
        return self.controller.scheduler().explain(workload)

