"""Observe: what the store says now, turned into a frozen :class:`View` for one pass.

Three informers (hosts, heartbeats, placements) follow the store by watch, so a pass
decodes only what changed. A host is *seen* at ``now`` when its heartbeat key gets a new
revision (the controller's clock, not the host's) and carries the host's credential
(:mod:`clustercore.credentials`; others are ignored with an event); a changed report
updates the topology (networks and storage it reaches) and a new boot id marks the host
*rebooted* (recovery then asks the host what still runs before failing anything). A host
whose heartbeat key is gone (its lease expired, or it never beat) is in ``lease_gone``
since this manager first saw it so (its own clock: self-fencing counts from there,
:mod:`clustercore.watchdog`); a report whose watchdog changed is noted for the leader to
record in the host (``watchdogs``). The hosts not Up are kept as ``unsettled``, and the
names of hosts changed or removed since the controller last asked as ``changed`` (what it
re-arms heartbeat deadlines from). Placements
that became Failed, whoever wrote them, are collected for recovery, and those in flight
(Starting, Migrating) kept for settling. Followers observe too,
so a new leader's caches are warm and its heartbeats timed.

A manager takes heartbeats as they arrive, on a thread of its own (:meth:`Observer.listen`):
a host beating with the report it sent before only has its time noted there, so 10,000
heartbeats a second cost the pass nothing. Whatever needs judging (a new or changed
report, a refused or corrupt one, a heartbeat key gone) is left for the pass. Without the
listener (a bare :class:`~clustercore.Cluster` stepped by hand) the pass takes them all.

A corrupt host entry is not dropped: it is listed in ``corrupt`` (shown as CORRUPT by
``manager status``) with one ``host-corrupt`` event per bad revision, and the last good
value read of it stays in the view, so its heartbeats are still judged, it is still fenced
and its workloads are still restarted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Set
from types import MappingProxyType

import attrs

from clustercore import credentials
from clustercore.config import ClusterConfig
from clustercore.deadlines import Deadlines
from clustercore.errors import CorruptEntry
from clustercore.events import Event, EventLog
from clustercore.model import Host, HostReport, HostState, Placement, PlacementState
from clustercore.placements import in_flight
from clustercore.plugins import HostProbe
from clustercore.state import CONFIG_KEY, HEARTBEATS, HOSTS, PLACEMENTS, ClusterState, Informer, Versioned
from clustercore.store.base import KeyValue, Store
from clustercore.topology import Topology

log = logging.getLogger(__name__)


@attrs.frozen
class View:
    """One pass's look at the cluster (read-only mappings over the observer's caches)."""

    now: float
    config: ClusterConfig
    hosts: Mapping[str, Versioned[Host]]
    last_seen: Mapping[str, float]
    reports: Mapping[str, HostReport]
    corrupt: Mapping[str, str]
    lease_gone: Mapping[str, float] = attrs.field(factory=dict)
    unsettled: Set[str] = attrs.field(factory=frozenset)  # hosts not Up (live: a pass's commits show)


class Observer:
    def __init__(self, store: Store, state: ClusterState, events: EventLog) -> None:
        self.state = state
        self.events = events
        self.topology = Topology()
        self.hosts: dict[str, Versioned[Host]] = {}
        self.last_seen: dict[str, float] = {}
        self.reports: dict[str, HostReport] = {}
        self.corrupt: dict[str, str] = {}  # host name -> problem
        self.reboots: set[str] = set()  # hosts seen rebooting, acted on by the leader
        self.failed: set[str] = set()  # placements Failed, by anyone
        self.in_flight: dict[str, Versioned[Placement]] = {}  # placements Starting or Migrating
        self.flights: set[str] = set()  # placements that entered, changed in or left flight, for settle
        self._placed: dict[str, set[str]] = {}  # host -> workloads placed there
        self._placed_on: dict[str, str] = {}  # workload -> its placement's host
        self.lease_gone: dict[str, float] = {}  # host -> when first seen without a heartbeat key
        self.watchdogs: set[str] = set()  # hosts whose reported watchdog changed, for the leader to record
        self._host_informer = Informer(store, HOSTS)
        self._beat_informer = Informer(store, HEARTBEATS)
        self._placement_informer = Informer(store, PLACEMENTS)
        self._credential_informer = Informer(store, credentials.KEY)
        self._config_informer = Informer(store, CONFIG_KEY)  # the config, read from a watch, not each pass
        self._refused: dict[str, bytes] = {}  # host -> the heartbeat value last refused
        self.probes: dict[str, HostProbe] = {}  # what flavors found each host to reach
        self._required: tuple[frozenset[str], frozenset[str]] | None = None
        self._report_bytes: dict[str, bytes] = {}
        self._told: dict[str, int] = {}  # key -> revision whose corruption was recorded
        self.unsettled: set[str] = set()  # hosts whose state is not Up
        self.changed: set[str] = set()  # hosts changed or removed since the controller last took them
        self.beats_lock = threading.Lock()  # the heartbeat informer and what it feeds: the listener or the pass
        #: Each Up host's end of heartbeat grace (armed by the controller), pushed back by
        #: every heartbeat taken, so an Up host that keeps beating never comes due.
        self.grace: Deadlines[str] = Deadlines()
        self.grace_limit: float | None = None  # the grace the controller armed with
        self.woken: set[str] = set()  # hosts not Up whose heartbeat changed: the controller looks again
        self._later: dict[str, float] = {}  # heartbeats (or their absence) for the pass to judge -> noticed when
        self.beats_taken = 0  # heartbeat changes taken, by the listener or a pass
        self.listen_seconds = 0.0  # CPU time the listener spent taking them

    def sync(self, now: float, errors: list[str]) -> View:
        # A set keeps the table of its largest size: one emptied (after a mass join, say) is
        # made anew, else every pass going over it would scan its old size.
        if not self.unsettled:
            self.unsettled = set()
        if not self.watchdogs:
            self.watchdogs = set()
        if not self.reboots:
            self.reboots = set()
        self._config_informer.sync()
        config = self.state.config_of(self._config_informer.items.get("")).value
        self._tell_corrupt(CONFIG_KEY, now, "config-corrupt", "cluster", "the last good config stays in force")
        if self._required is None:
            self.topology.require(config.required_networks, config.required_storage)
        self._sync_beats(now, errors)  # first: a heartbeat key the listener saw go is gone since then
        self._sync_hosts(now, errors)
        self._sync_placements(errors)
        return View(now, config, MappingProxyType(self.hosts), MappingProxyType(self.last_seen),
                    MappingProxyType(self.reports), MappingProxyType(self.corrupt),
                    MappingProxyType(self.lease_gone), self.unsettled)

    def take_changed(self) -> set[str]:
        """The hosts changed (in the store or by this manager) or removed since the last call."""
        changed, self.changed = self.changed, set()
        return changed

    def _index(self, host: Host) -> None:
        if host.state is HostState.UP:
            self.unsettled.discard(host.name)
        else:
            self.unsettled.add(host.name)
        self.changed.add(host.name)

    def require(self, networks: frozenset[str], storage: frozenset[str]) -> None:
        """What every working host must reach (the probes reconciler's answer)."""
        self._required = (networks, storage)
        self.topology.require(networks, storage)

    def probed(self, name: str, probe: HostProbe) -> None:
        """A flavor probed host ``name``: its answer replaces the host's reports."""
        if self.probes.get(name) != probe:
            self.probes[name] = probe
            self.topology.set_reachable(name, probe.networks, probe.storage)

    def committed(self, host: Host, revision: int) -> None:
        """This manager wrote ``host`` at ``revision``: the same pass sees it at once."""
        self.hosts[host.name] = Versioned(host, revision)
        self.corrupt.pop(host.name, None)
        self._index(host)
        self.topology.add_host(host)

    def stored(self, host: Host, revision: int) -> None:
        """A staged ``host`` (shown already by :meth:`committed`) is now stored at ``revision``."""
        self.hosts[host.name] = Versioned(host, revision)

    def _tell_corrupt(self, key: str, now: float, kind: str, subject: str, consequence: str) -> None:
        problem = self.state.corrupt.get(key)
        revision = self.state.corrupt_revision.get(key, 0)
        if problem is None or self._told.get(key) == revision:
            return
        self._told[key] = revision
        log.error("corrupt store entry %r: %s (%s)", key, problem, consequence)
        try:
            self.events.record(Event(now, subject, kind, f"{key}: {problem}; {consequence}"))
        except Exception as exc:  # a follower, or the store is away: told again later
            del self._told[key]
            log.debug("cannot record %s: %s", kind, exc)

    def _sync_hosts(self, now: float, errors: list[str]) -> None:
        changed, deleted = self._host_informer.sync()
        for name in deleted:
            self.hosts.pop(name, None)
            self.corrupt.pop(name, None)
            self.lease_gone.pop(name, None)
            self.topology.remove_host(name)
            self.unsettled.discard(name)
            self.changed.add(name)
        beating = self._beat_informer.items
        for name in changed:
            if name not in beating:
                self.lease_gone.setdefault(name, now)
            kv = self._host_informer.items[name]
            mine = self.hosts.get(name)
            if mine is not None and mine.revision == kv.mod_revision and name not in self.corrupt:
                continue  # this manager's own commit, taken in already (committed())
            try:
                current = self.state.decode_host(kv)
            except CorruptEntry as exc:
                errors.append(str(exc))
                self.corrupt[name] = exc.problem
                last = self.hosts.get(name)
                if last is not None:  # keep judging it by its last good value
                    self.hosts[name] = Versioned(last.value, kv.mod_revision)
                    self.changed.add(name)
                self._tell_corrupt(HOSTS + name, now, "host-corrupt", f"host/{name}",
                                   "judged by its last good value" if last else "not judged until it is fixed")
                continue
            self.corrupt.pop(name, None)
            self.hosts[name] = current
            self._index(current.value)
            self.topology.add_host(current.value)

    def listen(self, now: Callable[[], float], stop: threading.Event, poll: float = 0.05) -> None:
        """Take heartbeats as they arrive until ``stop`` (a manager's thread): the time of a
        host beating with its previous report is noted here; the rest waits for the pass."""
        while not stop.is_set():
            started = time.thread_time()
            try:
                with self.beats_lock:
                    taken = self._take_beats(now())
            except Exception as exc:  # the store is away: the pass says so; listen again later
                log.debug("taking heartbeats: %s", exc)
                taken = 0
            self.listen_seconds += time.thread_time() - started
            if not taken:
                stop.wait(poll)

    def _take_beats(self, now: float) -> int:
        """The heartbeat changes since the last take (the lock held): a known report from a
        host not missing its key only notes ``now``; anything else is left for the pass."""
        changed, gone = self._beat_informer.sync()
        items, report_bytes, lease_gone, last_seen, later = self._beat_informer.items, self._report_bytes, \
            self.lease_gone, self.last_seen, self._later
        grace, limit, unsettled, woken = self.grace, self.grace_limit, self.unsettled, self.woken
        for name in changed:  # the common case, a host beating with the same report, kept cheap
            if name not in later and name not in lease_gone and report_bytes.get(name) == items[name].value:
                last_seen[name] = now
                if limit is not None and name in grace:
                    grace.arm(name, now + limit)
            else:
                later.setdefault(name, now)
            if name in unsettled:
                woken.add(name)
        for name in gone:
            later.setdefault(name, now)
            if name in unsettled:
                woken.add(name)
        self.beats_taken += len(changed) + len(gone)
        return len(changed) + len(gone)

    def _sync_beats(self, now: float, errors: list[str]) -> None:
        with self.beats_lock:
            changed, _ = self._credential_informer.sync()
            for name in changed:
                self._report_bytes.pop(name, None)  # judged again under the new credential
            self._take_beats(now)
            later, self._later = self._later, {}
            for name, when in later.items():
                kv = self._beat_informer.items.get(name)
                if kv is None:
                    self.lease_gone.setdefault(name, when)
                else:
                    self.lease_gone.pop(name, None)
                    self._judge_beat(name, kv, when, errors)

    def _judge_beat(self, name: str, kv: KeyValue, when: float, errors: list[str]) -> None:
        """A heartbeat whose report is new to this manager, heard at ``when``."""
        value = kv.value
        stored = self._credential_informer.items.get(name)
        if self._report_bytes.get(name) != value:
            try:
                report = self.state.report(kv)
            except CorruptEntry as exc:
                errors.append(str(exc))
                log.error("%s", exc)
                if stored is None:
                    self.last_seen[name] = when  # a host without a credential is heard as before
                return
            if not credentials.accepts(stored.value.decode(errors="replace") if stored else None, report.credential):
                self._refuse(name, value, when)
                return
            self._report_bytes[name] = value
            old = self.reports.get(name)
            self.reports[name] = report
            if old is None or old.watchdog != report.watchdog:
                self.watchdogs.add(name)
            if old is not None and old.boot_id and report.boot_id != old.boot_id:
                self.reboots.add(name)
            if name not in self.probes:  # a probe's answer is the truth once there is one
                self.topology.set_reachable(name, report.networks, report.storage)
        self.last_seen[name] = when
        if self.grace_limit is not None and name in self.grace:
            self.grace.arm(name, when + self.grace_limit)

    def _refuse(self, name: str, value: bytes, now: float) -> None:
        if self._refused.get(name) == value:
            return
        self._refused[name] = value
        why = "without the host's credential: ignored (a second agent for this host, or another writer)"
        log.warning("heartbeat of %s %s", name, why)
        try:
            self.events.record(Event(now, f"host/{name}", "heartbeat-refused", f"a heartbeat {why}"))
        except Exception as exc:  # a follower, or the store is away
            log.debug("cannot record heartbeat-refused: %s", exc)

    def placed_count(self, host: str) -> int:
        """How many workloads are placed on ``host``, as of the last pass."""
        return len(self._placed.get(host, ()))

    def placed_on(self, host: str) -> list[str]:
        """The workloads placed on ``host`` (any placement state), as of the last pass."""
        return sorted(self._placed.get(host, ()))

    def _place(self, name: str, host: str | None) -> None:
        old = self._placed_on.pop(name, None)
        if old is not None:
            self._placed[old].discard(name)
        if host is not None:
            self._placed_on[name] = host
            self._placed.setdefault(host, set()).add(name)

    def _sync_placements(self, errors: list[str]) -> None:
        changed, deleted = self._placement_informer.sync()
        items = self._placement_informer.items
        for name in changed:
            try:
                current = self.state.decode_placement(items[name])
            except CorruptEntry as exc:
                errors.append(str(exc))
                continue
            if self._placed_on.get(name) != current.value.host:
                self._place(name, current.value.host)
            if current.value.state is PlacementState.FAILED:
                self.failed.add(name)
            if in_flight(current.value):
                self.in_flight[name] = current
                self.flights.add(name)
            elif self.in_flight.pop(name, None) is not None:
                self.flights.add(name)
        self.failed -= deleted
        for name in deleted:
            self._place(name, None)
            if self.in_flight.pop(name, None) is not None:
                self.flights.add(name)
