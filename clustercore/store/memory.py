"""The embedded default store: etcd's semantics (see :mod:`clustercore.store.base`) in one
process, with no server.

Keys live in a dict beside a sorted list of keys (sortedcontainers' ``SortedList``: a
new key costs a logarithm, not a shift of every later key), so a prefix listing is a range,
not a scan. The last ``history`` events are kept for watches to start from. Each watch has
a queue of its own, filled as a write commits: watches are filed by their prefix's first
path segment (``hosts/``, ``heartbeats/``...), so a write costs a lookup per event and
reaches only the watches it concerns, whatever number of watches others hold. A watch that
falls more than ``history`` events behind is told :class:`~clustercore.errors.Compacted`,
as etcd tells a compacted one. Watchers are woken through one condition variable. Leases
expire lazily: every public call first deletes the keys of leases whose time is up on the
injected clock (one revision per expired lease).
"""

from __future__ import annotations

import builtins
import threading
import time
from collections import deque
from collections.abc import Sequence

from sortedcontainers import SortedList  # type: ignore[import-untyped]

from clustercore.clock import Clock, SystemClock
from clustercore.errors import Compacted, Conflict, KeyNotFound, LeaseNotFound
from clustercore.store.base import Check, Delete, EventType, KeyValue, Put, StoreEvent


class MemoryWatch:
    def __init__(self, store: MemoryStore, prefix: str, queue: deque[StoreEvent]) -> None:
        self._store = store
        self.prefix = prefix
        self.segment = segment(prefix)
        self.queue = queue  # events committed and not yet delivered
        self.lost: int | None = None  # the first revision dropped when the queue overflowed
        self.cancelled = False

    def get(self, timeout: float | None = 0.0) -> builtins.list[StoreEvent]:
        return self._store._drain(self, timeout)

    def cancel(self) -> None:
        self._store._cancel(self)

    def __repr__(self) -> str:
        return f"MemoryWatch(prefix={self.prefix!r}, queued={len(self.queue)})"


def segment(text: str) -> str | None:
    """The first path segment of a key or prefix (``hosts/`` of ``hosts/h1``); None for a
    prefix without one (``config``, ``""``), which may match keys of any segment."""
    i = text.find("/")
    return text[:i + 1] if i >= 0 else None


class MemoryStore:
    def __init__(self, clock: Clock | None = None, history: int = 20_000) -> None:
        self.clock = clock or SystemClock()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._data: dict[str, KeyValue] = {}
        self._keys = SortedList()
        self._revision = 0
        self._history: deque[StoreEvent] = deque(maxlen=history)
        self._leases: dict[int, tuple[float, float]] = {}  # id -> (ttl, expiry)
        self._lease_keys: dict[int, set[str]] = {}
        self._next_lease = 1
        self._watches: dict[str | None, list[MemoryWatch]] = {}  # by their prefix's segment

    def __repr__(self) -> str:
        return f"MemoryStore(keys={len(self._data)}, revision={self._revision})"

    @property
    def revision(self) -> int:
        with self._lock:
            self._expire()
            return self._revision

    # ------------------------------------------------------------------ reads

    def get(self, key: str) -> KeyValue | None:
        with self._lock:
            self._expire()
            return self._data.get(key)

    def list(self, prefix: str) -> list[KeyValue]:
        with self._lock:
            self._expire()
            data = self._data
            keys = self._keys.irange(prefix, prefix + "\U0010ffff", (True, False)) if prefix else self._keys
            return [data[k] for k in keys]

    # ------------------------------------------------------------------ writes

    def put(self, key: str, value: bytes, *, expect: int | None = None, lease: int = 0) -> int:
        checks = [] if expect is None else [Check(key, expect)]
        return self.txn(checks, [Put(key, value, lease)])

    def delete(self, key: str, *, expect: int | None = None) -> int:
        with self._lock:
            self._expire()
            if expect is None and key not in self._data:
                raise KeyNotFound(key)
            if expect == 0:
                raise Conflict(key, 0, self._data[key].mod_revision if key in self._data else 0)
            checks = [] if expect is None else [Check(key, expect)]
            return self.txn(checks, [Delete(key)])

    def txn(self, checks: Sequence[Check], ops: Sequence[Put | Delete]) -> int:
        """Checks first (Conflict, nothing changed); then every op at one new revision. A
        transaction whose ops change nothing (only deletes of absent keys) leaves the
        revision as it was."""
        with self._lock:
            self._expire()
            for check in checks:
                current = self._data.get(check.key)
                actual = current.mod_revision if current is not None else 0
                if actual != check.revision:
                    raise Conflict(check.key, check.revision, actual)
            for op in ops:
                if isinstance(op, Put) and op.lease and op.lease not in self._leases:
                    raise LeaseNotFound(op.lease)
            revision = self._revision + 1
            events = []
            for op in ops:
                event = self._apply(op, revision)
                if event is not None:
                    events.append(event)
            if events:
                self._revision = revision
                self._history.extend(events)
                self._deliver(events)
                self._changed.notify_all()
            return self._revision

    def _deliver(self, events: builtins.list[StoreEvent]) -> None:
        watches, general = self._watches, self._watches.get(None, ())
        limit = self._history.maxlen or 0
        for event in events:
            key = event.kv.key
            i = key.find("/")
            for group in (watches.get(key[:i + 1]) if i >= 0 else None, general):
                for watch in group or ():
                    if key.startswith(watch.prefix) and watch.lost is None:
                        watch.queue.append(event)
                        if len(watch.queue) > limit:  # too far behind: it must list again
                            watch.lost = watch.queue[0].kv.mod_revision
                            watch.queue.clear()

    def _apply(self, op: Put | Delete, revision: int) -> StoreEvent | None:
        old = self._data.get(op.key)
        if old is not None and old.lease:
            self._lease_keys.get(old.lease, set()).discard(op.key)
        if isinstance(op, Delete):
            if old is None:
                return None
            del self._data[op.key]
            self._keys.remove(op.key)
            return StoreEvent(EventType.DELETE, KeyValue(op.key, b"", old.create_revision, revision, 0, 0))
        if old is None:
            self._keys.add(op.key)
            kv = KeyValue(op.key, op.value, revision, revision, 1, op.lease)
        else:
            kv = KeyValue(op.key, op.value, old.create_revision, revision, old.version + 1, op.lease)
        self._data[op.key] = kv
        if op.lease:
            self._lease_keys.setdefault(op.lease, set()).add(op.key)
        return StoreEvent(EventType.PUT, kv)

    # ------------------------------------------------------------------ leases

    def grant(self, ttl: float) -> int:
        with self._lock:
            self._expire()
            lease = self._next_lease
            self._next_lease += 1
            self._leases[lease] = (ttl, self.clock.now() + ttl)
            self._lease_keys[lease] = set()
            return lease

    def keepalive(self, lease: int) -> None:
        with self._lock:
            self._expire()
            if lease not in self._leases:
                raise LeaseNotFound(lease)
            ttl, _ = self._leases[lease]
            self._leases[lease] = (ttl, self.clock.now() + ttl)

    def revoke(self, lease: int) -> None:
        with self._lock:
            self._expire()
            self._end_lease(lease)

    def _end_lease(self, lease: int) -> None:
        if self._leases.pop(lease, None) is None:
            return
        keys = sorted(self._lease_keys.pop(lease, ()))
        if keys:
            self.txn([], [Delete(k) for k in keys])

    def _expire(self) -> None:
        if not self._leases:
            return
        now = self.clock.now()
        for lease in [lease for lease, (_, expiry) in self._leases.items() if expiry <= now]:
            self._end_lease(lease)

    # ------------------------------------------------------------------ watches

    def watch(self, prefix: str, start_revision: int | None = None) -> MemoryWatch:
        with self._lock:
            self._expire()
            queue: deque[StoreEvent] = deque()
            if start_revision is not None and start_revision <= self._revision:
                oldest = self._history[0].kv.mod_revision if self._history else self._revision + 1
                if start_revision < oldest:
                    raise Compacted(start_revision, oldest)
                queue.extend(e for e in self._history if e.kv.mod_revision >= start_revision
                             and e.kv.key.startswith(prefix))
            watch = MemoryWatch(self, prefix, queue)
            self._watches.setdefault(watch.segment, []).append(watch)
            return watch

    def _cancel(self, watch: MemoryWatch) -> None:
        with self._changed:
            if not watch.cancelled:
                watch.cancelled = True
                group = self._watches.get(watch.segment, [])
                group[:] = [w for w in group if w is not watch]
                watch.queue.clear()
            self._changed.notify_all()

    def _pending(self, watch: MemoryWatch) -> builtins.list[StoreEvent]:
        if watch.lost is not None:
            oldest = self._history[0].kv.mod_revision if self._history else self._revision + 1
            raise Compacted(watch.lost, oldest)
        events = list(watch.queue)
        watch.queue.clear()
        return events

    def _drain(self, watch: MemoryWatch, timeout: float | None) -> builtins.list[StoreEvent]:
        with self._changed:
            self._expire()
            if watch.cancelled:
                return []
            events = self._pending(watch)
            deadline = None if timeout is None else time.monotonic() + timeout
            while not events and not watch.cancelled:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._changed.wait_for(lambda: watch.cancelled or bool(watch.queue) or watch.lost is not None,
                                       left)
                self._expire()
                events = [] if watch.cancelled else self._pending(watch)
            return events

    def close(self) -> None:
        with self._changed:
            for group in self._watches.values():
                for watch in group:
                    watch.cancelled = True
            self._watches.clear()
            self._changed.notify_all()
