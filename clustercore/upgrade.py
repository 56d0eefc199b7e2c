"""Rolling cluster upgrade: one host at a time, the cluster usable throughout.

For each host in order (least loaded first, so the first drains are the cheapest):

1. **capacity check** (N+1): every workload of the host must fit on the other hosts, as
   the scheduler sees them now; if not, the upgrade stops before touching the host;
2. **maintenance**: the host is drained (live migration where the flavor has it);
3. **upgrade**: every flavor's ``clustercore_upgrade_host`` hook runs; a flavor that
   starts a reboot says so, and the host is Rebooting until its heartbeats resume;
4. **activate** (when no reboot) and wait until the host is Up again; then the next host.

The upgrade stops at the first failure (a vetoed or abandoned drain, a hook that raises,
a host that does not come back), leaving the cluster usable: the failing host is in
Maintenance or Up, every other host as it was. Progress (percent, current host, phase) is
kept in the store under :data:`KEY`, so any program on the same store can query it.

:class:`RollingUpgrade` is stepped like the controller: call :meth:`RollingUpgrade.step`
after each ``cluster.step()``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from clustercore.errors import ClusterError, NoValidHost
from clustercore.maintenance import AvoidFilter
from clustercore.model import Host, HostState, Placement, Reader

if TYPE_CHECKING:
    from clustercore.cluster import Cluster

KEY = "upgrade/status"
PHASES = ("pending", "maintenance", "upgrading", "rebooting", "activating", "done", "failed")


@attrs.frozen
class UpgradeStatus:
    order: tuple[str, ...]
    done: tuple[str, ...] = ()
    current: str | None = None
    phase: str = "pending"
    failure: str = ""

    @property
    def percent(self) -> float:
        return 100.0 * len(self.done) / len(self.order) if self.order else 100.0

    @property
    def finished(self) -> bool:
        return self.phase in ("done", "failed")

    def to_dict(self) -> dict[str, Any]:
        return {"order": list(self.order), "done": list(self.done), "current": self.current, "phase": self.phase,
                "failure": self.failure, "percent": self.percent}

    @classmethod
    def from_dict(cls, data: object) -> UpgradeStatus:
        r = Reader("upgrade status", data)
        r.get("percent")  # derived

        def names(field: str) -> tuple[str, ...]:
            value = r.get(field) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise r.fail(field, "must be a list of host names", value)
            return tuple(value)

        current = r.get("current")
        if current is not None and not isinstance(current, str):
            raise r.fail("current", "must be a host name or null", current)
        phase = r.choice("phase", PHASES)
        status = cls(names("order"), names("done"), current, phase, r.string("failure", ""))
        r.done()
        return status


def upgrade_order(hosts: Mapping[str, Host], placements: Mapping[str, Placement]) -> tuple[str, ...]:
    """Up hosts, least loaded first (fewest workloads, then name)."""
    load: dict[str, int] = {}
    for p in placements.values():
        load[p.host] = load.get(p.host, 0) + 1
    up = [h for h in hosts.values() if h.state is HostState.UP]
    return tuple(h.name for h in sorted(up, key=lambda h: (load.get(h.name, 0), h.name)))


def read_status(cluster: Cluster) -> UpgradeStatus | None:
    kv = cluster.store.get(KEY)
    return None if kv is None else UpgradeStatus.from_dict(json.loads(kv.value))


class RollingUpgrade:
    def __init__(self, cluster: Cluster, hosts: Sequence[str] | None = None) -> None:
        self.cluster = cluster
        order = tuple(hosts) if hosts is not None else upgrade_order(cluster.hosts(), cluster.placements())
        unknown = [h for h in order if h not in cluster.hosts()]
        if unknown:
            raise ClusterError(f"cannot upgrade unknown hosts: {', '.join(unknown)}")
        current = read_status(cluster)
        if current is not None and not current.finished:
            raise ClusterError(f"an upgrade is already running (phase {current.phase} on {current.current})")
        self.status = UpgradeStatus(order)
        self._save()

    @classmethod
    def resume(cls, cluster: Cluster) -> RollingUpgrade | None:
        """The upgrade whose status the store holds, to be stepped on (a new leader takes
        over one its predecessor ran); None when there is none or it is finished."""
        status = read_status(cluster)
        if status is None or status.finished:
            return None
        upgrade = cls.__new__(cls)
        upgrade.cluster, upgrade.status = cluster, status
        return upgrade

    def cancel(self, why: str) -> UpgradeStatus:
        """Stop before the next host: a host being drained returns to Up (its maintenance
        cancelled); the upgrade ends failed with ``why``. Hosts already upgraded stay so."""
        name = self.status.current
        if name is not None and self.status.phase == "maintenance" and \
                self.cluster.host(name).state is HostState.PREPARING_FOR_MAINTENANCE:
            self.cluster.cancel_maintenance(name)
        return self._fail(why)

    def _save(self) -> None:
        self.cluster.writer.upgrade_status(KEY, json.dumps(self.status.to_dict()).encode())

    def _set(self, **changes: Any) -> UpgradeStatus:
        self.status = attrs.evolve(self.status, **changes)
        self._save()
        return self.status

    def _fail(self, why: str) -> UpgradeStatus:
        from clustercore.events import Event

        self.cluster.writer.record(Event(self.cluster.clock.now(), "cluster", "upgrade-failed", why,
                                         self.status.current or "", ""))
        return self._set(phase="failed", failure=why)

    def capacity_problem(self, name: str) -> str | None:
        """Why the other hosts cannot take ``name``'s workloads now, or None."""
        workloads = self.cluster.workloads()
        mine = sorted((workloads[p.workload] for p in self.cluster.placements().values()
                       if p.host == name and p.workload in workloads),
                      key=lambda w: (-w.priority, -w.requests.memory, -w.requests.cpu, w.name))
        scheduler = self.cluster.controller.scheduler(
            extra_filters=[AvoidFilter({w.name: frozenset({name}) for w in mine})])
        for workload in mine:
            try:
                scheduler.schedule(workload)
            except NoValidHost as exc:
                return f"no room elsewhere for {workload.name}: {exc}"
        return None

    def step(self) -> UpgradeStatus:
        """Advance by at most one phase; returns the status (also in the store)."""
        s = self.status
        if s.finished:
            return s
        cluster = self.cluster
        if s.current is None:
            remaining = [h for h in s.order if h not in s.done]
            if not remaining:
                return self._set(phase="done")
            name = remaining[0]
            self._set(current=name, phase="pending")
            problem = self.capacity_problem(name)
            if problem:
                return self._fail(f"{name}: {problem}")
            try:
                cluster.start_maintenance(name)
            except ClusterError as exc:
                return self._fail(f"{name}: maintenance refused: {exc}")
            return self._set(phase="maintenance")
        name = s.current
        host = cluster.host(name)
        if s.phase == "maintenance":
            if host.state is HostState.MAINTENANCE:
                try:
                    rebooting = cluster.plugins.upgrade_host(host)
                except ClusterError as exc:
                    return self._fail(f"{name}: upgrade hook failed: {exc}")
                if rebooting:
                    cluster.reboot_host(name, "rebooting to finish its upgrade")
                    return self._set(phase="rebooting")
                cluster.activate_host(name)
                return self._set(phase="activating")
            if host.state is not HostState.PREPARING_FOR_MAINTENANCE:
                return self._fail(f"{name}: drain did not finish ({host.state.value}: {host.reason})")
            return s
        if s.phase in ("rebooting", "activating"):
            if host.state is HostState.UP:
                return self._set(done=(*s.done, name), current=None, phase="pending")
            if host.state in (HostState.NON_RESPONSIVE, HostState.NON_OPERATIONAL, HostState.INSTALL_FAILED):
                return self._fail(f"{name}: did not come back ({host.state.value}: {host.reason})")
        return s
