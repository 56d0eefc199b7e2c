"""Every store transaction of the control plane, in one place.

Each write is one transaction: compare-and-swap on the revision that was read, and the
event that tells why, together, so the store never holds a change without its reason nor a
reason without its change. Hosts change through :meth:`Writer.host_transition` (the host
state machine, :mod:`clustercore.lifecycle`), placements through :meth:`Writer.placement`
(the placement state machine, :mod:`clustercore.placements`). A lost compare-and-swap
raises :class:`~clustercore.errors.Conflict` and writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import attrs

from clustercore import credentials, placements
from clustercore.config import ClusterConfig
from clustercore.errors import Conflict, HostExists
from clustercore.events import Event, EventLog
from clustercore.lifecycle import HostEvent, transition
from clustercore.model import Host, HostReport, HostState, NonOperationalReason, Placement, Workload
from clustercore.network import LogicalNetwork
from clustercore.placements import PlacementEvent
from clustercore.secrets import Secrets
from clustercore.state import (
    CONFIG_KEY,
    HEARTBEATS,
    HOSTS,
    PLACEMENTS,
    VOLUMES,
    WORKLOADS,
    ClusterState,
    Versioned,
    encode,
)
from clustercore.storage import StorageDomain, Volume
from clustercore.store.base import Check, Delete, Put, Store

log = logging.getLogger(__name__)


@attrs.frozen
class Decision:
    """A host transition to commit: ``base`` is the host to transition (it may carry new facts)."""

    base: Host
    event: HostEvent
    reason: str
    non_operational: NonOperationalReason | None = None


@attrs.frozen
class Planned:
    """A host transition ready to commit: what to check, what to write, and what it makes."""

    current: Versioned[Host]
    decision: Decision
    new: Host
    event: Event
    checks: tuple[Check, ...]
    ops: tuple[Put | Delete, ...]
    failed: tuple[str, ...] = ()  # placements failed with it (the host goes Down)


#: etcd's default ``--max-txn-ops``: a transaction of more operations is refused.
TXN_OPS = 128


@attrs.frozen
class Committed:
    """A stored host transition: the new host, its event, the revision, the placements that failed."""

    host: Host
    event: Event
    revision: int
    failed: tuple[str, ...] = ()


class Writer:
    """``secrets`` seal the fence device passwords of every host it writes
    (:mod:`clustercore.secrets`)."""

    def __init__(self, store: Store, state: ClusterState, events: EventLog, secrets: Secrets | None = None) -> None:
        self.store = store
        self.state = state
        self.events = events
        self.secrets = secrets or Secrets()

    # ------------------------------------------------------------------ hosts

    def register(self, host: Host, now: float, credential: str = "") -> Host:
        """A new host, with the digest of its heartbeat credential (if one was issued)."""
        host = self.secrets.seal_host(host)
        event = Event(now, f"host/{host.name}", "registered", "", "", str(host.state))
        key = HOSTS + host.name
        ops: list[Put | Delete] = [Put(key, encode(host)), self.events.put_op(event)]
        if credential:
            ops.append(Put(credentials.KEY + host.name, credentials.digest(credential).encode()))
        try:
            self.store.txn([Check(key, 0)], ops)
        except Conflict:
            raise HostExists(host.name) from None
        log.info("%s", event)
        return host

    def update_host(self, current: Versioned[Host], new: Host, now: float, reason: str) -> Host:
        """A host's new definition (same state), compare-and-swap, with its event; the host
        as stored (its passwords sealed)."""
        new = self.secrets.seal_host(new)
        event = Event(now, f"host/{new.name}", "updated", reason)
        self.store.txn([Check(HOSTS + new.name, current.revision)], [Put(HOSTS + new.name, encode(new)),
                                                                      self.events.put_op(event)])
        log.info("%s", event)
        return new

    def plan_transition(self, current: Versioned[Host], decision: Decision, now: float,
                        remove: bool = False) -> Planned:
        """``decision`` with its event, ready to commit; a host that goes Down takes its
        placements with it in the same transaction (whatever ran there died: a host that
        comes back at once cannot make its dead workloads look alive). ``remove`` deletes
        the host and its heartbeat."""
        old = current.value
        new = transition(decision.base, decision.event, now, decision.reason, decision.non_operational)
        event = Event(now, f"host/{old.name}", decision.event.value, decision.reason, str(old.state), str(new.state))
        key = HOSTS + old.name
        checks = [Check(key, current.revision)]
        ops: list[Put | Delete] = [Delete(key) if remove else Put(key, encode(new)), self.events.put_op(event)]
        if remove:
            ops.extend(Delete(k + old.name) for k in (HEARTBEATS, credentials.KEY) if self.store.get(k + old.name))
        dead: list[str] = []
        if new.state is HostState.DOWN and old.state is not HostState.DOWN:
            for p, failed in placements.fail_host(self.state.placements(), old.name, now,
                                                  f"{old.name} is down: {decision.reason}"):
                checks.append(Check(PLACEMENTS + failed.workload, p.revision))
                ops.append(Put(PLACEMENTS + failed.workload, encode(failed)))
                dead.append(failed.workload)
        return Planned(current, decision, new, event, tuple(checks), tuple(ops), tuple(dead))

    def host_transition(self, current: Versioned[Host], decision: Decision, now: float,
                        remove: bool = False) -> Committed:
        """Store ``decision`` (:meth:`plan_transition`) in a transaction of its own."""
        planned = self.plan_transition(current, decision, now, remove)
        revision = self.store.txn(planned.checks, planned.ops)
        log.info("%s", planned.event)
        return Committed(planned.new, planned.event, revision, planned.failed)

    def host_transitions(self, planned: Sequence[Planned], done: Callable[[Planned, int | Conflict], None]) -> None:
        """Commit many transitions in as few transactions as the store takes (at most
        :data:`TXN_OPS` operations each); ``done`` is told each one's revision, or its
        Conflict. A transaction that loses a compare-and-swap is committed again one
        transition at a time, so a host changed meanwhile costs only its own."""
        chunk: list[Planned] = []
        size = 0
        for item in [*planned, None]:
            if item is not None and size + len(item.ops) + len(item.checks) <= TXN_OPS:
                chunk.append(item)
                size += len(item.ops) + len(item.checks)
                continue
            if chunk:
                self._commit_together(chunk, done)
            chunk, size = ([item], len(item.ops) + len(item.checks)) if item is not None else ([], 0)

    def _commit_together(self, chunk: Sequence[Planned], done: Callable[[Planned, int | Conflict], None]) -> None:
        try:
            revision = self.store.txn([c for p in chunk for c in p.checks], [o for p in chunk for o in p.ops])
        except Conflict as exc:
            if len(chunk) == 1:
                done(chunk[0], exc)
                return
            for item in chunk:
                try:
                    revision = self.store.txn(item.checks, item.ops)
                except Conflict as exc:
                    done(item, exc)
                    continue
                log.info("%s", item.event)
                done(item, revision)
            return
        for item in chunk:
            log.info("%s", item.event)
            done(item, revision)

    def host_rebooted(self, host: str, now: float, dead: Mapping[str, int]) -> tuple[list[str], list[str]]:
        """``host`` booted since its last heartbeat and no longer runs the placements in
        ``dead`` (workload -> the revision that was asked about): each fails in its own
        transaction with its event, unless it changed since (it is decided again later).
        Returns (failed, errors)."""
        failed, errors = [], []
        for current, new in placements.fail_host(self.state.placements(), host, now,
                                                 f"{host} rebooted (new boot id)"):
            if dead.get(new.workload) != current.revision:
                continue
            try:
                self.placement(current, new, Event(now, f"workload/{new.workload}", "host-rebooted",
                                                   f"{host} rebooted: {new.workload} died with it", host, ""))
            except Conflict as exc:
                errors.append(f"{new.workload} on rebooted {host}: {exc}")
                continue
            failed.append(new.workload)
        return failed, errors

    # ------------------------------------------------------------------ placements

    def placement(self, current: Versioned[Placement] | None, new: Placement | None,
                  event: Event | None = None, name: str = "",
                  volumes: Sequence[tuple[Versioned[Volume], Volume]] = ()) -> int:
        """Replace the placement read as ``current`` (None: there was none) by ``new`` (None:
        delete it), with ``event``, and each volume read as the first of a pair by the
        second (a storage migration moved it), all or nothing; returns the new revision."""
        workload = new.workload if new is not None else current.value.workload if current is not None else name
        key = PLACEMENTS + workload
        ops: list[Put | Delete] = [Put(key, encode(new)) if new is not None else Delete(key)]
        checks = [Check(key, current.revision if current is not None else 0)]
        for before, after in volumes:
            checks.append(Check(VOLUMES + after.name, before.revision))
            ops.append(Put(VOLUMES + after.name, encode(after)))
        if event is not None:
            ops.append(self.events.put_op(event))
        revision = self.store.txn(checks, ops)
        if event is not None:
            log.info("%s", event)
        return revision

    def place(self, current: Versioned[Placement] | None, event: PlacementEvent, now: float, reason: str = "",
              recorded: Event | None = None, *, workload: str = "", host: str | None = None,
              target: str | None = None, keep_target: bool = False,
              volumes: Sequence[tuple[Versioned[Volume], Volume]] = ()) -> Versioned[Placement] | None:
        """Apply a placement ``event`` (the state machine checks it) and store the result
        with ``recorded``; the new placement and its revision (None once deleted)."""
        before = current.value if current is not None else None
        new = placements.transition(before, event, now, reason, workload=workload, host=host, target=target,
                                    keep_target=keep_target)
        revision = self.placement(current, new, recorded, name=workload, volumes=volumes)
        return None if new is None else Versioned(new, revision)

    # ------------------------------------------------------------------ workloads

    def define(self, workload: Workload, now: float) -> None:
        self.store.txn([Check(WORKLOADS + workload.name, 0)], [
            Put(WORKLOADS + workload.name, encode(workload)),
            self.events.put_op(Event(now, f"workload/{workload.name}", "defined"))])

    def define_and_place(self, workload: Workload, host: str, now: float) -> Versioned[Placement]:
        """A new workload's definition and its Starting placement on ``host``, together
        (Conflict when either key exists already)."""
        placement = placements.transition(None, PlacementEvent.PLACE, now, workload=workload.name, host=host)
        assert placement is not None
        revision = self.store.txn(
            [Check(WORKLOADS + workload.name, 0), Check(PLACEMENTS + workload.name, 0)],
            [Put(WORKLOADS + workload.name, encode(workload)), Put(PLACEMENTS + workload.name, encode(placement)),
             self.events.put_op(Event(now, f"workload/{workload.name}", "defined"))])
        return Versioned(placement, revision)

    def update_workload(self, current: Versioned[Workload], new: Workload, now: float, reason: str) -> None:
        self.store.txn([Check(WORKLOADS + new.name, current.revision)], [
            Put(WORKLOADS + new.name, encode(new)),
            self.events.put_op(Event(now, f"workload/{new.name}", "updated", reason))])

    def forget_workload(self, name: str, revision: int, now: float) -> None:
        self.store.txn([Check(WORKLOADS + name, revision)], [
            Delete(WORKLOADS + name), self.events.put_op(Event(now, f"workload/{name}", "deleted"))])

    # ------------------------------------------------------------------ storage and networks

    def put_object(self, prefix: str, kind: str, obj: StorageDomain | Volume | LogicalNetwork, now: float,
               revision: int = 0) -> None:
        """Create (``revision`` 0) or replace a storage domain, volume or logical network, with its event."""
        key = prefix + obj.name
        self.store.txn([Check(key, revision)], [Put(key, encode(obj)), self.events.put_op(
            Event(now, f"{kind}/{obj.name}", "defined" if not revision else "updated"))])

    def delete_object(self, prefix: str, kind: str, name: str, revision: int, now: float) -> None:
        self.store.txn([Check(prefix + name, revision)], [Delete(prefix + name), self.events.put_op(
            Event(now, f"{kind}/{name}", "deleted"))])

    # ------------------------------------------------------------------ cluster

    def configure(self, config: ClusterConfig, revision: int) -> None:
        self.store.put(CONFIG_KEY, encode(config), expect=revision)

    def credential(self, host: str, credential: str) -> None:
        """Replace ``host``'s heartbeat credential (its agent must be given the new one)."""
        self.store.put(credentials.KEY + host, credentials.digest(credential).encode())

    def heartbeat(self, host: str, report: HostReport, lease: int = 0) -> None:
        self.store.put(HEARTBEATS + host, encode(report), lease=lease)

    def upgrade_status(self, key: str, data: bytes) -> None:
        self.store.put(key, data)

    def record(self, event: Event) -> None:
        self.events.record(event)
