"""The cluster's state in the store: which key holds what, encoded how.

Key layout (values are JSON)::

    config/cluster        ClusterConfig
    hosts/NAME            Host (its status first, then its definition: Host.to_json)
    workloads/NAME        Workload
    placements/NAME       Placement of workload NAME
    heartbeats/NAME       HostReport, rewritten by the host at each beat
    storage/NAME          StorageDomain;  volumes/NAME  Volume;  networks/NAME  LogicalNetwork
    credentials/NAME      digest of the host's heartbeat credential
    events/...            Event (see clustercore.events)

Reads decode each entry once per revision (a cache keyed by ``mod_revision``), so a
reconcile pass over 10,000 hosts decodes only what changed. A value that cannot be decoded
is logged as a :class:`~clustercore.errors.CorruptEntry`, listed in ``corrupt`` and skipped
by listings; reading it by name raises the error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import attrs

from clustercore.config import ClusterConfig
from clustercore.errors import Compacted, CorruptEntry, UnknownHost, UnknownWorkload, ValidationError
from clustercore.model import Host, HostReport, Placement, Workload
from clustercore.network import LogicalNetwork
from clustercore.storage import StorageDomain, Volume
from clustercore.store.base import EventType, KeyValue, Store, Watch
from clustercore.values import dumps

log = logging.getLogger(__name__)

CONFIG_KEY = "config/cluster"
HOSTS = "hosts/"
WORKLOADS = "workloads/"
PLACEMENTS = "placements/"
HEARTBEATS = "heartbeats/"
STORAGE = "storage/"
VOLUMES = "volumes/"
NETWORKS = "networks/"
STATS = "stats/"  # each host's measured load (clustercore.statistics), on the leader's lease
_NAMED = (HOSTS, WORKLOADS, PLACEMENTS, STORAGE, VOLUMES, NETWORKS)

T = TypeVar("T")


class _Encodable(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


@attrs.frozen
class Versioned(Generic[T]):
    """A decoded value and the store revision it was read at (for compare-and-swap)."""

    value: T
    revision: int


def encode(obj: _Encodable) -> bytes:
    """The stored form of ``obj``: a host's :meth:`~clustercore.model.Host.to_json`, anything
    else's ``to_dict()`` as JSON."""
    return obj.to_json() if isinstance(obj, Host) else dumps(obj.to_dict())


class ClusterState:
    """Typed, cached reads of the store. Writes go through the store itself (with
    ``encode``), always compare-and-swap on the revision that was read."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, Versioned[Any]] = {}
        self.corrupt: dict[str, str] = {}
        self.corrupt_revision: dict[str, int] = {}
        self._config: Versioned[ClusterConfig] = Versioned(ClusterConfig(), 0)

    def _decode(self, kv: KeyValue, prefix: str, parse: Callable[[object], Any]) -> Versioned[Any]:
        cached = self._cache.get(kv.key)
        if cached is not None and cached.revision == kv.mod_revision:
            return cached
        try:
            obj = parse(json.loads(kv.value))
        except (ValueError, ValidationError, TypeError, RecursionError) as exc:
            self.corrupt_revision[kv.key] = kv.mod_revision
            raise CorruptEntry(kv.key, str(exc)) from exc
        name = getattr(obj, "workload", None) if prefix == PLACEMENTS else getattr(obj, "name", None)
        if prefix in _NAMED and kv.key != prefix + str(name):
            self.corrupt_revision[kv.key] = kv.mod_revision
            raise CorruptEntry(kv.key, f"the value names {name!r}")
        self.corrupt.pop(kv.key, None)
        self.corrupt_revision.pop(kv.key, None)
        versioned = Versioned(obj, kv.mod_revision)
        self._cache[kv.key] = versioned
        return versioned

    def _list(self, prefix: str, parse: Callable[[object], Any]) -> dict[str, Versioned[Any]]:
        out = {}
        n = len(prefix)
        for kv in self.store.list(prefix):
            try:
                out[kv.key[n:]] = self._decode(kv, prefix, parse)
            except CorruptEntry as exc:
                if self.corrupt.get(kv.key) != exc.problem:
                    log.error("%s (skipped)", exc)
                    self.corrupt[kv.key] = exc.problem
        return out

    def _get(self, prefix: str, name: str, parse: Callable[[object], Any]) -> Versioned[Any] | None:
        kv = self.store.get(prefix + name)
        return None if kv is None else self._decode(kv, prefix, parse)

    def decode_host(self, kv: KeyValue) -> Versioned[Host]:
        """One ``hosts/`` entry decoded (cached per revision); CorruptEntry when it is not a host."""
        try:
            return self._decode(kv, HOSTS, Host.from_dict)
        except CorruptEntry as exc:
            self.corrupt[kv.key] = exc.problem
            raise

    def hosts(self) -> dict[str, Versioned[Host]]:
        return self._list(HOSTS, Host.from_dict)

    def host(self, name: str) -> Versioned[Host]:
        found = self._get(HOSTS, name, Host.from_dict)
        if found is None:
            raise UnknownHost(name)
        return found

    def workloads(self) -> dict[str, Versioned[Workload]]:
        return self._list(WORKLOADS, Workload.from_dict)

    def workload(self, name: str) -> Versioned[Workload]:
        found = self._get(WORKLOADS, name, Workload.from_dict)
        if found is None:
            raise UnknownWorkload(name)
        return found

    def placements(self) -> dict[str, Versioned[Placement]]:
        return self._list(PLACEMENTS, Placement.from_dict)

    def placement(self, workload: str) -> Versioned[Placement] | None:
        return self._get(PLACEMENTS, workload, Placement.from_dict)

    def decode_placement(self, kv: KeyValue) -> Versioned[Placement]:
        """One ``placements/`` entry decoded (cached per revision); CorruptEntry when it is not one."""
        return self._decode(kv, PLACEMENTS, Placement.from_dict)

    def storage_domains(self) -> dict[str, Versioned[StorageDomain]]:
        return self._list(STORAGE, StorageDomain.from_dict)

    def volumes(self) -> dict[str, Versioned[Volume]]:
        return self._list(VOLUMES, Volume.from_dict)

    def networks(self) -> dict[str, Versioned[LogicalNetwork]]:
        return self._list(NETWORKS, LogicalNetwork.from_dict)

    @staticmethod
    def report(kv: KeyValue) -> HostReport:
        """Decode one heartbeat entry (the controller decodes only when its bytes change)."""
        try:
            return HostReport.from_dict(json.loads(kv.value)) if kv.value else HostReport()
        except (ValueError, ValidationError) as exc:
            raise CorruptEntry(kv.key, str(exc)) from exc

    def config(self) -> Versioned[ClusterConfig]:
        """The cluster's config; while the stored one cannot be decoded, the last good one
        read (the defaults if none was) stays in force and the problem is in ``corrupt``."""
        return self.config_of(self.store.get(CONFIG_KEY))

    def config_of(self, kv: KeyValue | None) -> Versioned[ClusterConfig]:
        """:meth:`config` from ``kv``, the config entry as read (an informer's copy)."""
        try:
            found = None if kv is None else self._decode(kv, "config/", ClusterConfig.from_dict)
        except CorruptEntry as exc:
            if self.corrupt.get(CONFIG_KEY) != exc.problem:
                log.error("%s (the last good config stays in force)", exc)
                self.corrupt[CONFIG_KEY] = exc.problem
            return Versioned(self._config.value, self.corrupt_revision.get(CONFIG_KEY, self._config.revision))
        if found is None:
            found = Versioned(ClusterConfig(), 0)
        self._config = found
        return found


class Informer:
    """A local copy of every key under ``prefix``, kept current by a watch (the Kubernetes
    informer pattern): one listing, then only changes. ``sync()`` applies what arrived and
    says which names changed or vanished; when the watch's history was compacted away it
    lists again, so nothing is ever missed."""

    def __init__(self, store: Store, prefix: str) -> None:
        self.store = store
        self.prefix = prefix
        self.items: dict[str, KeyValue] = {}
        self._watch: Watch | None = None

    def sync(self) -> tuple[set[str], set[str]]:
        """(changed, deleted) names since the last sync."""
        if self._watch is None:
            return self._relist()
        try:
            events = self._watch.get(0)
        except Compacted:
            log.info("watch on %s fell behind the store's history; listing again", self.prefix)
            return self._relist()
        changed: set[str] = set()
        deleted: set[str] = set()
        n = len(self.prefix)
        items = self.items
        for event in events:
            kv = event.kv
            name = kv.key[n:]
            current = items.get(name)
            if current is not None and current.mod_revision >= kv.mod_revision:
                continue  # already seen through the listing
            if event.type is EventType.DELETE:
                if current is not None:
                    del items[name]
                    deleted.add(name)
                    changed.discard(name)
            else:
                items[name] = kv
                changed.add(name)
                deleted.discard(name)
        return changed, deleted

    def _relist(self) -> tuple[set[str], set[str]]:
        if self._watch is not None:
            self._watch.cancel()
        self._watch = self.store.watch(self.prefix, self.store.revision + 1)
        n = len(self.prefix)
        listed = {kv.key[n:]: kv for kv in self.store.list(self.prefix)}
        changed = {name for name, kv in listed.items() if self.items.get(name) != kv}
        deleted = set(self.items) - set(listed)
        self.items = listed
        return changed, deleted

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
