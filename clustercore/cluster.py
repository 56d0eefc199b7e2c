"""``Cluster``: the operator's handle on everything — hosts, workloads, maintenance, events.

It owns the store (the memory store unless given one), the loaded flavors, the clock and
the controller. Operator actions are host transitions committed with compare-and-swap:
each re-reads the host and re-validates the event, so two operators (or an operator and
the controller) never overwrite each other; a transition still contested after a few
attempts raises :class:`~clustercore.errors.Conflict`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any

import attrs

from clustercore import credentials, fencing, join
from clustercore.clock import Clock, SystemClock
from clustercore.config import ClusterConfig
from clustercore.controller import Controller, StepReport
from clustercore.driver import movable
from clustercore.errors import (
    Conflict,
    HostBusy,
    MaintenanceVetoed,
    NotLeader,
    StoreError,
    ValidationError,
)
from clustercore.events import Event, EventLog
from clustercore.leadership import LEADER_KEY, holder
from clustercore.lifecycle import HostEvent
from clustercore.model import Host, HostReport, HostState, Placement, Workload
from clustercore.operations import OperationRequests
from clustercore.placements import PlacementEvent
from clustercore.plugins import Plugins
from clustercore.rebalance import Plan
from clustercore.reconcile.writer import Decision, Writer
from clustercore.secrets import Secrets, new_key
from clustercore.state import ClusterState
from clustercore.store.base import Store
from clustercore.store.memory import MemoryStore
from clustercore.upgrade import RollingUpgrade, UpgradeStatus, read_status
from clustercore.volumes import StorageOps
from clustercore.workloads import WorkloadOps

log = logging.getLogger(__name__)

ATTEMPTS = 3
UPDATABLE = ("capacity", "allocatable", "address", "labels", "location", "fence_devices", "taints", "schedulable",
             "self_fence")
E = PlacementEvent


class Cluster(WorkloadOps, StorageOps, OperationRequests):
    """A cluster on a store. ``Cluster()`` alone is the embedded default: a memory store,
    the flavors installed under the ``clustercore.flavors`` entry points, the system clock."""

    def __init__(self, store: Store | None = None, plugins: Plugins | None = None, clock: Clock | None = None,
                 config: ClusterConfig | None = None, executor: Executor | None = None,
                 may_act: Callable[[], bool] | None = None, monotonic: Callable[[], float] | None = None,
                 secrets: Secrets | None = None) -> None:
        """``may_act`` says whether this process may act now (a manager: it leads);
        ``monotonic`` times the deadlines of calls into hosts (real seconds by default);
        ``secrets`` the cluster keys that seal fence passwords (default: the environment's,
        or a key of this process's own on the memory store: :mod:`clustercore.secrets`)."""
        self.clock = clock or SystemClock()
        self.store = store if store is not None else MemoryStore(clock=self.clock)
        self.plugins = plugins if plugins is not None else Plugins()
        self.state = ClusterState(self.store)
        self.events = EventLog(self.store, retain=ClusterConfig().events_retained)
        if secrets is None:
            secrets = Secrets.from_env()
            if not secrets.keys and isinstance(self.store, MemoryStore):  # the store dies with the process
                secrets = Secrets((new_key(),))
        self.writer = Writer(self.store, self.state, self.events, secrets)
        #: Heartbeat credentials this Cluster issued, by host (hand them to the hosts' agents).
        self.credentials: dict[str, str] = {}
        if config is not None:
            self.configure(config)
        self._guarded = may_act is not None
        self._leader_checked = (float("-inf"), True)
        self.controller = Controller(self.store, self.plugins, self.clock, self.state, self.events, executor,
                                     self.writer, may_act or self._no_manager_leads, monotonic, actions=self)
        with contextlib.suppress(StoreError):  # a store that is away: the first pass configures them
            self.plugins.configure(self.config)

    # ------------------------------------------------------------------ configuration

    @property
    def config(self) -> ClusterConfig:
        return self.state.config().value

    def rebalance_plan(self) -> Plan:
        """Dry run of rebalancing (:mod:`clustercore.rebalance`): the moves a round would
        make now off the hosts whose measured load is over, the hold aside. Nothing moves."""
        return self.controller.rebalance.dry_run(self.config.rebalance, self.clock.now())

    def configure(self, config: ClusterConfig | Mapping[str, Any]) -> ClusterConfig:
        """Store the cluster's config. A ``ClusterConfig`` replaces the whole config; a
        mapping is a partial update merged into the current one (``{"fencing":
        {"enabled": False}}`` changes that one setting and keeps every other). Validated
        before it is written: ValidationError names the field (an unknown policy too)."""
        current = self.state.config()
        if not isinstance(config, ClusterConfig):
            config = current.value.merged(config)
        try:
            self.plugins.policy(config.policy)  # an unknown policy is refused here, not at the next drain
        except ValueError as exc:
            raise ValidationError("cluster config", "policy", str(exc), config.policy) from None
        self.writer.configure(config, current.revision)
        self.events.retain = config.events_retained
        self.plugins.configure(config)
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
        host = Host.from_dict(host.to_dict() if isinstance(host, Host) else host)  # typed hosts are checked too
        for i, device in enumerate(host.fence_devices):
            fencing.check_device(device, f"fence_devices[{i}]")  # ValidationError: its agent is not here
        now = self.clock.now()
        credential = credentials.issue()
        new = self.writer.register(join.registered(host, self.config.approval_required, now), now, credential)
        self.credentials[new.name] = credential
        return new

    def update_host(self, name: str, changes: Mapping[str, Any], by: str = "") -> Host:
        """Change a host's definition (:data:`UPDATABLE` fields: capacity, address, labels,
        location, fence devices with their credentials, taints, schedulable, self_fence), checked like a
        registration, compare-and-swap with an event naming the fields (and ``by``); its
        state is left as it is. A new ``capacity`` without ``allocatable`` makes all of it
        allocatable."""
        unknown = sorted(set(changes) - set(UPDATABLE))
        if unknown:
            raise ValidationError("host", unknown[0], f"cannot be updated (only {', '.join(UPDATABLE)})",
                                  changes[unknown[0]])
        for attempt in range(ATTEMPTS):
            current = self.state.host(name)
            data = {**current.value.to_dict(), **changes}
            if "capacity" in changes and "allocatable" not in changes:
                data["allocatable"] = changes["capacity"]
            new = Host.from_dict(data)
            for i, device in enumerate(new.fence_devices):
                fencing.check_device(device, f"fence_devices[{i}]")
            try:
                return self.writer.update_host(current, new, self.clock.now(),
                                               f"{', '.join(sorted(changes))} updated" + (f" by {by}" if by else ""))
            except Conflict:
                if attempt == ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def issue_credential(self, name: str) -> str:
        """A new heartbeat credential for ``name`` (the old one stops counting at once):
        give it to the host's agent (``clustercore agent --credential-file``). This
        Cluster's own :meth:`heartbeat` uses it from now on."""
        self.host(name)  # UnknownHost
        credential = credentials.issue()
        self.writer.credential(name, credential)
        self.credentials[name] = credential
        return credential

    def _operate(self, name: str, event: HostEvent, reason: str, delete: bool = False) -> Host:
        for attempt in range(ATTEMPTS):
            current = self.state.host(name)
            if event is HostEvent.REMOVE:
                join.check_removable(current.value, self.placements().values())
            try:
                new, _ = self.controller.commit(current, Decision(current.value, event, reason), self.clock.now(),
                                                remove=delete)
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
        Workloads that cannot move (their driver's ``movable`` says so, for example a VM with
        a passthrough device; or a volume on a local domain that their driver cannot take
        along) veto it with the reason; ``stop_unmovable`` stops them first instead (their
        definitions stay, to be started again later)."""
        host = self.host(name)
        workloads = self.workloads()
        pinned = self.pinned_by_storage(name, workloads)
        if stop_unmovable:
            for p in list(self.placements().values()):
                w = workloads.get(p.workload)
                if p.host == name and w is not None and (w.name in pinned or
                                                         not movable(self.plugins.driver(w.flavor), w)):
                    self.stop(w.name)
                    self.events.record(Event(self.clock.now(), f"workload/{w.name}", "stopped-for-maintenance",
                                             f"cannot move off {name}", name, ""))
            pinned = []
        placed = [p.workload for p in self.placements().values() if p.host == name]
        vetoes = self.plugins.maintenance_vetoes(host, [workloads[w] for w in placed if w in workloads])
        if pinned:
            vetoes["storage"] = (f"volumes on local domains that cannot move with {', '.join(pinned)}: stop them "
                                 "first (stop_unmovable)")
        if vetoes:
            raise MaintenanceVetoed(name, vetoes)
        if placed and host.state in (HostState.DOWN, HostState.INSTALL_FAILED):
            raise HostBusy(name, "put into maintenance without a drain", placed)
        return self._operate(name, HostEvent.PREPARE_MAINTENANCE, "maintenance requested by operator")

    def cancel_maintenance(self, name: str) -> Host:
        return self._operate(name, HostEvent.CANCEL_MAINTENANCE, "maintenance cancelled by operator")

    def reboot_host(self, name: str, reason: str = "reboot requested by operator") -> Host:
        """Maintenance -> Rebooting (a flavor or the operator reboots it; it rejoins by heartbeat)."""
        return self._operate(name, HostEvent.REBOOT, reason)

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
        the agent stops renewing it, whichever manager is watching. The host's credential
        (issued when this Cluster registered it) is attached unless the report has one."""
        report = report or HostReport()
        if not report.credential and name in self.credentials:
            report = attrs.evolve(report, credential=self.credentials[name])
        self.writer.heartbeat(name, report, lease)

    # ------------------------------------------------------------------ upgrades

    def rolling_upgrade(self, hosts: Sequence[str] | None = None) -> RollingUpgrade:
        """Start a rolling upgrade (least loaded host first unless ``hosts`` gives the
        order); call its ``step()`` after each ``cluster.step()``."""
        return RollingUpgrade(self, hosts)

    def resume_upgrade(self) -> RollingUpgrade | None:
        """The rolling upgrade the store says is under way, to step on (a new leader's)."""
        return RollingUpgrade.resume(self)

    def upgrade_status(self) -> UpgradeStatus | None:
        """The last rolling upgrade's progress (percent, current host, phase, failure)."""
        return read_status(self)

    # ------------------------------------------------------------------ reconciling

    def step(self) -> StepReport:
        """One reconcile pass. An unguarded Cluster (no ``may_act``: not a Manager) refuses
        with NotLeader while a manager leads the same store: two reconcilers would act."""
        if not self._guarded:
            leader = self.store.get(LEADER_KEY)
            if leader is not None:
                raise NotLeader("an unguarded Cluster", 0, holder(leader))
        return self.controller.step()

    def _no_manager_leads(self) -> bool:
        """An unguarded Cluster acts only while no manager leads its store (checked at most
        once a second)."""
        now = time.monotonic()
        if now - self._leader_checked[0] > 1.0:
            self._leader_checked = (now, self.store.get(LEADER_KEY) is None)
        return self._leader_checked[1]
