"""The state store contract: keys, byte values, revisions, compare-and-swap, watch, leases.

The semantics are etcd v3's, so that the embedded memory store and the etcd store are
interchangeable:

* The store has one revision counter. Every successful write (put, delete, transaction)
  increments it by exactly one; every key written by that write gets that revision as its
  ``mod_revision``.
* ``put(key, value, expect=N)`` is compare-and-swap: it succeeds only when the key's
  ``mod_revision`` is ``N``; ``expect=0`` means "the key must not exist"; ``expect=None``
  writes unconditionally. A lost comparison raises :class:`~clustercore.errors.Conflict`
  with both revisions: nothing is ever silently overwritten.
* ``watch(prefix, start_revision)`` delivers every change under the prefix with a revision
  at or after ``start_revision`` (or from now on when it is ``None``), in revision order.
  Resuming from history that was discarded raises :class:`~clustercore.errors.Compacted`.
* A lease lives ``ttl`` seconds after its grant or last keep-alive; when it expires, every key
  attached to it is deleted (and watchers see the deletions).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import attrs


class KeyValue(NamedTuple):
    """One stored key. ``version`` counts puts since creation; ``lease`` is 0 when none.

    A named tuple: holding only strings, bytes and integers, it is soon left alone by the
    garbage collector, so the keys of a hundred thousand hosts cost a collection nothing."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


class EventType(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@attrs.frozen
class StoreEvent:
    """A change seen by a watch. For DELETE, ``kv.value`` is empty and ``kv.mod_revision`` is
    the revision of the deletion."""

    type: EventType
    kv: KeyValue


@attrs.frozen
class Put:
    """A put inside a transaction (see :meth:`Store.txn`)."""

    key: str
    value: bytes
    lease: int = 0


@attrs.frozen
class Delete:
    """A delete inside a transaction; deleting an absent key is a no-op there."""

    key: str


@attrs.frozen
class Check:
    """A transaction guard: the key's ``mod_revision`` must equal ``revision`` (0 = absent)."""

    key: str
    revision: int


@runtime_checkable
class Watch(Protocol):
    def get(self, timeout: float | None = 0.0) -> list[StoreEvent]:
        """Events that arrived since the last call. ``timeout=0`` never blocks; a positive
        timeout waits up to that long for at least one event; ``None`` waits forever."""

    def cancel(self) -> None:
        """Stop watching; later ``get`` calls return nothing. Idempotent."""


@runtime_checkable
class Store(Protocol):
    @property
    def revision(self) -> int:
        """The store's current revision (0 for a new store)."""

    def get(self, key: str) -> KeyValue | None:
        """The key, or None when absent."""

    def list(self, prefix: str) -> list[KeyValue]:
        """Every key starting with ``prefix``, sorted by key."""

    def put(self, key: str, value: bytes, *, expect: int | None = None, lease: int = 0) -> int:
        """Write ``value``; with ``expect``, only if the key's mod_revision equals it
        (0 = must be absent), else raise Conflict. Returns the new store revision."""

    def delete(self, key: str, *, expect: int | None = None) -> int:
        """Remove the key (KeyNotFound when absent; Conflict when ``expect`` does not
        match). Returns the new store revision."""

    def txn(self, checks: Sequence[Check], ops: Sequence[Put | Delete]) -> int:
        """All ``ops`` atomically, if every check holds, as one revision; otherwise raise
        Conflict for the first failing check and change nothing. Returns the new revision."""

    def watch(self, prefix: str, start_revision: int | None = None) -> Watch:
        """Watch changes under ``prefix`` from ``start_revision`` (None = from now on)."""

    def grant(self, ttl: float) -> int:
        """A new lease living ``ttl`` seconds; returns its id (never 0)."""

    def keepalive(self, lease: int) -> None:
        """Renew the lease for another ttl; LeaseNotFound when it expired or never existed."""

    def revoke(self, lease: int) -> None:
        """End the lease now, deleting its keys. Revoking an unknown lease is a no-op."""

    def close(self) -> None:
        """Release connections and cancel watches."""
