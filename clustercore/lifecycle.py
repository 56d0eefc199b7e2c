"""The host state machine: the transition table as data, and pure decisions on it.

``transition(host, event, now)`` is the only way a host changes state. It looks the pair
``(host.state, event)`` up in :data:`TRANSITIONS`; a pair that is not there raises
:class:`~clustercore.errors.InvalidTransition` carrying the host, state and event.

The table (``*`` = any of the listed sources)::

    PendingApproval --APPROVE--> Installing --INSTALL_SUCCEEDED--> Initializing --INITIALIZED--> Up
                                 Installing --INSTALL_FAILED--> InstallFailed --REINSTALL--> Installing
    Up, Initializing --NOT_OPERATIONAL(reason)--> NonOperational --RECOVERED--> Up   (auto reasons only)
    Up, NonOperational, Initializing, PreparingForMaintenance --HEARTBEAT_MISSED--> Connecting
    Connecting --HEARTBEAT_RESUMED--> (the state it came from)
    Connecting --HEARTBEAT_LOST--> NonResponsive --HEARTBEAT_RESUMED--> Initializing
    NonResponsive --FENCE--> Fencing --FENCED--> Down;  Fencing --FENCE_FAILED--> NonResponsive
    NonResponsive, Fencing --CONFIRM_DOWN--> Down       (operator: "host has been rebooted")
    NonResponsive --SELF_FENCED--> Down                 (its watchdog surely reset it)
    Connecting, NonResponsive, Fencing --KDUMP_DETECTED--> Kdumping
    Up, NonOperational --PREPARE_MAINTENANCE--> PreparingForMaintenance --DRAINED--> Maintenance
    InstallFailed, Down, Standby --PREPARE_MAINTENANCE--> Maintenance (nothing runs there to drain)
    PreparingForMaintenance --CANCEL_MAINTENANCE--> Up
    Maintenance, NonOperational --ACTIVATE--> Initializing
    Maintenance --REBOOT--> Rebooting;  Maintenance, InstallFailed --REINSTALL--> Installing
    Maintenance --STANDBY--> Standby (power saving powered it off) --WAKE--> Rebooting (powered on)
    InstallFailed, Down, Standby --PREPARE_MAINTENANCE--> Maintenance
    Rebooting, Down, Kdumping, Standby --HEARTBEAT_RESUMED--> Initializing
    Rebooting, Kdumping --HEARTBEAT_LOST--> NonResponsive (they took too long)
    PendingApproval, InstallFailed, Maintenance, Down, Standby --REMOVE--> Removed

Heartbeats (oVirt's model): a host is *seen* when its heartbeat key changes. A monitored
host not seen for ``missed_beats * heartbeat_interval`` seconds goes Connecting; a
Connecting host not seen for ``non_responsive_grace + grace_per_workload * workloads``
seconds goes NonResponsive (busy hosts get longer, as oVirt's DelayResetPerVmInSeconds).
Only ``Up`` hosts that are schedulable accept new workloads.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

import attrs

from clustercore.errors import InvalidTransition, ValidationError
from clustercore.model import Host, HostState, NonOperationalReason, Reader

S = HostState


class HostEvent(enum.StrEnum):
    APPROVE = "approve"
    INSTALL_SUCCEEDED = "install-succeeded"
    INSTALL_FAILED = "install-failed"
    REINSTALL = "reinstall"
    INITIALIZED = "initialized"
    NOT_OPERATIONAL = "not-operational"
    RECOVERED = "recovered"
    HEARTBEAT_MISSED = "heartbeat-missed"
    HEARTBEAT_RESUMED = "heartbeat-resumed"
    HEARTBEAT_LOST = "heartbeat-lost"
    PREPARE_MAINTENANCE = "prepare-maintenance"
    DRAINED = "drained"
    CANCEL_MAINTENANCE = "cancel-maintenance"
    ACTIVATE = "activate"
    REBOOT = "reboot"
    FENCE = "fence"
    FENCED = "fenced"
    FENCE_FAILED = "fence-failed"
    SELF_FENCED = "self-fenced"
    CONFIRM_DOWN = "confirm-down"
    KDUMP_DETECTED = "kdump-detected"
    REMOVE = "remove"
    STANDBY = "standby"
    WAKE = "wake"


class _Previous(enum.Enum):
    """Target meaning "the state the host was in before Connecting"."""

    PREVIOUS = "previous"


PREVIOUS = _Previous.PREVIOUS
Target = HostState | _Previous
E = HostEvent
Row = tuple[HostEvent, tuple[HostState, ...], Target]

# (event, sources, target): the whole state machine, one row an edge family.
_ROWS: tuple[Row, ...] = (
    (E.APPROVE, (S.PENDING_APPROVAL,), S.INSTALLING),
    (E.INSTALL_SUCCEEDED, (S.INSTALLING,), S.INITIALIZING),
    (E.INSTALL_FAILED, (S.INSTALLING,), S.INSTALL_FAILED),
    (E.REINSTALL, (S.INSTALL_FAILED, S.MAINTENANCE), S.INSTALLING),
    (E.INITIALIZED, (S.INITIALIZING,), S.UP),
    (E.NOT_OPERATIONAL, (S.UP, S.INITIALIZING), S.NON_OPERATIONAL),
    (E.RECOVERED, (S.NON_OPERATIONAL,), S.UP),
    (E.HEARTBEAT_MISSED, (S.UP, S.NON_OPERATIONAL, S.INITIALIZING, S.PREPARING_FOR_MAINTENANCE), S.CONNECTING),
    (E.HEARTBEAT_RESUMED, (S.CONNECTING,), PREVIOUS),
    (E.HEARTBEAT_RESUMED, (S.NON_RESPONSIVE, S.REBOOTING, S.DOWN, S.KDUMPING, S.STANDBY), S.INITIALIZING),
    (E.HEARTBEAT_LOST, (S.CONNECTING, S.REBOOTING, S.KDUMPING), S.NON_RESPONSIVE),
    (E.PREPARE_MAINTENANCE, (S.UP, S.NON_OPERATIONAL), S.PREPARING_FOR_MAINTENANCE),
    (E.PREPARE_MAINTENANCE, (S.INSTALL_FAILED, S.DOWN, S.STANDBY), S.MAINTENANCE),
    (E.DRAINED, (S.PREPARING_FOR_MAINTENANCE,), S.MAINTENANCE),
    (E.CANCEL_MAINTENANCE, (S.PREPARING_FOR_MAINTENANCE,), S.UP),
    (E.ACTIVATE, (S.MAINTENANCE, S.NON_OPERATIONAL), S.INITIALIZING),
    (E.REBOOT, (S.MAINTENANCE,), S.REBOOTING),
    (E.FENCE, (S.NON_RESPONSIVE,), S.FENCING),
    (E.FENCED, (S.FENCING,), S.DOWN),
    (E.FENCE_FAILED, (S.FENCING,), S.NON_RESPONSIVE),
    (E.SELF_FENCED, (S.NON_RESPONSIVE,), S.DOWN),  # its watchdog surely reset it (clustercore.watchdog)
    (E.CONFIRM_DOWN, (S.NON_RESPONSIVE, S.FENCING), S.DOWN),
    (E.KDUMP_DETECTED, (S.CONNECTING, S.NON_RESPONSIVE, S.FENCING), S.KDUMPING),
    (E.REMOVE, (S.PENDING_APPROVAL, S.INSTALL_FAILED, S.MAINTENANCE, S.DOWN, S.STANDBY), S.REMOVED),
    (E.STANDBY, (S.MAINTENANCE,), S.STANDBY),  # power saving powered it off (clustercore.powersaving)
    (E.WAKE, (S.STANDBY,), S.REBOOTING),  # powered on: back through Initializing once it beats
)


def _compile(rows: Iterable[Row]) -> dict[tuple[HostState, HostEvent], Target]:
    table: dict[tuple[HostState, HostEvent], Target] = {}
    for event, sources, target in rows:
        for source in sources:
            if (source, event) in table:
                raise AssertionError(f"duplicate transition {source} --{event}-->")
            table[(source, event)] = target
    return table


TRANSITIONS: Mapping[tuple[HostState, HostEvent], Target] = _compile(_ROWS)

#: States whose hosts must keep heartbeating.
MONITORED = frozenset({S.UP, S.NON_OPERATIONAL, S.INITIALIZING, S.PREPARING_FOR_MAINTENANCE})


def allowed_events(state: HostState) -> tuple[HostEvent, ...]:
    """Every event the state accepts, in table order."""
    return tuple(e for (s, e) in TRANSITIONS if s is state)


def accepts_workloads(host: Host) -> bool:
    """True only for a schedulable host that is Up."""
    return host.state is S.UP and host.schedulable


def transition(
    host: Host,
    event: HostEvent,
    now: float,
    reason: str = "",
    non_operational: NonOperationalReason | None = None,
) -> Host:
    """The host after ``event`` at ``now``. Pure: the input host is not touched.

    ``NOT_OPERATIONAL`` needs a ``non_operational`` reason; ``RECOVERED`` is accepted only
    when the host's reason clears by itself (network or storage came back).
    """
    target = TRANSITIONS.get((host.state, event))
    if target is None:
        raise InvalidTransition(host.name, host.state, event, allowed_events(host.state))
    if event is E.NOT_OPERATIONAL and non_operational is None:
        raise ValidationError("host event", "non_operational", "NOT_OPERATIONAL needs a reason", None)
    if event is E.RECOVERED and not (host.non_operational and host.non_operational.auto_recoverable):
        raise InvalidTransition(host.name, host.state, event, (E.ACTIVATE,))
    previous = host.state if target is S.CONNECTING else None
    if target is PREVIOUS:
        target = host.previous or S.UP
    assert isinstance(target, HostState)
    return host.with_status(target, now, reason, previous, non_operational if target is S.NON_OPERATIONAL else None)


@attrs.frozen
class LivenessPolicy:
    """Grace periods for heartbeats, in seconds. Defaults follow oVirt: a host that misses
    three 10 s beats is Connecting (oVirt's vdsHeartbeatInSeconds is 30 s); one Connecting
    for 60 s plus 0.5 s per workload is NonResponsive (TimeoutToResetVdsInSeconds,
    DelayResetPerVmInSeconds)."""

    heartbeat_interval: float = 10.0
    missed_beats: int = 3
    non_responsive_grace: float = 60.0
    grace_per_workload: float = 0.5
    reboot_timeout: float = 600.0
    kdump_timeout: float = 600.0

    @property
    def connecting_after(self) -> float:
        return self.heartbeat_interval * self.missed_beats

    def non_responsive_after(self, workloads: int) -> float:
        return self.non_responsive_grace + self.grace_per_workload * workloads

    def to_dict(self) -> dict[str, float]:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: object, path: str = "liveness") -> LivenessPolicy:
        r = Reader("liveness policy", data, path)
        policy = cls(
            heartbeat_interval=r.number("heartbeat_interval", 10.0, minimum=0.001),
            missed_beats=r.integer("missed_beats", 3, minimum=1),
            non_responsive_grace=r.number("non_responsive_grace", 60.0, minimum=0.0),
            grace_per_workload=r.number("grace_per_workload", 0.5, minimum=0.0),
            reboot_timeout=r.number("reboot_timeout", 600.0, minimum=0.0),
            kdump_timeout=r.number("kdump_timeout", 600.0, minimum=0.0),
        )
        r.done()
        return policy


def heard(host: Host, last_seen: float | None) -> float:
    """When ``host`` was last heard from: its latest heartbeat seen, or its last change if later."""
    return host.since if last_seen is None or last_seen < host.since else last_seen


def liveness_event(
    host: Host,
    last_seen: float | None,
    now: float,
    policy: LivenessPolicy,
    workloads: int = 0,
) -> tuple[HostEvent, str] | None:
    """The heartbeat-driven event due for ``host`` at ``now``, with its reason, or None.

    ``last_seen`` is when the controller last saw the host's heartbeat change (its own
    clock, so host clock skew does not matter); ``workloads`` is how many run on the host.
    """
    state = host.state
    seen_since_change = last_seen is not None and last_seen > host.since
    if state in MONITORED:
        silent = now - heard(host, last_seen)
        if silent > policy.connecting_after:
            return E.HEARTBEAT_MISSED, f"no heartbeat for {silent:.0f} s (limit {policy.connecting_after:.0f} s)"
        return None
    if seen_since_change and state in (S.CONNECTING, S.NON_RESPONSIVE, S.REBOOTING, S.DOWN, S.KDUMPING, S.STANDBY):
        return E.HEARTBEAT_RESUMED, "heartbeat received"
    waited = now - host.since
    if state is S.CONNECTING:
        limit = policy.non_responsive_after(workloads)
        if waited > limit:
            return E.HEARTBEAT_LOST, (
                f"no heartbeat for {waited:.0f} s in Connecting (limit {limit:.0f} s for {workloads} workload(s))"
            )
    elif state is S.REBOOTING and waited > policy.reboot_timeout:
        return E.HEARTBEAT_LOST, f"not back {waited:.0f} s after reboot (limit {policy.reboot_timeout:.0f} s)"
    elif state is S.KDUMPING and waited > policy.kdump_timeout:
        return E.HEARTBEAT_LOST, f"crash dump not finished after {waited:.0f} s (limit {policy.kdump_timeout:.0f} s)"
    return None


def connectivity_event(
    host: Host, missing_networks: frozenset[str], missing_storage: frozenset[str]
) -> tuple[HostEvent, str, NonOperationalReason | None] | None:
    """NOT_OPERATIONAL when an Up or Initializing host misses a required network or storage,
    RECOVERED when a host made NonOperational by that reaches everything again; else None."""
    if host.state in (S.UP, S.INITIALIZING) and (missing_networks or missing_storage):
        if missing_networks:
            nets = ", ".join(sorted(missing_networks))
            return E.NOT_OPERATIONAL, f"missing network {nets}", NonOperationalReason.NETWORK_UNREACHABLE
        stores = ", ".join(sorted(missing_storage))
        return E.NOT_OPERATIONAL, f"missing storage {stores}", NonOperationalReason.STORAGE_UNREACHABLE
    if (
        host.state is S.NON_OPERATIONAL
        and host.non_operational is not None
        and host.non_operational.auto_recoverable
        and not missing_networks
        and not missing_storage
    ):
        return E.RECOVERED, f"{host.non_operational} resolved: every required network and storage reached", None
    return None
