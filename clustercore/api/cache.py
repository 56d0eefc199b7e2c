"""The API's reads: hosts, workloads, placements and operations followed by watches.

One informer per prefix (:class:`~clustercore.state.Informer`: a listing once, then only
changes), synced at each read, so a ``GET /hosts`` over 10,000 hosts reads from the store
only what changed since the last one, never the whole range; every manager, leader or
follower, answers from its own. Entries are decoded when they change, and the JSON of
each host and workload is kept with the revisions it was made from, so a listing joins
bytes it made before. An entry that cannot be decoded is left out (the managers report
it as corrupt).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from clustercore.errors import UnknownHost, UnknownWorkload, ValidationError
from clustercore.model import Host, Placement, Workload
from clustercore.operations import PREFIX as OPERATIONS
from clustercore.operations import Operation
from clustercore.state import HOSTS, PLACEMENTS, WORKLOADS, Informer, Versioned
from clustercore.store.base import Store

from . import views

log = logging.getLogger(__name__)
T = TypeVar("T")


class _Followed(Generic[T]):
    """Decoded values under one prefix, kept current by an informer."""

    def __init__(self, store: Store, prefix: str, parse: Callable[[object], T]) -> None:
        self.informer = Informer(store, prefix)
        self.parse = parse
        self.items: dict[str, Versioned[T]] = {}
        self.order: list[str] | None = None  # names sorted, None after an addition or removal

    def sync(self) -> set[str]:
        """Apply what changed: the names that changed or went (empty when nothing did)."""
        changed, deleted = self.informer.sync()
        for name in deleted:
            self.items.pop(name, None)
            self.order = None
        for name in changed:
            kv = self.informer.items[name]
            try:
                value = self.parse(json.loads(kv.value))
            except (ValueError, ValidationError, TypeError, RecursionError) as exc:
                log.debug("%s%s left out: %s", self.informer.prefix, name, exc)
                if self.items.pop(name, None) is not None:
                    self.order = None
                continue
            if name not in self.items:
                self.order = None
            self.items[name] = Versioned(value, kv.mod_revision)
        return changed | deleted

    def names(self) -> list[str]:
        if self.order is None:
            self.order = sorted(self.items)
        return self.order


class ReadCache:
    """Thread-safe: every read syncs the informers and answers under one lock."""

    def __init__(self, store: Store) -> None:
        self._lock = threading.Lock()
        self.hosts = _Followed(store, HOSTS, Host.from_dict)
        self.workloads = _Followed(store, WORKLOADS, Workload.from_dict)
        self.placements = _Followed(store, PLACEMENTS, Placement.from_dict)
        self.operations = _Followed(store, OPERATIONS, Operation.from_dict)
        self._by_host: dict[str, tuple[str, ...]] = {}
        self._open: dict[str, Operation] = {}  # the operations not done yet, by id
        self._host_json: dict[str, tuple[object, bytes]] = {}
        self._workload_json: dict[str, tuple[object, bytes]] = {}
        self._hosts_body: bytes | None = None  # the last listing, while nothing in it changed
        self._workloads_body: bytes | None = None

    def _sync(self) -> None:
        hosts, workloads = self.hosts.sync(), self.workloads.sync()
        for op_id in self.operations.sync():
            found = self.operations.items.get(op_id)
            if found is None or found.value.state.done:
                self._open.pop(op_id, None)
            else:
                self._open[op_id] = found.value
        placements = self.placements.sync()
        if placements:
            by_host: dict[str, list[str]] = {}
            for name in self.placements.names():
                by_host.setdefault(self.placements.items[name].value.host, []).append(name)
            self._by_host = {host: tuple(names) for host, names in by_host.items()}
        if hosts or placements:
            self._hosts_body = None
        if workloads or placements:
            self._workloads_body = None

    # ------------------------------------------------------------------ hosts

    def hosts_json(self) -> bytes:
        """``{"hosts": [...]}``, by name."""
        with self._lock:
            self._sync()
            if self._hosts_body is not None:
                return self._hosts_body
            parts = []
            cache, items, by_host = self._host_json, self.hosts.items, self._by_host
            for name in self.hosts.names():
                current = items[name]
                key = (current.revision, by_host.get(name, ()))
                cached = cache.get(name)
                if cached is None or cached[0] != key:
                    cached = key, _dumps(views.host_view(current.value, key[1]))
                    cache[name] = cached
                parts.append(cached[1])
            if len(cache) > len(items):
                for gone in set(cache) - set(items):
                    del cache[gone]
            self._hosts_body = body = b'{"hosts":[' + b",".join(parts) + b"]}"
        return body

    def host(self, name: str) -> dict[str, Any]:
        with self._lock:
            self._sync()
            found = self.hosts.items.get(name)
            if found is None:
                raise UnknownHost(name)
            return views.host_view(found.value, self._by_host.get(name, ()), full=True)

    def workloads_on(self, host: str) -> tuple[str, ...]:
        with self._lock:
            self._sync()
            return self._by_host.get(host, ())

    def host_value(self, name: str) -> Host:
        with self._lock:
            self._sync()
            found = self.hosts.items.get(name)
            if found is None:
                raise UnknownHost(name)
            return found.value

    # ------------------------------------------------------------------ workloads

    def workloads_json(self) -> bytes:
        with self._lock:
            self._sync()
            if self._workloads_body is not None:
                return self._workloads_body
            parts = []
            cache, items, placements = self._workload_json, self.workloads.items, self.placements.items
            for name in self.workloads.names():
                current = items[name]
                placed = placements.get(name)
                key = (current.revision, placed.revision if placed is not None else 0)
                cached = cache.get(name)
                if cached is None or cached[0] != key:
                    view = views.workload_view(current.value, placed.value if placed is not None else None)
                    cached = key, _dumps(view)
                    cache[name] = cached
                parts.append(cached[1])
            if len(cache) > len(items):
                for gone in set(cache) - set(items):
                    del cache[gone]
            self._workloads_body = body = b'{"workloads":[' + b",".join(parts) + b"]}"
        return body

    def workload(self, name: str) -> dict[str, Any]:
        with self._lock:
            self._sync()
            found = self.workloads.items.get(name)
            if found is None:
                raise UnknownWorkload(name)
            placed = self.placements.items.get(name)
            return views.workload_view(found.value, placed.value if placed is not None else None)

    def placement(self, name: str) -> Placement | None:
        with self._lock:
            self._sync()
            placed = self.placements.items.get(name)
            return placed.value if placed is not None else None

    def placements_list(self) -> list[dict[str, Any]]:
        with self._lock:
            self._sync()
            return [self.placements.items[n].value.to_dict() for n in self.placements.names()]

    def placed(self) -> tuple[list[Host], list[tuple[Workload, str]]]:
        """Every host, and every placed workload with its host (for capacity)."""
        with self._lock:
            self._sync()
            hosts = [v.value for v in self.hosts.items.values()]
            workloads = self.workloads.items
            placed = [(workloads[n].value, p.value.host) for n, p in self.placements.items.items() if n in workloads]
            return hosts, placed

    # ------------------------------------------------------------------ operations

    def operations_list(self) -> list[dict[str, Any]]:
        """Every operation in the store, oldest first."""
        with self._lock:
            self._sync()
            ops = sorted((v.value for v in self.operations.items.values()), key=lambda o: (o.created, o.id))
            return [views.operation_view(op) for op in ops]

    def open_operation(self, target: str, kinds: frozenset[str]) -> Operation | None:
        """An operation of one of ``kinds`` on ``target`` not done yet, if any (from those
        open only: the finished ones pile up in the store)."""
        with self._lock:
            self._sync()
            for op in self._open.values():
                if op.target == target and op.kind in kinds:
                    return op
        return None

    def close(self) -> None:
        for followed in (self.hosts, self.workloads, self.placements, self.operations):
            followed.informer.close()


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
