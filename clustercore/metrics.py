"""Prometheus metrics of a cluster, as one manager sees it (prometheus-client).

Served at ``/metrics`` by the API (:mod:`clustercore.api`). Each scrape first follows the
store's watches (hosts, placements, operations, events: only what changed since the last
scrape is read), then renders:

=============================================  =======  ==================================================
name                                           type     what
=============================================  =======  ==================================================
``clustercore_hosts{state}``                   gauge    hosts in each state (every state listed)
``clustercore_placements{state}``              gauge    placements in each state
``clustercore_operations{kind,state}``         gauge    operations in the store by kind and state
``clustercore_leader``                         gauge    1 on the manager that leads, else 0
``clustercore_host_cpu_load{host}``            gauge    share of the host's CPUs busy (smoothed, 0..1)
``clustercore_host_memory_mib{host,kind}``     gauge    memory used and available (smoothed)
``clustercore_workload_cpu{workload,host}``    gauge    CPUs a workload keeps busy (smoothed)
``clustercore_fencing_total{outcome}``         counter  fenced, failed, confirmed-down (from events)
``clustercore_migrations_total{outcome}``      counter  migrated, failed (from events)
``clustercore_fencing_duration_seconds``       histo    Fencing to Down, per host fenced
``clustercore_migration_duration_seconds``     histo    Migrating to Running elsewhere, per move (as seen)
``clustercore_operation_duration_seconds``     histo    requested to done, by kind
``clustercore_reconcile_pass_seconds``         histo    each reconcile pass of this manager
``clustercore_scheduler_decision_seconds``     histo    each scheduler decision (filter and weigh)
=============================================  =======  ==================================================

Counters and durations count what this process saw happen since it started (the Prometheus
way: ``rate()`` and ``increase()`` make sense of restarts). A manager's metrics also follow
the store after each of its passes (:meth:`Metrics.attach`), so a migration's duration,
timed from when its Migrating placement is seen to when it is seen Running elsewhere, is
right to within a pass (the store keeps no end time of a move). Needs the ``api`` extra.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from clustercore.errors import Compacted, ValidationError
from clustercore.events import PREFIX as EVENTS
from clustercore.model import HostState, PlacementState
from clustercore.operations import KINDS, OpState
from clustercore.operations import PREFIX as OPERATIONS
from clustercore.state import HOSTS, PLACEMENTS, STATS, Informer
from clustercore.statistics import Load
from clustercore.store.base import EventType, Store, Watch

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SLOW = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
FENCING_EVENTS = {"fenced": "fenced", "fence-failed": "failed", "confirm-down": "confirmed-down"}
MIGRATION_EVENTS = {"migrated": "migrated", "migration-failed": "failed"}


class Seen(NamedTuple):
    state: str
    since: float  # the store's: when the state was entered
    seen: float  # this process's monotonic time when it saw it
    data: dict[str, Any]


class _Tracked:
    """The state (and since) of every key under a prefix, followed by an informer; says
    which keys changed state since the last sync."""

    def __init__(self, store: Store, prefix: str) -> None:
        self.informer = Informer(store, prefix)
        self.states: dict[str, Seen] = {}
        self.primed = False

    def sync(self) -> list[tuple[Seen | None, Seen]]:
        """(before, after) of each key whose state changed (none on the first sync)."""
        changed, deleted = self.informer.sync()
        moves = []
        now = time.monotonic()
        for name in deleted:
            self.states.pop(name, None)
        for name in changed:
            try:
                data = json.loads(self.informer.items[name].value)
                after = Seen(str(data["state"]), float(data.get("since") or data.get("updated") or 0.0), now, data)
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # corrupt: the cluster's own readers report it
            before = self.states.get(name)
            self.states[name] = after
            if self.primed and (before is None or before.state != after.state):
                moves.append((before, after))
        self.primed = True
        return moves

    def count(self, key: Callable[[dict[str, Any]], tuple[str, ...]]) -> dict[tuple[str, ...], int]:
        out: dict[tuple[str, ...], int] = {}
        for _, _, _, data in self.states.values():
            k = key(data)
            out[k] = out.get(k, 0) + 1
        return out


class Metrics:
    """The metrics registry of one process. ``store``: the cluster's (None: only what is
    observed by hand); ``leading``: whether this process leads (None: a lone Cluster, 1)."""

    def __init__(self, store: Store | None = None, leading: Callable[[], bool] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.store = store
        self.leading = leading
        r = self.registry
        self.hosts = Gauge("clustercore_hosts", "Hosts in each state", ["state"], registry=r)
        self.placements = Gauge("clustercore_placements", "Placements in each state", ["state"], registry=r)
        self.operations = Gauge("clustercore_operations", "Operations by kind and state", ["kind", "state"],
                                registry=r)
        self.leader = Gauge("clustercore_leader", "1 on the manager that leads, else 0", registry=r)
        self.host_cpu = Gauge("clustercore_host_cpu_load", "Share of the host's CPUs busy (smoothed)", ["host"],
                              registry=r)
        self.host_memory = Gauge("clustercore_host_memory_mib", "Host memory used and available (smoothed)",
                                 ["host", "kind"], registry=r)
        self.workload_cpu = Gauge("clustercore_workload_cpu", "CPUs a workload keeps busy (smoothed)",
                                  ["workload", "host"], registry=r)
        self.fencing = Counter("clustercore_fencing", "Fencing outcomes seen", ["outcome"], registry=r)
        self.migrations = Counter("clustercore_migrations", "Migration outcomes seen", ["outcome"], registry=r)
        self.fencing_seconds = Histogram("clustercore_fencing_duration_seconds", "From Fencing to Down",
                                         buckets=SLOW, registry=r)
        self.migration_seconds = Histogram("clustercore_migration_duration_seconds",
                                           "From Migrating to Running elsewhere", buckets=SLOW, registry=r)
        self.operation_seconds = Histogram("clustercore_operation_duration_seconds",
                                           "From requested to done, by kind", ["kind"], buckets=SLOW, registry=r)
        self.pass_seconds = Histogram("clustercore_reconcile_pass_seconds", "Each reconcile pass",
                                      buckets=FAST, registry=r)
        self.decision_seconds = Histogram("clustercore_scheduler_decision_seconds",
                                          "Each scheduler decision (filter and weigh)", buckets=FAST, registry=r)
        for outcome in FENCING_EVENTS.values():
            self.fencing.labels(outcome)
        for outcome in MIGRATION_EVENTS.values():
            self.migrations.labels(outcome)
        self._lock = threading.Lock()
        self._hosts = _Tracked(store, HOSTS) if store is not None else None
        self._placements = _Tracked(store, PLACEMENTS) if store is not None else None
        self._operations = _Tracked(store, OPERATIONS) if store is not None else None
        self._events: Watch | None = store.watch(EVENTS) if store is not None else None
        self._stats = Informer(store, STATS) if store is not None else None
        self._labelled: dict[str, set[str]] = {}  # host -> workloads with a gauge

    def attach(self, manager: Any) -> None:
        """Follow a :class:`~clustercore.manager.Manager`: its passes, decisions, leadership."""
        manager.on_pass.append(self.observe_pass)
        manager.on_pass.append(lambda seconds, leading: self.sync())
        manager.on_decision.append(self.observe_decision)
        self.leading = lambda: bool(manager.leading)

    def observe_pass(self, seconds: float, leading: bool = True) -> None:
        self.pass_seconds.observe(seconds)

    def observe_decision(self, seconds: float) -> None:
        self.decision_seconds.observe(seconds)

    def render(self) -> bytes:
        """The exposition (text format 0.0.4) after following the store."""
        self.sync()
        return generate_latest(self.registry)

    def sync(self) -> None:
        with self._lock:
            self.leader.set(1 if self.leading is None or self.leading() else 0)
            if self._hosts is None or self._placements is None or self._operations is None:
                return
            for before, after in self._hosts.sync():
                if before is not None and (before.state, after.state) == (HostState.FENCING.value,
                                                                          HostState.DOWN.value):
                    self.fencing_seconds.observe(max(after.since - before.since, 0.0))
            for before, after in self._placements.sync():
                if (before is not None and (before.state, after.state) == (PlacementState.MIGRATING.value,
                                                                           PlacementState.RUNNING.value)
                        and after.data.get("host") != before.data.get("host")):
                    self.migration_seconds.observe(max(after.seen - before.seen, 0.0))
            for before, after in self._operations.sync():
                if _done(after.state) and (before is None or not _done(before.state)):
                    created = float(after.data.get("created") or after.since)
                    self.operation_seconds.labels(str(after.data.get("kind"))).observe(max(after.since - created, 0.0))
            self._count_events()
            self._gauges()
            self._loads()

    def _loads(self) -> None:
        """The hosts' measured loads (``stats/``), gauges removed with their keys."""
        assert self._stats is not None
        changed, deleted = self._stats.sync()
        for host in deleted | changed:
            for workload in self._labelled.pop(host, set()):
                self.workload_cpu.remove(workload, host)
            if host in deleted:
                self.host_cpu.remove(host)
                for kind in ("used", "available"):
                    self.host_memory.remove(host, kind)
        for host in changed:
            try:
                load = Load.from_dict(json.loads(self._stats.items[host].value))
            except (ValueError, ValidationError):
                continue
            self.host_cpu.labels(host).set(load.cpu)
            self.host_memory.labels(host, "used").set(load.memory_used)
            self.host_memory.labels(host, "available").set(load.memory_available)
            for workload, usage in load.workloads.items():
                self.workload_cpu.labels(workload, host).set(usage.cpu)
            self._labelled[host] = set(load.workloads)

    def _gauges(self) -> None:
        assert self._hosts is not None and self._placements is not None and self._operations is not None
        hosts = self._hosts.count(lambda d: (str(d["state"]),))
        for state in HostState:
            self.hosts.labels(state.value).set(hosts.get((state.value,), 0))
        placements = self._placements.count(lambda d: (str(d["state"]),))
        for pstate in PlacementState:
            self.placements.labels(pstate.value).set(placements.get((pstate.value,), 0))
        operations = self._operations.count(lambda d: (str(d.get("kind")), str(d["state"])))
        for kind in KINDS:
            for ostate in OpState:
                self.operations.labels(kind, ostate.value).set(operations.get((kind, ostate.value), 0))

    def _count_events(self) -> None:
        assert self.store is not None and self._events is not None
        try:
            changes = self._events.get(0)
        except Compacted:
            log.warning("the metrics' event watch fell behind the store's history: counting from now")
            self._events.cancel()
            self._events = self.store.watch(EVENTS)
            return
        for change in changes:
            if change.type is not EventType.PUT:
                continue
            try:
                kind = json.loads(change.kv.value).get("kind")
            except (ValueError, AttributeError):
                continue
            if kind in FENCING_EVENTS:
                self.fencing.labels(FENCING_EVENTS[kind]).inc()
            elif kind in MIGRATION_EVENTS:
                self.migrations.labels(MIGRATION_EVENTS[kind]).inc()

    def close(self) -> None:
        for tracked in (self._hosts, self._placements, self._operations):
            if tracked is not None:
                tracked.informer.close()
        if self._stats is not None:
            self._stats.close()
        if self._events is not None:
            self._events.cancel()


def _done(state: str) -> bool:
    try:
        return OpState(state).done
    except ValueError:
        return False
