"""The value objects every part of clustercore speaks: Resources, Host, Workload, Placement.

All are ``attrs.frozen``: change one with ``attrs.evolve``. Each has ``from_dict`` (the one
way user input becomes an object: it rejects malformed input with a
:class:`~clustercore.errors.ValidationError` naming the field) and ``to_dict`` (the
JSON-ready form the store keeps). Mappings inside them are :class:`FrozenMap`, so every
value object is immutable and hashable.

The hosts are defined here; the other concepts live in the module named after them and
are re-exported: :mod:`clustercore.values` (``FrozenMap``, ``Reader``), :mod:`clustercore.resources`,
:mod:`clustercore.taints`, :mod:`clustercore.workload` (with ``Placement``).
"""

from __future__ import annotations

import enum
import re
from typing import Any

import attrs

from clustercore.errors import ValidationError
from clustercore.fence_agents import AGENT_RE, validate_device
from clustercore.resources import ZERO, Resources
from clustercore.taints import Taint, TaintEffect, Toleration
from clustercore.values import (
    EMPTY,
    LABEL_RE,
    NAME_RE,
    RESOURCE_RE,
    FrozenMap,
    Reader,
    dumps,
    freeze,
    frozen_map,
    ratio_map,
    thaw,
)
from clustercore.workload import AffinityRule, Placement, PlacementState, SpreadRule, Workload

__all__ = [
    "EMPTY",
    "LABEL_RE",
    "NAME_RE",
    "RESOURCE_RE",
    "STATUS",
    "ZERO",
    "AffinityRule",
    "FenceDevice",
    "FrozenMap",
    "Host",
    "HostReport",
    "HostState",
    "NonOperationalReason",
    "Placement",
    "PlacementState",
    "Reader",
    "Resources",
    "SpreadRule",
    "Taint",
    "TaintEffect",
    "Toleration",
    "Workload",
    "freeze",
    "frozen_map",
    "ratio_map",
    "thaw",
]


# --------------------------------------------------------------------------- hosts


class HostState(enum.StrEnum):
    """Where a host is in its life; the transitions are in :mod:`clustercore.lifecycle`."""

    PENDING_APPROVAL = "PendingApproval"
    INSTALLING = "Installing"
    INSTALL_FAILED = "InstallFailed"
    INITIALIZING = "Initializing"
    UP = "Up"
    CONNECTING = "Connecting"
    NON_RESPONSIVE = "NonResponsive"
    NON_OPERATIONAL = "NonOperational"
    PREPARING_FOR_MAINTENANCE = "PreparingForMaintenance"
    MAINTENANCE = "Maintenance"
    REBOOTING = "Rebooting"
    KDUMPING = "Kdumping"
    FENCING = "Fencing"
    DOWN = "Down"
    STANDBY = "Standby"  # emptied and powered off by power saving (clustercore.powersaving)
    REMOVED = "Removed"


class NonOperationalReason(enum.StrEnum):
    """Why a reachable host cannot run workloads. Some clear by themselves."""

    NETWORK_UNREACHABLE = "network-unreachable"
    STORAGE_UNREACHABLE = "storage-unreachable"
    CPU_INCOMPATIBLE = "cpu-incompatible"
    FLAVOR_CHECK_FAILED = "flavor-check-failed"
    OPERATOR = "operator"

    @property
    def auto_recoverable(self) -> bool:
        """True when the controller returns the host to Up once the cause is gone."""
        return self in (NonOperationalReason.NETWORK_UNREACHABLE, NonOperationalReason.STORAGE_UNREACHABLE)


@attrs.frozen
class FenceDevice:
    """How to power a host off out of band. ``password`` never appears in a repr.

    Checked however it is made (``from_dict`` or the constructor), by
    :func:`clustercore.fence_agents.device_problem`: no control character in any field, a
    plain agent name and address, options only from the agent's allow-list. Whether the
    agent exists here is :func:`clustercore.fencing.check_device` (at registration)."""

    agent: str
    address: str
    port: int | None = None
    username: str = ""
    password: str = attrs.field(default="", repr=False)
    level: int = 1
    options: FrozenMap[str, str] = attrs.field(default=EMPTY, converter=frozen_map)

    def __attrs_post_init__(self) -> None:
        validate_device(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "address": self.address,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "level": self.level,
            "options": self.options.thaw(),
        }

    @classmethod
    def from_dict(cls, data: object, path: str = "fence_device") -> FenceDevice:
        r = Reader("fence device", data, path)
        for key in r.data:
            if not isinstance(key, str):
                raise r.fail(str(key), "unknown field", key)
        port = r.get("port")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
            raise r.fail("port", "must be a TCP/UDP port number", port)
        agent, address = r.string("agent", pattern=AGENT_RE), r.string("address")
        username, password = r.string("username", ""), r.string("password", "")
        level, options = r.integer("level", 1, minimum=1, maximum=1000), r.str_map("options")
        r.done()
        try:
            return cls(agent, address, port, username, password, level, options)
        except ValidationError as exc:
            raise r.fail(exc.field, exc.problem, exc.value) from None


def _default_allocatable(host: Host) -> Resources:
    return host.capacity


#: The fields of a host that its transitions change (:func:`clustercore.lifecycle.transition`);
#: every other field is its definition.
STATUS = ("state", "since", "reason", "non_operational", "previous")


@attrs.frozen
class Host:
    """A machine the cluster manages: its definition and its lifecycle status.

    ``facts`` are keyed by flavor name (what each flavor discovered); ``location`` places the
    host in failure domains (``{"rack": "r1", "power": "pdu-a"}``); ``allocatable`` is the
    part of ``capacity`` workloads may use (defaults to all of it).
    """

    name: str
    capacity: Resources = ZERO
    allocatable: Resources = attrs.field(default=attrs.Factory(_default_allocatable, takes_self=True))
    address: str = ""
    labels: FrozenMap[str, str] = attrs.field(default=EMPTY, converter=frozen_map)
    location: FrozenMap[str, str] = attrs.field(default=EMPTY, converter=frozen_map)
    fence_devices: tuple[FenceDevice, ...] = ()
    taints: tuple[Taint, ...] = ()
    schedulable: bool = True
    state: HostState = HostState.PENDING_APPROVAL
    since: float = 0.0
    reason: str = ""
    non_operational: NonOperationalReason | None = None
    previous: HostState | None = None
    facts: FrozenMap[str, Any] = attrs.field(default=EMPTY, converter=frozen_map)
    #: Whether the manager may count on the host's watchdog to have reset it
    #: (:mod:`clustercore.watchdog`); None: only when it has no fence device.
    self_fence: bool | None = None
    #: The watchdog timeout (s) its agent last reported armed, as the leader recorded it; 0: none.
    watchdog: float = 0.0
    # The JSON of the definition (every field but STATUS): made by the first to_json(), kept
    # by with_status(), which changes only the status.
    _definition: bytes | None = attrs.field(default=None, init=False, repr=False, eq=False)

    def with_status(self, state: HostState, since: float, reason: str, previous: HostState | None,
                    non_operational: NonOperationalReason | None) -> Host:
        """This host with another status (the fields in :data:`STATUS`) and the same definition."""
        # Every field, positionally in their order: half the time of attrs.evolve, in a pass
        # that commits thousands of transitions (tests/test_model.py checks nothing is lost).
        new = Host(self.name, self.capacity, self.allocatable, self.address, self.labels, self.location,
                   self.fence_devices, self.taints, self.schedulable, state, since, reason, non_operational,
                   previous, self.facts, self.self_fence, self.watchdog)
        object.__setattr__(new, "_definition", self._definition)
        return new

    def to_json(self) -> bytes:
        """The stored form: :meth:`to_dict` as JSON, the status first. The definition's JSON
        is made once and shared by the hosts :meth:`with_status` makes, so a transition encodes
        only the status (a host's definition is most of its bytes)."""
        definition = self._definition
        if definition is None:
            data = self.to_dict()
            for key in STATUS:
                del data[key]
            definition = dumps(data)
            object.__setattr__(self, "_definition", definition)
        status = dumps({"state": self.state, "since": self.since, "reason": self.reason,
                        "non_operational": self.non_operational, "previous": self.previous}, sort_keys=False)
        return status[:-1] + b"," + definition[1:]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "capacity": self.capacity.to_dict(),
            "allocatable": self.allocatable.to_dict(),
            "address": self.address,
            "labels": self.labels.thaw(),
            "location": self.location.thaw(),
            "fence_devices": [d.to_dict() for d in self.fence_devices],
            "taints": [t.to_dict() for t in self.taints],
            "schedulable": self.schedulable,
            "state": self.state.value,
            "since": self.since,
            "reason": self.reason,
            "non_operational": self.non_operational.value if self.non_operational else None,
            "previous": self.previous.value if self.previous else None,
            "facts": self.facts.thaw(),
            "self_fence": self.self_fence,
            "watchdog": self.watchdog,
        }

    @classmethod
    def from_dict(cls, data: object, path: str = "") -> Host:
        """A host from user input or the store. Only ``name`` is required."""
        r = Reader("host", data, path)
        name = r.string("name", pattern=NAME_RE)
        capacity = r.nested("capacity", Resources.from_dict, ZERO)
        allocatable = r.nested("allocatable", Resources.from_dict, capacity)
        over = allocatable.shortfall(capacity)
        if over:
            raise r.fail("allocatable", f"exceeds capacity in {', '.join(over)}", allocatable.to_dict())
        nonop = r.get("non_operational")
        previous = r.get("previous")
        host = cls(
            name=name,
            capacity=capacity,
            allocatable=allocatable,
            address=r.string("address", ""),
            labels=r.str_map("labels"),
            location=r.str_map("location"),
            fence_devices=r.items("fence_devices", FenceDevice.from_dict),
            taints=r.items("taints", Taint.from_dict),
            schedulable=r.boolean("schedulable", True),
            state=r.enum("state", HostState, HostState.PENDING_APPROVAL),
            since=r.number("since", 0.0),
            reason=r.string("reason", ""),
            non_operational=None if nonop is None else r.enum("non_operational", NonOperationalReason),
            previous=None if previous is None else r.enum("previous", HostState),
            facts=r.mapping("facts"),
            self_fence=None if r.get("self_fence") is None else r.boolean("self_fence"),
            watchdog=r.number("watchdog", 0.0, minimum=0.0),
        )
        r.done()
        return host


TOKEN_RE = re.compile(r"^[A-Za-z0-9._:-]{0,128}\Z")


@attrs.frozen
class HostReport:
    """What a host says of itself with each heartbeat: the networks and storage it
    reaches, whether it is writing a crash dump, and its ``boot_id`` (a new one after every
    boot: a host that rebooted between two heartbeats lost its workloads, as Kubernetes'
    node bootID tells). Unchanged reports are cheap: the controller decodes a report only
    when its bytes change."""

    networks: frozenset[str] = frozenset()
    storage: frozenset[str] = frozenset()
    kdump: bool = False
    boot_id: str = ""
    #: The host's heartbeat credential, issued at registration (see clustercore.credentials).
    credential: str = attrs.field(default="", repr=False)
    #: The timeout (s) of the watchdog its agent keeps armed and fed while its lease renews; 0: none.
    watchdog: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"networks": sorted(self.networks), "storage": sorted(self.storage),
                               "kdump": self.kdump}
        if self.boot_id:
            out["boot_id"] = self.boot_id
        if self.watchdog:
            out["watchdog"] = self.watchdog
        if self.credential:
            out["credential"] = self.credential
        return out

    @classmethod
    def from_dict(cls, data: object, path: str = "") -> HostReport:
        r = Reader("host report", data, path)
        report = cls(r.str_set("networks"), r.str_set("storage"), r.boolean("kdump"),
                     r.string("boot_id", "", pattern=TOKEN_RE), r.string("credential", "", pattern=TOKEN_RE),
                     r.number("watchdog", 0.0, minimum=0.0, maximum=3600.0))
        r.done()
        return report
