"""The host agent: what runs on (or for) each host and says it is alive.

Every ``interval`` seconds the agent writes the host's heartbeat (a
:class:`~clustercore.model.HostReport` with its boot id) on a store **lease** of ``ttl``
seconds, and keeps that lease alive once half of it is used (with the default TTL of 4
intervals: every other beat), as a Kubernetes kubelet
renews its node lease. When
the agent stops (the host hangs, loses power or its network), nobody renews the lease, so
the heartbeat key vanishes after ``ttl`` whichever manager leads: liveness lives in the
store, not in a manager's memory, and survives a manager failover.

``probe`` (optional) is asked before each beat; an agent that polls a host from outside
(as oVirt's engine polls VDSM) passes a probe of that host and beats only while it
answers. Each report carries the host's heartbeat credential (``credential``, issued at
registration: :mod:`clustercore.credentials`); without it the managers ignore the beats.
``clustercore agent --store URL --host NAME --credential-file F`` runs one; it stops at SIGTERM or
SIGINT (the ``stop`` event of :meth:`HostAgent.run`). The interval must be above 0 and the
TTL above the interval (ValidationError otherwise).

``watchdog`` (optional, :mod:`clustercore.watchdog`): armed before the first beat, fed
after each heartbeat written under a lease this agent knows alive, never otherwise; every
report says its timeout. :meth:`HostAgent.release` disarms it only once the leader has
recorded that the host has none (``run`` calls it when stopped): else it stays armed.
``--watchdog /dev/watchdog --watchdog-timeout 60`` on the command line.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

import attrs

from clustercore.errors import LeaseNotFound, StoreError, ValidationError
from clustercore.model import HostReport
from clustercore.state import HEARTBEATS, HOSTS, encode
from clustercore.store.base import Store
from clustercore.watchdog import Watchdog

log = logging.getLogger(__name__)
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_report() -> HostReport:
    """This machine's report: its kernel boot id (new after every boot)."""
    return HostReport(boot_id=BOOT_ID.read_text().strip())


class HostAgent:
    def __init__(self, store: Store, host: str, interval: float = 10.0, ttl: float | None = None,
                 report: Callable[[], HostReport] = boot_report, probe: Callable[[], bool] | None = None,
                 monotonic: Callable[[], float] = time.monotonic, credential: str = "",
                 watchdog: Watchdog | None = None) -> None:
        if not (math.isfinite(interval) and interval > 0):
            raise ValidationError("agent", "interval", "must be a finite number of seconds > 0", interval)
        ttl = ttl if ttl is not None else 4 * interval  # Kubernetes: renew every 10 s, 40 s lease
        if not (math.isfinite(ttl) and ttl > interval):
            raise ValidationError("agent", "ttl", f"must be above the interval ({interval:g} s)", ttl)
        self.store = store
        self.host = host
        self.interval = interval
        self.ttl = ttl
        self.report = report
        self.probe = probe
        self.monotonic = monotonic
        self.credential = credential  # issued at registration (clustercore.credentials)
        self.lease = 0
        self.kept_at = float("-inf")  # when the lease was last kept alive (monotonic)
        self.requests = 0  # store requests sent (heartbeats, keepalives, grants)
        self.watchdog = watchdog
        self.armed = watchdog is not None  # reported armed (False once release began)

    def beat(self) -> bool:
        """One heartbeat; False when the probe says the host is down or the store is away.
        The watchdog is fed only after a heartbeat stored under a lease surely alive."""
        if self.probe is not None and not self.probe():
            return False
        report = self.report()
        if self.armed and self.watchdog is not None:
            report = attrs.evolve(report, watchdog=self.watchdog.timeout)
        value = encode(attrs.evolve(report, credential=self.credential) if self.credential else report)
        try:
            for _ in range(2):
                now = self.monotonic()
                if not self.lease:
                    self.requests += 1
                    self.lease, self.kept_at = self.store.grant(self.ttl), now
                try:
                    if now - self.kept_at >= self.ttl / 2:  # half used: renew (at worst ttl/2 + interval after)
                        self.requests += 1
                        self.store.keepalive(self.lease)
                        self.kept_at = now
                    self.requests += 1
                    self.store.put(HEARTBEATS + self.host, value, lease=self.lease)
                    if self.watchdog is not None:  # the lease lives at least ttl from its last renewal's start
                        self.watchdog.feed(self.kept_at + self.ttl)
                    return True
                except LeaseNotFound:  # expired while we were away: a new one
                    self.lease = 0
        except StoreError as exc:
            log.warning("%s: heartbeat not written: %s", self.host, exc)
        return False

    def run(self, stop: threading.Event | None = None) -> None:
        """Beat every interval until ``stop``; then release the watchdog (if any)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            self.beat()
            stop.wait(self.interval)
        self.release()

    def release(self, timeout: float | None = None) -> bool:
        """Disarm the watchdog safely: report none, keep beating (and feeding) until the
        leader has recorded in the host that it has none, then disarm. False, with the
        watchdog left armed (the host will reset), when that does not happen within
        ``timeout`` (two TTLs by default): a manager may still count on it."""
        if self.watchdog is None:
            return True
        self.armed = False
        deadline = self.monotonic() + (2 * self.ttl if timeout is None else timeout)
        while True:
            if self.beat() and self._recorded_unarmed():
                self.watchdog.disarm()
                self.watchdog = None
                log.info("%s: watchdog disarmed, the cluster knows", self.host)
                return True
            if self.monotonic() >= deadline:
                log.error("%s: no manager recorded the watchdog's release: it stays armed and resets this host "
                          "within %g s", self.host, self.watchdog.timeout)
                return False
            threading.Event().wait(min(self.interval, 0.5))

    def _recorded_unarmed(self) -> bool:
        try:
            kv = self.store.get(HOSTS + self.host)
            return kv is not None and not json.loads(kv.value).get("watchdog")
        except (StoreError, ValueError, AttributeError) as exc:
            log.warning("%s: cannot read the host's record: %s", self.host, exc)
            return False
