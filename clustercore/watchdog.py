"""Watchdog self-fencing: a host cut from the store resets itself, and the manager may
then count it as off without any fence device confirming it (Proxmox VE's watchdog-mux,
medik8s' self-node-remediation).

**On the host.** The agent (:class:`~clustercore.agent.HostAgent`) arms a
:class:`Watchdog` of ``timeout`` seconds and feeds it only after a heartbeat written under
a store lease it knows to be alive. Each feed says until when that lease surely lives
(``valid_until``: when the lease was last granted or kept alive, read *before* the
request, plus its TTL) and never keeps the host up beyond ``valid_until + timeout``. A
host that cannot reach the store stops feeding and its watchdog resets it at most
``timeout`` after its lease expired. Each heartbeat reports the armed timeout
(``HostReport.watchdog``); the leader records it in ``Host.watchdog`` (shown in the
host's status).

**On the manager** (:func:`self_fence_decision`, pure). A NonResponsive host that may
self-fence (``Host.self_fence``; by default only a host without a fence device: where a
BMC exists, its power status is the stronger proof) and whose agent reported an armed
watchdog counts as off (``HostEvent.SELF_FENCED``: Down, its HA workloads restart
elsewhere) once its heartbeat lease has expired *and* its watchdog timeout plus the
cluster's margin (``FencePolicy.watchdog_margin``) have passed since this manager first
saw the lease gone; never earlier. Why that is safe: the host's last feed came before its
lease expired at E, so its watchdog fired by E + timeout; this manager saw the lease gone
at t >= E (its own clock, so no clock skew between machines enters) and waits until
t + timeout + margin. A manager that takes over measures from its own first look.

**Disarming.** A stopping agent first reports no watchdog, waits until the leader has
recorded that in the host, and only then disarms (:meth:`HostAgent.release
<clustercore.agent.HostAgent.release>`). When no leader acknowledges it in time it stays
armed and the host resets: a host the managers count on to reset itself never keeps
running unseen. Known limit: a host whose agent restarts with a *longer* timeout is judged
by the longer one once any manager has seen one heartbeat of it.

Watchdogs: :class:`DeviceWatchdog` (``/dev/watchdog``: Linux ``softdog`` or a hardware
watchdog, with magic close) and, on the lab, a supervisor that power-cuts a lab host
(:class:`flavors.virt.labwatchdog.LabWatchdog`).
"""

from __future__ import annotations

import fcntl
import os
import struct
import time
from collections.abc import Callable
from typing import Protocol

import attrs

from clustercore.errors import ClusterError
from clustercore.fencing import FenceDecision
from clustercore.model import Host, HostReport, HostState

#: linux/watchdog.h: _IOWR('W', 6, int)
WDIOC_SETTIMEOUT = 0xC0045706


class WatchdogError(ClusterError):
    """A watchdog could not be armed (``path``: the device; ``detail``: why)."""

    def __init__(self, path: str, detail: str) -> None:
        self.path, self.detail = path, detail
        super().__init__(f"watchdog {path}: {detail}")


class Watchdog(Protocol):
    """Resets the host ``timeout`` seconds after the last feed, unless disarmed."""

    @property
    def timeout(self) -> float: ...

    def feed(self, valid_until: float) -> None:
        """Keep the host up at most until ``min(now, valid_until) + timeout`` (the agent's
        monotonic clock): a feed that comes too late feeds nothing."""

    def disarm(self) -> None:
        """Stop it: the host is no longer reset."""


class DeviceWatchdog:
    """A Linux watchdog device (``softdog`` or hardware): opening it arms it, a write feeds
    it, the magic close ("V") disarms it (unless its driver has ``nowayout``). The driver
    may round ``timeout``: :attr:`timeout` is what it took."""

    def __init__(self, path: str = "/dev/watchdog", timeout: int = 60,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.path, self.monotonic = path, monotonic
        try:
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise WatchdogError(path, f"cannot open: {exc.strerror}") from None
        try:
            taken = fcntl.ioctl(self._fd, WDIOC_SETTIMEOUT, struct.pack("i", int(timeout)))
            self._timeout = float(struct.unpack("i", taken)[0])
        except OSError as exc:
            os.write(self._fd, b"V")
            os.close(self._fd)
            raise WatchdogError(path, f"cannot set its timeout to {timeout} s: {exc.strerror}") from None

    @property
    def timeout(self) -> float:
        return self._timeout

    def feed(self, valid_until: float) -> None:
        if self._fd is not None and self.monotonic() < valid_until:
            os.write(self._fd, b"\0")

    def disarm(self) -> None:
        if self._fd is not None:
            os.write(self._fd, b"V")
            os.close(self._fd)
            self._fd = None


def may_self_fence(host: Host) -> bool:
    """The host's setting, or by default: only without a fence device."""
    return host.self_fence if host.self_fence is not None else not host.fence_devices


@attrs.frozen
class Due:
    """A self-fence decision: ``fence`` now, or ``at`` when it will be due (None: never)."""

    fence: bool
    reason: str
    at: float | None = None

    @property
    def decision(self) -> FenceDecision:
        return FenceDecision(self.fence, self.reason)


def self_fence_decision(host: Host, armed: float, lease_gone: float | None, now: float, margin: float) -> Due:
    """Whether NonResponsive ``host`` has surely been reset by its watchdog at ``now``.
    ``armed``: the longest watchdog timeout its agent reported (recorded or last seen);
    ``lease_gone``: when this manager first saw its heartbeat lease expired (None: alive)."""
    if host.state is not HostState.NON_RESPONSIVE:
        return Due(False, f"{host.state.value}, not NonResponsive")
    if not may_self_fence(host):
        why = "off for this host" if host.self_fence is False else "off by default for a host with a fence device"
        return Due(False, f"self-fencing is {why}")
    if armed <= 0:
        return Due(False, "its agent reported no armed watchdog")
    if lease_gone is None:
        return Due(False, "its heartbeat lease has not expired")
    at = lease_gone + armed + margin
    if now < at:
        return Due(False, f"waiting for its watchdog: lease expired {now - lease_gone:.0f} s ago, off surely "
                          f"{armed:g} s (watchdog) + {margin:g} s (margin) after that", at)
    return Due(True, f"reset by its watchdog: lease expired {now - lease_gone:.0f} s ago, over its watchdog "
                     f"timeout ({armed:g} s) + margin ({margin:g} s)", at)


def recorded(host: Host, report: HostReport) -> Host | None:
    """``host`` with the watchdog its agent's report declares, when the record differs."""
    return None if host.watchdog == report.watchdog else attrs.evolve(host, watchdog=report.watchdog)
