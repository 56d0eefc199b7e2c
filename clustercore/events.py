"""The event log: every state change, with its reason, queryable afterwards.

Events live in the store under ``events/`` so that every manager (and a manager that
takes over) sees the same history. A host transition and its event are written in one
transaction: there is never a change without its record. The log keeps the newest
``retain`` events and prunes the rest in batches.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from typing import Any

import attrs

from clustercore.errors import CorruptEntry, ValidationError
from clustercore.model import Reader
from clustercore.store.base import Delete, Put, Store
from clustercore.values import dumps

log = logging.getLogger(__name__)

PREFIX = "events/"


@attrs.frozen
class Event:
    """One thing that happened. ``subject`` is ``host/NAME``, ``workload/NAME``,
    ``volume/NAME`` or ``cluster``; ``kind`` says what (a host event such as ``heartbeat-missed``, or
    ``placed``, ``migrated``, ``conflict``...); ``old``/``new`` are states when it is a
    change of state. ``revision`` is the store revision it was written at (0 before)."""

    time: float
    subject: str
    kind: str
    reason: str = ""
    old: str = ""
    new: str = ""
    revision: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time, "subject": self.subject, "kind": self.kind, "reason": self.reason,
                "old": self.old, "new": self.new}

    @classmethod
    def from_dict(cls, data: object, revision: int = 0) -> Event:
        r = Reader("event", data)
        event = cls(r.number("time"), r.string("subject"), r.string("kind"), r.string("reason", ""),
                    r.string("old", ""), r.string("new", ""), revision)
        r.done()
        return event

    def __str__(self) -> str:
        change = f" {self.old or '(none)'} -> {self.new or '(none)'}" if self.old or self.new else ""
        return f"{self.subject}: {self.kind}{change}" + (f" ({self.reason})" if self.reason else "")


class EventLog:
    """Writes events (alone, or as a ``Put`` inside another transaction) and reads them."""

    def __init__(self, store: Store, retain: int = 10_000) -> None:
        self.store = store
        self.retain = retain
        self._writer = os.urandom(3).hex()
        self._counter = itertools.count()
        self._since_prune = 0

    def put_op(self, event: Event) -> Put:
        """The store write that records ``event`` (to add to a transaction)."""
        key = f"{PREFIX}{event.time:017.6f}-{self._writer}-{next(self._counter):09d}"
        self._since_prune += 1
        return Put(key, dumps(event.to_dict(), sort_keys=False))

    def record(self, event: Event) -> None:
        op = self.put_op(event)
        self.store.put(op.key, op.value)
        log.debug("event %s", event)
        self.maybe_prune()

    def due(self) -> bool:
        """A tenth of ``retain`` events written since the last prune."""
        return self._since_prune >= max(1, self.retain // 10)

    def maybe_prune(self) -> None:
        if self.due():
            self.prune()

    def prune(self) -> None:
        """Delete the oldest events beyond ``retain`` (it lists them all: the controller runs
        it off its pass); one that fails is due again at once."""
        counted = self._since_prune
        entries = self.store.list(PREFIX)
        excess = len(entries) - self.retain
        if excess > 0:  # oldest first, a hundred per transaction (etcd allows 128 operations)
            oldest = [kv.key for kv in sorted(entries, key=lambda kv: kv.mod_revision)[:excess]]
            for i in range(0, len(oldest), 100):
                self.store.txn([], [Delete(key) for key in oldest[i:i + 100]])
        self._since_prune -= counted  # those written meanwhile count towards the next

    def query(self, subject: str | None = None, kind: str | None = None, since: float | None = None) -> list[Event]:
        """Events in the order they were written, filtered. Corrupt entries are logged and skipped."""
        out = []
        for kv in sorted(self.store.list(PREFIX), key=lambda kv: kv.mod_revision):
            try:
                event = Event.from_dict(json.loads(kv.value), kv.mod_revision)
            except (ValueError, ValidationError) as exc:
                log.warning("%s", CorruptEntry(kv.key, str(exc)))
                continue
            if subject is not None and event.subject != subject:
                continue
            if kind is not None and event.kind != kind:
                continue
            if since is not None and event.time < since:
                continue
            out.append(event)
        return out
