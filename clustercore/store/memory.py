"""The embedded default store: etcd's semantics (see :mod:`clustercore.store.base`) in one
process, with no server.

Keys live in a dict beside a sorted list of keys, so a prefix listing is a bisect range,
not a scan. The last ``history`` events are kept for watches to resume from; a watch is a
cursor into that shared history, woken through one condition variable. Leases expire
lazily: every public call first deletes the keys of leases whose time is up on the
injected clock (one revision per expired lease).
"""

from __future__ import annotations

import bisect
import builtins
import threading
import time
from collections import deque
from collections.abc import Sequence

from clustercore.clock import Clock, SystemClock
from clustercore.errors import Compacted, Conflict, KeyNotFound, LeaseNotFound
from clustercore.store.base import Check, Delete, EventType, KeyValue, Put, StoreEvent


class MemoryWatch:
    def __init__(self, store: MemoryStore, prefix: str, next_revision: int) -> None:
        self._store = store
        self.prefix = prefix
        self._next = next_revision  # first revision not yet delivered
        self.cancelled = False

    def get(self, timeout: float | None = 0.0) -> builtins.list[StoreEvent]:
        return self._store._drain(self, timeout)

    def cancel(self) -> None:
        self.cancelled = True
        with self._store._changed:
            self._store._changed.notify_all()

    def __repr__(self) -> str:
        return f"MemoryWatch(prefix={self.prefix!r}, next={self._next})"


class MemoryStore:
    def __init__(self, clock: Clock | None = None, history: int = 20_000) -> None:
        self.clock = clock or SystemClock()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._data: dict[str, KeyValue] = {}
        self._keys: list[str] = []
        self._revision = 0
        self._history: deque[StoreEvent] = deque(maxlen=history)
        self._leases: dict[int, tuple[float, float]] = {}  # id -> (ttl, expiry)
        self._lease_keys: dict[int, set[str]] = {}
        self._next_lease = 1
        self._watches: list[MemoryWatch] = []

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
            keys = self._keys
            lo = bisect.bisect_left(keys, prefix)
            hi = bisect.bisect_left(keys, prefix + "\U0010ffff", lo) if prefix else len(keys)
            data = self._data
            return [data[k] for k in keys[lo:hi]]

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
                self._changed.notify_all()
            return self._revision

    def _apply(self, op: Put | Delete, revision: int) -> StoreEvent | None:
        old = self._data.get(op.key)
        if old is not None and old.lease:
            self._lease_keys.get(old.lease, set()).discard(op.key)
        if isinstance(op, Delete):
            if old is None:
                return None
            del self._data[op.key]
            del self._keys[bisect.bisect_left(self._keys, op.key)]
            return StoreEvent(EventType.DELETE, KeyValue(op.key, b"", old.create_revision, revision, 0, 0))
        if old is None:
            bisect.insort(self._keys, op.key)
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
            if start_revision is not None:
                oldest = self._history[0].kv.mod_revision if self._history else self._revision + 1
                if start_revision < oldest and start_revision <= self._revision:
                    raise Compacted(start_revision, oldest)
            watch = MemoryWatch(self, prefix, self._revision + 1 if start_revision is None else start_revision)
            self._watches.append(watch)
            return watch

    def _pending(self, watch: MemoryWatch) -> builtins.list[StoreEvent]:
        history = self._history
        if not history or watch._next > self._revision:
            return []
        oldest = history[0].kv.mod_revision
        if watch._next < oldest:
            raise Compacted(watch._next, oldest)
        events = []
        for event in reversed(history):  # newest first: the unseen part is at the end
            if event.kv.mod_revision < watch._next:
                break
            if event.kv.key.startswith(watch.prefix):
                events.append(event)
        events.reverse()
        watch._next = self._revision + 1
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
                self._changed.wait_for(lambda: watch.cancelled or watch._next <= self._revision, left)
                self._expire()
                events = [] if watch.cancelled else self._pending(watch)
            return events

    def close(self) -> None:
        with self._changed:
            for watch in self._watches:
                watch.cancelled = True
            self._watches.clear()
            self._changed.notify_all()
