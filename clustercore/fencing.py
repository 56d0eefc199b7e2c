"""Fencing: making sure a host that stopped answering is off before its workloads run
elsewhere. The core's most important promise: no workload ever runs on two hosts.

**When** (:func:`fence_decision`, pure): a NonResponsive host is fenced unless

* fencing is disabled, or the manager started less than ``startup_grace`` ago (its own
  view of the hosts is not settled yet; oVirt waits 5 minutes);
* more than ``storm_share`` of the hosts are unreachable at once (default 50%, as oVirt
  and medik8s' minHealthy): then the manager's own network is the likelier culprit, and
  fencing would take down healthy hosts;
* a liveness witness (a flavor's ``clustercore_host_alive`` hook: a storage lease, a peer
  check) says the host is alive;
* the last attempt failed less than the backoff ago.

A host writing a crash dump reports it and is Kdumping, not NonResponsive, until the dump
finishes or ``kdump_timeout`` passes: it is not fenced meanwhile.

**How** (:class:`Fencer`): soft fence first (a flavor's ``clustercore_soft_fence``: the virt
flavor restarts libvirtd) and wait ``soft_wait`` for the heartbeat to resume; then the
fencing topology: levels in order, every device of a level powered off (with retries),
and the level counts only when every device then reports power OFF by status. The first
level that succeeds makes the host Down; when all fail, :class:`FencingFailed` lists every
attempt, the host stays NonResponsive and its workloads stay where they are. An optional
random delay before hard fencing lets one of two partitioned hosts win (two-host
clusters). One fence at a time per host. An operator may always confirm by hand
(``Cluster.confirm_down``).

**Agents** live in :mod:`clustercore.fence_agents` (re-exported here): IPMI through
pyghmi (``ipmi``, the recommended one for IPMI), Redfish through sushy (``redfish``, https
verified by default), ClusterLabs fence agents (``fence_ipmilan``, ``fence_redfish``, any
``fence_*``) through their stdin ``key=value`` protocol; what a device may say (options
allow-listed per agent) and :func:`check_device`, the registration check. Credentials go
to the agent only: never to argv, logs, reprs or events.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import attrs

from clustercore.errors import FencingFailed
from clustercore.fence_agents import (
    AGENT_OPTIONS,
    AgentError,
    FenceAgent,
    IpmiAgent,
    ProcessAgent,
    RedfishAgent,
    allowed_options,
    check_device,
    default_agent,
    device_problem,
    stop_agents,
    validate_device,
)
from clustercore.model import FenceDevice, Host, HostState, Reader
from clustercore.secrets import Secrets, SecretsError

__all__ = [
    "AGENT_OPTIONS", "COUNTED", "UNREACHABLE", "AgentError", "Episode", "FenceAgent", "FenceDecision", "FencePolicy",
    "Fencer", "IpmiAgent", "ProcessAgent", "RedfishAgent", "allowed_options", "check_device", "default_agent",
    "device_problem", "fence_decision", "hard_fence", "levels", "stop_agents", "storm", "validate_device",
]

log = logging.getLogger(__name__)
S = HostState

#: States in which a host counts as unreachable for storm protection.
UNREACHABLE = frozenset({S.CONNECTING, S.NON_RESPONSIVE, S.FENCING, S.KDUMPING})
#: States whose hosts are part of the cluster's reachable population.
COUNTED = frozenset({S.UP, S.NON_OPERATIONAL, S.PREPARING_FOR_MAINTENANCE, S.INITIALIZING}) | UNREACHABLE


@attrs.frozen
class FencePolicy:
    """Defaults and why: ``soft_first`` (a daemon restart fixes most hangs without killing
    workloads, as oVirt's SSH soft fencing); ``soft_wait`` 60 s for the heartbeat to
    resume; ``retries`` 2 per device, ``retry_delay`` 5 s (BMCs drop the odd packet);
    ``confirm_timeout`` 30 s for status to say OFF; ``storm_share`` 0.5 (oVirt's 50%,
    medik8s' minHealthy 51%); ``startup_grace`` 300 s (oVirt's
    DisableFenceAtStartupInSec); ``backoff`` 60 s between failed fencings of one host;
    ``random_delay`` 0 (set it, e.g. 15 s, on two-host clusters); ``watchdog_margin`` 10 s
    added to a host's watchdog timeout before it counts as self-fenced
    (:mod:`clustercore.watchdog`: clock drift, a late feed)."""

    enabled: bool = True
    soft_first: bool = True
    soft_wait: float = 60.0
    retries: int = 2
    retry_delay: float = 5.0
    confirm_timeout: float = 30.0
    storm_share: float = 0.5
    startup_grace: float = 300.0
    backoff: float = 60.0
    random_delay: float = 0.0
    watchdog_margin: float = 10.0

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: object, path: str = "fencing") -> FencePolicy:
        r = Reader("fence policy", data, path)
        policy = cls(
            enabled=r.boolean("enabled", True), soft_first=r.boolean("soft_first", True),
            soft_wait=r.number("soft_wait", 60.0, minimum=0), retries=r.integer("retries", 2, minimum=0),
            retry_delay=r.number("retry_delay", 5.0, minimum=0),
            confirm_timeout=r.number("confirm_timeout", 30.0, minimum=0),
            storm_share=r.number("storm_share", 0.5, minimum=0), startup_grace=r.number("startup_grace", 300.0,
                                                                                           minimum=0),
            backoff=r.number("backoff", 60.0, minimum=0), random_delay=r.number("random_delay", 0.0, minimum=0),
            watchdog_margin=r.number("watchdog_margin", 10.0, minimum=0),
        )
        if policy.storm_share > 1:
            raise r.fail("storm_share", "is a share of the hosts, at most 1", policy.storm_share)
        r.done()
        return policy


@attrs.frozen
class FenceDecision:
    fence: bool
    reason: str


def storm(hosts: Sequence[Host], share: float) -> tuple[int, int] | None:
    """(unreachable, counted) when more than ``share`` of the hosts are unreachable."""
    counted = [h for h in hosts if h.state in COUNTED]
    down = sum(1 for h in counted if h.state in UNREACHABLE)
    return (down, len(counted)) if counted and down / len(counted) > share else None


def fence_decision(host: Host, hosts: Sequence[Host], now: float, started: float, policy: FencePolicy,
                   witness_alive: bool = False, failed_at: float | None = None) -> FenceDecision:
    """Whether to fence ``host`` now, and why (or why not). Pure."""
    if host.state is not S.NON_RESPONSIVE:
        return FenceDecision(False, f"{host.state.value}, not NonResponsive")
    if not policy.enabled:
        return FenceDecision(False, "fencing is disabled for this cluster")
    if now - started < policy.startup_grace:
        return FenceDecision(False, f"the manager started {now - started:.0f} s ago (no fencing in the first "
                                    f"{policy.startup_grace:.0f} s)")
    too_many = storm(hosts, policy.storm_share)
    if too_many is not None:
        return FenceDecision(False, f"{too_many[0]} of {too_many[1]} hosts unreachable (over "
                                    f"{policy.storm_share:.0%}): suspecting the manager's own network")
    if witness_alive:
        return FenceDecision(False, "a liveness witness says the host is alive")
    if failed_at is not None and now - failed_at < policy.backoff:
        return FenceDecision(False, f"last fencing failed {now - failed_at:.0f} s ago (backoff "
                                    f"{policy.backoff:.0f} s)")
    return FenceDecision(True, "NonResponsive, no reason to wait")


# --------------------------------------------------------------------------- running


def levels(devices: Sequence[FenceDevice]) -> list[list[FenceDevice]]:
    """The fencing topology: devices grouped by level, lowest first."""
    out: dict[int, list[FenceDevice]] = {}
    for d in devices:
        out.setdefault(d.level, []).append(d)
    return [out[k] for k in sorted(out)]


def hard_fence(host: Host, policy: FencePolicy, agent_for: Callable[[str], FenceAgent],
               sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic,
               rng: random.Random | None = None) -> list[str]:
    """Power ``host`` off through its fencing levels and confirm OFF by status. Returns
    the attempts; raises FencingFailed (with them) when no level succeeds."""
    attempts: list[str] = []
    if not host.fence_devices:
        raise FencingFailed(host.name, ["no fence device configured"])
    if policy.random_delay:
        sleep((rng or random.Random()).uniform(0, policy.random_delay))
    for n, level in enumerate(levels(host.fence_devices), 1):
        ok = True
        for device in level:
            done = False
            for attempt in range(policy.retries + 1):
                try:
                    agent_for(device.agent).power(device, "off", policy.confirm_timeout)
                    attempts.append(f"level {n} {device.agent}@{device.address}: off sent")
                    done = True
                    break
                except AgentError as exc:
                    attempts.append(f"level {n} {device.agent}@{device.address}: off try {attempt + 1}: {exc}")
                    if attempt < policy.retries:
                        sleep(policy.retry_delay)
            ok = ok and done
        if not ok:
            continue
        if all(_confirm_off(device, n, policy, agent_for, attempts, sleep, monotonic) for device in level):
            return attempts
    raise FencingFailed(host.name, attempts)


def _confirm_off(device: FenceDevice, n: int, policy: FencePolicy, agent_for: Callable[[str], FenceAgent],
                 attempts: list[str], sleep: Callable[[float], None], monotonic: Callable[[], float]) -> bool:
    deadline = monotonic() + policy.confirm_timeout
    while True:
        try:
            state = agent_for(device.agent).power(device, "status", policy.confirm_timeout)
        except AgentError as exc:
            state = f"unknown ({exc})"
        if state == "off":
            attempts.append(f"level {n} {device.agent}@{device.address}: status off")
            return True
        if monotonic() >= deadline:
            attempts.append(f"level {n} {device.agent}@{device.address}: status {state}, not off")
            return False
        sleep(min(1.0, policy.confirm_timeout / 10 or 1.0))


class Unsealing:
    """A fence agent handed each device with its password opened (:mod:`clustercore.secrets`)."""

    def __init__(self, agent: FenceAgent, secrets: Secrets) -> None:
        self.agent, self.secrets = agent, secrets

    def power(self, device: FenceDevice, action: str, timeout: float) -> str:
        try:
            opened = self.secrets.open_device(device)
        except SecretsError as exc:
            raise AgentError(f"{device.agent}@{device.address}: its password: {exc}") from None
        return self.agent.power(opened, action, timeout)


@attrs.define
class Episode:
    """One host's fencing since it became NonResponsive."""

    soft_at: float | None = None
    soft_tried: bool = False
    failed_at: float | None = None
    job: Future[list[str]] | None = None
    failures: int = 0


class Fencer:
    """The controller's memory of fencing per host (episodes, running jobs)."""

    def __init__(self, agent_for: Callable[[str], FenceAgent] = default_agent,
                 sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic,
                 secrets: Secrets | None = None) -> None:
        """``secrets`` open each device's sealed password for its agent, and only there."""
        self.secrets = secrets or Secrets()
        self.agent_for: Callable[[str], FenceAgent] = lambda name: Unsealing(agent_for(name), self.secrets)
        self.sleep = sleep
        self.monotonic = monotonic
        self.episodes: dict[str, Episode] = {}

    def episode(self, host: str) -> Episode:
        return self.episodes.setdefault(host, Episode())

    def forget(self, host: str) -> None:
        self.episodes.pop(host, None)

    def run(self, host: Host, policy: FencePolicy) -> list[str]:
        return hard_fence(host, policy, self.agent_for, self.sleep, self.monotonic)

    def stop(self) -> None:
        """Kill every fence agent still running (its whole process group): the manager
        calls it when it stops, so no agent or ipmitool outlives it."""
        stop_agents()

    def resume(self, host: Host, policy: FencePolicy) -> list[str]:
        """Finish a fencing another manager began and did not see through: when every
        device of a level already reports the power off, that is the outcome (nothing is
        powered off twice); otherwise fence as usual."""
        attempts: list[str] = []
        for n, level in enumerate(levels(host.fence_devices), 1):
            states = []
            for device in level:
                try:
                    states.append(self.agent_for(device.agent).power(device, "status", policy.confirm_timeout))
                except AgentError as exc:
                    states.append(f"unknown ({exc})")
            attempts.append(f"level {n}: status {', '.join(states)}")
            if states and all(state == "off" for state in states):
                return [*attempts, "already off: fenced by the previous leader"]
        return [*attempts, *self.run(host, policy)]

