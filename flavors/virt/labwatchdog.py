"""The lab's watchdog: a supervisor that power-cuts a lab host ``timeout`` seconds after
its agent last fed it, as a hardware watchdog resets a machine (:mod:`clustercore.watchdog`).

It powers any :class:`~flavors.virt.labbmc.PowerControlled` host (a libvirt lab host or a
podman one). Armed when made; ``fired_at`` (monotonic) says when it cut the power. The
supervisor is a thread of the lab's process: the host's own processes cannot stop it.

    dog = LabWatchdog(lab.host("lab1"), timeout=3)
    agent = HostAgent(store, "lab1", interval=0.5, ttl=2, watchdog=dog)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from flavors.virt.labbmc import PowerControlled

__all__ = ["LabWatchdog"]


class LabWatchdog:
    def __init__(self, host: PowerControlled, timeout: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.host, self._timeout, self.monotonic = host, timeout, monotonic
        self.deadline: float | None = monotonic() + timeout  # armed
        self.fired_at: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"watchdog-{host.name}", daemon=True)
        self._thread.start()

    @property
    def timeout(self) -> float:
        return self._timeout

    def feed(self, valid_until: float) -> None:
        with self._lock:
            if self.deadline is not None:
                self.deadline = min(self.monotonic(), valid_until) + self._timeout

    def disarm(self) -> None:
        with self._lock:
            self.deadline = None

    def close(self) -> None:
        """Stop supervising (the lab is torn down)."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            with self._lock:
                due = self.deadline is not None and self.monotonic() >= self.deadline
                if due:
                    self.deadline = None
            if due:
                self.fired_at = self.monotonic()
                self.host.power_off()  # a reset: the host stays off until powered on
