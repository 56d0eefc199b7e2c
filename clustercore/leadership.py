"""One leader among several managers, on a store lease, with a fencing token.

Each manager :meth:`Elector.campaign`\\ s: it grants a lease of ``ttl`` seconds and tries to
create the ``leader`` key on it. Whoever creates it leads; its **token** is the key's
revision, which only grows from one leadership to the next. The leader keeps its lease
alive (:meth:`Elector.renew`); if it cannot (crash, partition), the lease expires, the key
vanishes and another manager's campaign succeeds.

Two guards keep a deposed leader from acting:

* :class:`GuardedStore` adds ``Check("leader", token)`` to every write the manager makes,
  so the store itself rejects a late write of a deposed leader (:class:`NotLeader`),
  whatever the manager believes;
* :meth:`Elector.may_act` is False once the lease may have expired by the manager's own
  clock (``renewed_at + ttl - margin``, timed from when the renewal was *sent*), so a
  partitioned leader stops starting actions outside the store (fencing, starting VMs)
  before anyone else can be elected.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from clustercore.errors import Conflict, KeyNotFound, LeaseNotFound, NotLeader, StoreError
from clustercore.store.base import Check, Delete, KeyValue, Put, Store, Watch

log = logging.getLogger(__name__)
LEADER_KEY = "leader"


def holder(kv: KeyValue) -> str:
    """The leader key's holder, printable whatever bytes it holds."""
    return kv.value.decode(errors="replace").encode("unicode_escape").decode()


def clear_stale(store: Store) -> str | None:
    """Delete the leader key if it is held without a lease (left by hand or by a tool: no
    manager could ever lead); returns the holder it cleared, None when there was nothing
    stale. A key on a lease is never touched: it expires with its lease."""
    kv = store.get(LEADER_KEY)
    if kv is None or kv.lease != 0:
        return None
    store.delete(LEADER_KEY, expect=kv.mod_revision)
    return holder(kv)


class Elector:
    def __init__(self, store: Store, name: str, ttl: float = 10.0, margin: float = 2.0,
                 monotonic: Callable[[], float] | None = None) -> None:
        self.store = store
        self.name = name
        self.ttl = ttl
        self.margin = margin
        self.monotonic = monotonic or time.monotonic
        self.lease = 0
        self.token = 0
        self.renewed_at = float("-inf")
        self._lock = threading.RLock()  # a manager renews from its own thread too
        self._stale_told = 0

    @property
    def leading(self) -> bool:
        return self.token != 0

    def leader(self) -> str | None:
        """Who leads now, by the store."""
        kv = self.store.get(LEADER_KEY)
        return holder(kv) if kv is not None else None

    def campaign(self) -> bool:
        """Try to become the leader; True when this manager leads (now or already)."""
        with self._lock:
            return self._campaign()

    def _campaign(self) -> bool:
        if self.leading:  # renewed within a third of the TTL (by the renewer): nothing to ask the store
            return True if self.monotonic() - self.renewed_at < self.ttl / 3 else self._renew()
        sent = self.monotonic()
        try:
            held = self.store.get(LEADER_KEY)
            if held is not None:  # one read while another leads, not a lease granted and revoked
                self._tell_stale(held)
                return False
            lease = self.store.grant(self.ttl)
        except StoreError as exc:
            log.warning("%s: cannot reach the store to campaign: %s", self.name, exc)
            return False
        try:
            self.token = self.store.put(LEADER_KEY, self.name.encode(), expect=0, lease=lease)
        except (Conflict, StoreError):
            self.store.revoke(lease)
            held = self.store.get(LEADER_KEY)
            if held is not None:
                self._tell_stale(held)
            return False
        self.lease, self.renewed_at = lease, sent
        log.warning("%s leads (token %d)", self.name, self.token)
        return True

    def _tell_stale(self, held: KeyValue) -> None:
        if held.lease == 0 and self._stale_told != held.mod_revision:
            self._stale_told = held.mod_revision
            log.error("%s: the leader key is held by %s with no lease: nobody can lead until it is cleared "
                      "(clustercore manager clear-leader)", self.name, holder(held))

    def renew(self) -> bool:
        """Keep the lease alive; False (and no longer leading) when it is gone."""
        with self._lock:
            return self._renew()

    def _renew(self) -> bool:
        if not self.leading:
            return False
        sent = self.monotonic()
        try:
            self.store.keepalive(self.lease)
            kv = self.store.get(LEADER_KEY)
            if kv is None or kv.mod_revision != self.token:
                raise LeaseNotFound(self.lease)
        except LeaseNotFound:
            self._deposed("its lease expired")
            return False
        except StoreError as exc:  # unreachable: still leading until the lease may have expired
            if not self.may_act():
                self._deposed(f"the store is unreachable ({exc})")
            return self.leading
        self.renewed_at = sent
        return True

    def may_act(self) -> bool:
        """Whether this manager may start an action now: it leads and its lease cannot have
        expired yet by its own clock."""
        return self.leading and self.monotonic() < self.renewed_at + self.ttl - self.margin

    def resign(self) -> None:
        with self._lock:
            if self.leading:
                self.store.revoke(self.lease)
                self._deposed("it resigned")

    def drop(self, why: str) -> None:
        """Stop leading without telling the store (it cannot be reached): the lease expires."""
        with self._lock:
            if self.leading:
                self._deposed(why)

    def _deposed(self, why: str) -> None:
        log.warning("%s no longer leads (token %d): %s", self.name, self.token, why)
        self.token = self.lease = 0
        self.renewed_at = float("-inf")


class GuardedStore:
    """A store whose every write holds only while ``elector`` leads with the same token.
    Reads, watches and leases pass through."""

    def __init__(self, store: Store, elector: Elector) -> None:
        self.inner = store
        self.elector = elector

    def _guard(self) -> Check:
        if not self.elector.leading:
            raise NotLeader(self.elector.name, 0)
        return Check(LEADER_KEY, self.elector.token)

    def txn(self, checks: Sequence[Check], ops: Sequence[Put | Delete]) -> int:
        guard = self._guard()
        try:
            return self.inner.txn([guard, *checks], ops)
        except Conflict as exc:
            if exc.key == LEADER_KEY:
                raise NotLeader(self.elector.name, guard.revision) from None
            raise

    def put(self, key: str, value: bytes, *, expect: int | None = None, lease: int = 0) -> int:
        return self.txn([] if expect is None else [Check(key, expect)], [Put(key, value, lease)])

    def delete(self, key: str, *, expect: int | None = None) -> int:
        if expect is None:
            if self.inner.get(key) is None:
                raise KeyNotFound(key)
            return self.txn([], [Delete(key)])
        if expect == 0:
            current = self.inner.get(key)
            raise Conflict(key, 0, current.mod_revision if current else 0)
        return self.txn([Check(key, expect)], [Delete(key)])

    @property
    def revision(self) -> int:
        return self.inner.revision

    def get(self, key: str) -> KeyValue | None:
        return self.inner.get(key)

    def list(self, prefix: str) -> list[KeyValue]:
        return self.inner.list(prefix)

    def watch(self, prefix: str, start_revision: int | None = None) -> Watch:
        return self.inner.watch(prefix, start_revision)

    def grant(self, ttl: float) -> int:
        return self.inner.grant(ttl)

    def keepalive(self, lease: int) -> None:
        self.inner.keepalive(lease)

    def revoke(self, lease: int) -> None:
        self.inner.revoke(lease)

    def close(self) -> None:
        self.inner.close()
