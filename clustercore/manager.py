"""A manager process: one of several over a shared store, acting only while it leads.

``clustercore manager run --store etcd://h1:2379,h2:2379 --name m1`` campaigns for the
leadership (:mod:`clustercore.leadership`) and, while it leads, reconciles the cluster
every ``interval`` seconds with every write guarded by its token. Followers keep their
caches warm through the store's watches and campaign every pass, so one of them takes
over within the lease TTL when the leader dies. ``clustercore manager status`` shows the
leader, the hosts and their states. ``memory://`` runs a single embedded manager.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TextIO

from clustercore.clock import Clock, SystemClock
from clustercore.cluster import Cluster
from clustercore.leadership import LEADER_KEY, Elector, GuardedStore
from clustercore.plugins import Plugins
from clustercore.store.base import Store
from clustercore.store.memory import MemoryStore

log = logging.getLogger(__name__)


def open_store(url: str, prefix: str = "/clustercore/") -> Store:
    """``memory://`` or ``etcd://host:port,host:port``."""
    if url.startswith("memory://"):
        return MemoryStore()
    if url.startswith(("etcd://", "http://")):
        from clustercore.store.etcd import EtcdStore

        return EtcdStore(url, prefix=prefix)
    raise ValueError(f"unknown store URL {url!r} (memory:// or etcd://host:port,...)")


class Manager:
    def __init__(self, store: Store, name: str, ttl: float = 10.0, plugins: Plugins | None = None,
                 clock: Clock | None = None) -> None:
        self.name = name
        self.clock = clock or SystemClock()
        self.elector = Elector(store, name, ttl=ttl, margin=min(2.0, ttl / 4))
        # Moves and fence jobs run beside the loop, which keeps renewing the lease meanwhile.
        self.executor = ThreadPoolExecutor(4, thread_name_prefix=f"manager-{name}")
        self.cluster = Cluster(store=GuardedStore(store, self.elector), plugins=plugins, clock=self.clock,
                               executor=self.executor)
        self.cluster.controller.may_act = self.elector.may_act
        self._token = 0  # the leadership the controller last took over

    def step(self) -> bool:
        """Campaign (or renew), then reconcile if leading. True when this manager leads."""
        leading = self.elector.campaign()
        token = self.elector.token
        if leading and token != self._token:
            self._token = token
            self.cluster.controller.take_over(self.clock.now())
        report = self.cluster.step()
        for error in report.errors:
            log.debug("%s: %s", self.name, error)
        return leading

    def run(self, interval: float = 1.0, stop: threading.Event | None = None) -> None:
        """Step every ``interval`` seconds until ``stop``; the lease is renewed by a thread of
        its own every third of the TTL, so a long pass (thousands of hosts joining) does not
        lose the leadership."""
        stop = stop or threading.Event()
        renewer = threading.Thread(target=self.keep_leading, args=(stop,), name=f"renew-{self.name}", daemon=True)
        renewer.start()
        try:
            while not stop.is_set():
                self.step()
                stop.wait(interval)
        finally:
            stop.set()
            renewer.join()
            self.elector.resign()
            self.executor.shutdown(wait=False, cancel_futures=True)

    def keep_leading(self, stop: threading.Event) -> None:
        """Renew the lease every third of the TTL until ``stop`` (what :meth:`run` runs
        beside its passes; for callers that drive :meth:`step` themselves)."""
        while not stop.wait(self.elector.ttl / 3):
            if self.elector.leading:
                self.elector.renew()


def status(store: Store, out: TextIO) -> int:
    """Print the leader and every host with its state."""
    leader = store.get(LEADER_KEY)
    cluster = Cluster(store=store, plugins=Plugins(entry_points=False))
    out.write(f"leader: {leader.value.decode() if leader else '(none)'}"
              f"{f' (token {leader.mod_revision})' if leader else ''}\n")
    hosts = cluster.hosts()
    for name, host in sorted(hosts.items()):
        out.write(f"{name:20} {host.state.value:26} {host.reason}\n")
    out.write(f"{len(hosts)} host(s), {len(cluster.placements())} placement(s)\n")
    return 0
