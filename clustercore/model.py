"""The value objects every part of clustercore speaks: Resources, Host, Workload, Placement.

All are ``attrs.frozen``: change one with ``attrs.evolve``. Each has ``from_dict`` (the one
way user input becomes an object: it rejects malformed input with a
:class:`~clustercore.errors.ValidationError` naming the field) and ``to_dict`` (the
JSON-ready form the store keeps). Mappings inside them are :class:`FrozenMap`, so every
value object is immutable and hashable.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import attrs

from clustercore.errors import ValidationError

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,252}$")
RESOURCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,126}$")


class FrozenMap(Mapping[K, V]):
    """An immutable, hashable mapping (values must be hashable: use :func:`freeze`)."""

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        self._data: dict[K, V] = dict(data)
        self._hash: int | None = None

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"

    def thaw(self) -> dict[K, Any]:
        """A plain, mutable, JSON-ready copy (nested values thawed too)."""
        return {k: thaw(v) for k, v in self._data.items()}


EMPTY: FrozenMap[Any, Any] = FrozenMap()


def freeze(value: Any) -> Any:
    """JSON-like data made immutable: dicts become FrozenMap, lists become tuples."""
    if isinstance(value, FrozenMap):
        return value
    if isinstance(value, Mapping):
        return FrozenMap((k, freeze(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse of :func:`freeze`, giving JSON-ready data."""
    if isinstance(value, FrozenMap):
        return value.thaw()
    if isinstance(value, (tuple, list)):
        return [thaw(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(thaw(v) for v in value)
    return value


def ratio_map(value: Mapping[str, float] | None) -> FrozenMap[str, float]:
    """Converter for per-resource ratio maps."""
    return FrozenMap({str(k): float(v) for k, v in (value or {}).items()})


def _frozen_map(value: Mapping[Any, Any] | None) -> FrozenMap[Any, Any]:
    frozen: FrozenMap[Any, Any] = EMPTY if not value else freeze(value)
    return frozen


class Reader:
    """Reads one dict of user input, naming the dotted field of anything wrong.

    Used by every ``from_dict``; flavors may use it for their own specs.
    """

    def __init__(self, kind: str, data: object, path: str = "") -> None:
        self.kind = kind
        self.path = path
        if not isinstance(data, Mapping):
            raise ValidationError(kind, path or "<root>", "must be a mapping", data)
        self.data: Mapping[str, Any] = data
        self.seen: set[str] = set()

    def field(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, problem: str, value: object = None) -> ValidationError:
        return ValidationError(self.kind, self.field(name), problem, value)

    def get(self, name: str, default: Any = None) -> Any:
        self.seen.add(name)
        return self.data.get(name, default)

    def has(self, name: str) -> bool:
        return name in self.data

    def string(self, name: str, default: str | None = None, pattern: re.Pattern[str] | None = None) -> str:
        value = self.get(name, default)
        if value is None:
            raise self.fail(name, "is required")
        if not isinstance(value, str):
            raise self.fail(name, "must be a string", value)
        if pattern is not None and not pattern.match(value):
            raise self.fail(name, f"must match {pattern.pattern}", value)
        return value

    def integer(self, name: str, default: int | None = None, minimum: int | None = None) -> int:
        value = self.get(name, default)
        if value is None:
            raise self.fail(name, "is required")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, "must be an integer", value)
        if minimum is not None and value < minimum:
            raise self.fail(name, f"must be >= {minimum}", value)
        return value

    def number(self, name: str, default: float | None = None, minimum: float | None = None) -> float:
        value = self.get(name, default)
        if value is None:
            raise self.fail(name, "is required")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(name, "must be a finite number", value)
        if minimum is not None and value < minimum:
            raise self.fail(name, f"must be >= {minimum}", value)
        return float(value)

    def boolean(self, name: str, default: bool = False) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(name, "must be true or false", value)
        return value

    def optional_number(self, name: str) -> float | None:
        return None if self.get(name) is None else self.number(name)

    def str_map(self, name: str) -> FrozenMap[str, str]:
        value = self.get(name) or {}
        if not isinstance(value, Mapping):
            raise self.fail(name, "must be a mapping of strings", value)
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise self.fail(f"{name}.{k}", "keys and values must be strings", v)
        return _frozen_map(value)

    def str_set(self, name: str) -> frozenset[str]:
        value = self.get(name) or ()
        if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
            raise self.fail(name, "must be a list of strings", value)
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise self.fail(f"{name}[{i}]", "must be a non-empty string", item)
        return frozenset(value)

    def mapping(self, name: str) -> FrozenMap[str, Any]:
        value = self.get(name) or {}
        if not isinstance(value, Mapping):
            raise self.fail(name, "must be a mapping", value)
        return _frozen_map(value)

    def enum(self, name: str, kind: type[enum.Enum], default: enum.Enum | None = None) -> Any:
        value = self.get(name, default.value if default is not None else None)
        if value is None:
            raise self.fail(name, "is required")
        try:
            return kind(value)
        except ValueError:
            choices = ", ".join(str(m.value) for m in kind)
            raise self.fail(name, f"must be one of {choices}", value) from None

    def _inner(self, parse: Callable[[object, str], T], value: object, path: str) -> T:
        """Parse a nested definition; its errors are reported as errors of this one."""
        try:
            return parse(value, path)
        except ValidationError as exc:
            raise ValidationError(self.kind, exc.field, exc.problem, exc.value) from None

    def nested(self, name: str, parse: Callable[[object, str], T], default: T) -> T:
        value = self.get(name)
        return default if value is None else self._inner(parse, value, self.field(name))

    def items(self, name: str, parse: Callable[[object, str], T]) -> tuple[T, ...]:
        value = self.get(name) or ()
        if not isinstance(value, (list, tuple)):
            raise self.fail(name, "must be a list", value)
        return tuple(self._inner(parse, item, f"{self.field(name)}[{i}]") for i, item in enumerate(value))

    def done(self) -> None:
        """Reject fields nobody read: a typo must not pass silently."""
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.fail(unknown[0], "unknown field", self.data[unknown[0]])


# --------------------------------------------------------------------------- resources


def _counts(value: Mapping[str, int] | Iterable[tuple[str, int]] | None) -> tuple[tuple[str, int], ...]:
    items = dict(value or ())
    return tuple(sorted((k, v) for k, v in items.items() if v != 0))


@attrs.frozen
class Resources:
    """An amount of resources: ``cpu`` in whole CPUs (vCPUs or hardware threads),
    ``memory`` in MiB, ``extended`` named counts such as ``pci/10de:1eb8`` or
    ``hugepages-1G``. Integers only, so sums and comparisons are exact.

    >>> need = Resources(cpu=2, memory=2048, extended={"pci/10de:1eb8": 1})
    >>> have = Resources(cpu=8, memory=16384)
    >>> need.fits(have), need.shortfall(have)
    (False, ('pci/10de:1eb8',))
    >>> (have - Resources(cpu=2, memory=1024)).memory
    15360
    """

    cpu: int = 0
    memory: int = 0
    extended: tuple[tuple[str, int], ...] = attrs.field(default=(), converter=_counts)

    def get(self, name: str) -> int:
        if name == "cpu":
            return self.cpu
        if name == "memory":
            return self.memory
        for key, value in self.extended:
            if key == name:
                return value
        return 0

    def names(self) -> tuple[str, ...]:
        return ("cpu", "memory", *(k for k, _ in self.extended))

    def __add__(self, other: Resources) -> Resources:
        ext = dict(self.extended)
        for k, v in other.extended:
            ext[k] = ext.get(k, 0) + v
        return Resources(self.cpu + other.cpu, self.memory + other.memory, ext)

    def __sub__(self, other: Resources) -> Resources:
        ext = dict(self.extended)
        for k, v in other.extended:
            ext[k] = ext.get(k, 0) - v
        return Resources(self.cpu - other.cpu, self.memory - other.memory, ext)

    def __mul__(self, count: int) -> Resources:
        return Resources(self.cpu * count, self.memory * count, {k: v * count for k, v in self.extended})

    def shortfall(self, available: Resources) -> tuple[str, ...]:
        """Names of the resources of which ``available`` has less than this asks for."""
        short = [n for n in ("cpu", "memory") if self.get(n) > available.get(n)]
        short += [k for k, v in self.extended if v > available.get(k)]
        return tuple(short)

    def fits(self, available: Resources) -> bool:
        return not self.shortfall(available)

    def negative(self) -> tuple[str, ...]:
        return tuple(n for n in self.names() if self.get(n) < 0)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cpu": self.cpu, "memory": self.memory}
        if self.extended:
            out["extended"] = dict(self.extended)
        return out

    @classmethod
    def from_dict(cls, data: object, path: str = "resources") -> Resources:
        r = Reader("resources", data, path)
        cpu = r.integer("cpu", 0, minimum=0)
        memory = r.integer("memory", 0, minimum=0)
        ext_raw = r.get("extended") or {}
        if not isinstance(ext_raw, Mapping):
            raise r.fail("extended", "must be a mapping of resource name to count", ext_raw)
        ext_reader = Reader("resources", ext_raw, r.field("extended"))
        ext = {}
        for name in ext_raw:
            if not isinstance(name, str) or not RESOURCE_RE.match(name):
                raise ext_reader.fail(str(name), f"resource names must match {RESOURCE_RE.pattern}", name)
            ext[name] = ext_reader.integer(name, minimum=0)
        r.done()
        return cls(cpu, memory, ext)


ZERO = Resources()


# --------------------------------------------------------------------------- hosts


class HostState(enum.Enum):
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
    REMOVED = "Removed"

    def __str__(self) -> str:
        return self.value


class NonOperationalReason(enum.Enum):
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

    def __str__(self) -> str:
        return self.value


@attrs.frozen
class FenceDevice:
    """How to power a host off out of band. ``password`` never appears in a repr."""

    agent: str
    address: str
    port: int | None = None
    username: str = ""
    password: str = attrs.field(default="", repr=False)
    level: int = 1
    options: FrozenMap[str, str] = attrs.field(default=EMPTY, converter=_frozen_map)

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
        port = r.get("port")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
            raise r.fail("port", "must be a TCP/UDP port number", port)
        dev = cls(
            agent=r.string("agent", pattern=re.compile(r"^[a-z][a-z0-9_]*$")),
            address=r.string("address"),
            port=port,
            username=r.string("username", ""),
            password=r.string("password", ""),
            level=r.integer("level", 1, minimum=1),
            options=r.str_map("options"),
        )
        r.done()
        return dev


def _default_allocatable(host: Host) -> Resources:
    return host.capacity


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
    labels: FrozenMap[str, str] = attrs.field(default=EMPTY, converter=_frozen_map)
    location: FrozenMap[str, str] = attrs.field(default=EMPTY, converter=_frozen_map)
    fence_devices: tuple[FenceDevice, ...] = ()
    taints: tuple[Taint, ...] = ()
    schedulable: bool = True
    state: HostState = HostState.PENDING_APPROVAL
    since: float = 0.0
    reason: str = ""
    non_operational: NonOperationalReason | None = None
    previous: HostState | None = None
    facts: FrozenMap[str, Any] = attrs.field(default=EMPTY, converter=_frozen_map)

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
        )
        r.done()
        return host


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

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"networks": sorted(self.networks), "storage": sorted(self.storage),
                               "kdump": self.kdump}
        if self.boot_id:
            out["boot_id"] = self.boot_id
        return out

    @classmethod
    def from_dict(cls, data: object, path: str = "") -> HostReport:
        r = Reader("host report", data, path)
        report = cls(r.str_set("networks"), r.str_set("storage"), r.boolean("kdump"), r.string("boot_id", ""))
        r.done()
        return report


# --------------------------------------------------------------------------- workloads


@attrs.frozen
class AffinityRule:
    """Workload-to-workload (anti-)affinity: with the workloads whose labels match
    ``selector``, within one ``scope`` (a host, or a location key such as ``rack``).
    Anti-affinity allows at most ``max_per_scope`` matching workloads per scope. ``hard``
    rules filter; soft ones weigh with ``weight``."""

    selector: FrozenMap[str, str] = attrs.field(converter=_frozen_map)
    anti: bool = False
    hard: bool = True
    scope: str = "host"
    max_per_scope: int = 1
    weight: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "selector": self.selector.thaw(),
            "anti": self.anti,
            "hard": self.hard,
            "scope": self.scope,
            "max_per_scope": self.max_per_scope,
            "weight": self.weight,
        }

    @classmethod
    def from_dict(cls, data: object, path: str = "affinity") -> AffinityRule:
        r = Reader("affinity rule", data, path)
        selector = r.str_map("selector")
        if not selector:
            raise r.fail("selector", "must name at least one label", r.get("selector"))
        rule = cls(
            selector=selector,
            anti=r.boolean("anti", False),
            hard=r.boolean("hard", True),
            scope=r.string("scope", "host", pattern=re.compile(r"^[a-z][a-z0-9_-]*$")),
            max_per_scope=r.integer("max_per_scope", 1, minimum=1),
            weight=r.integer("weight", 1, minimum=1),
        )
        r.done()
        return rule


class TaintEffect(enum.Enum):
    NO_SCHEDULE = "NoSchedule"  # workloads without a matching toleration are filtered out
    PREFER_NO_SCHEDULE = "PreferNoSchedule"  # they are weighed down instead

    def __str__(self) -> str:
        return self.value


@attrs.frozen
class Taint:
    """A mark that repels workloads that do not tolerate it (Kubernetes' taints)."""

    key: str
    value: str = ""
    effect: TaintEffect = TaintEffect.NO_SCHEDULE

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value, "effect": self.effect.value}

    @classmethod
    def from_dict(cls, data: object, path: str = "taint") -> Taint:
        r = Reader("taint", data, path)
        taint = cls(r.string("key", pattern=LABEL_RE), r.string("value", ""),
                    r.enum("effect", TaintEffect, TaintEffect.NO_SCHEDULE))
        r.done()
        return taint


@attrs.frozen
class Toleration:
    """Tolerates taints with this key (and ``value`` unless None, and ``effect`` unless None)."""

    key: str
    value: str | None = None
    effect: TaintEffect | None = None

    def tolerates(self, taint: Taint) -> bool:
        return (taint.key == self.key and (self.value is None or self.value == taint.value)
                and (self.effect is None or self.effect is taint.effect))

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value, "effect": self.effect.value if self.effect else None}

    @classmethod
    def from_dict(cls, data: object, path: str = "toleration") -> Toleration:
        r = Reader("toleration", data, path)
        value, effect = r.get("value"), r.get("effect")
        toleration = cls(
            r.string("key", pattern=LABEL_RE),
            None if value is None else r.string("value"),
            None if effect is None else r.enum("effect", TaintEffect),
        )
        r.done()
        return toleration


@attrs.frozen
class SpreadRule:
    """Spread the workloads matching ``selector`` over the ``scope`` failure domains
    (a location key such as ``rack``): no domain may hold more than ``max_skew`` more of
    them than the emptiest domain (Kubernetes' topology spread constraints)."""

    scope: str
    selector: FrozenMap[str, str] = attrs.field(converter=_frozen_map)
    max_skew: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "selector": self.selector.thaw(), "max_skew": self.max_skew}

    @classmethod
    def from_dict(cls, data: object, path: str = "spread") -> SpreadRule:
        r = Reader("spread rule", data, path)
        rule = cls(r.string("scope", pattern=re.compile(r"^[a-z][a-z0-9_-]*$")), r.str_map("selector"),
                   r.integer("max_skew", 1, minimum=1))
        if not rule.selector:
            raise r.fail("selector", "must name at least one label", r.get("selector"))
        r.done()
        return rule


@attrs.frozen
class Workload:
    """Something that runs on a host: a VM, a process, a job. ``flavor`` names the plugin
    that knows how to run it; ``spec`` is that flavor's own description (opaque here)."""

    name: str
    flavor: str
    requests: Resources = ZERO
    labels: FrozenMap[str, str] = attrs.field(default=EMPTY, converter=_frozen_map)
    priority: int = 0
    ha: bool = False
    affinity: tuple[AffinityRule, ...] = ()
    host_selector: FrozenMap[str, str] = attrs.field(default=EMPTY, converter=_frozen_map)
    preferred_labels: FrozenMap[str, str] = attrs.field(default=EMPTY, converter=_frozen_map)
    pinned: frozenset[str] = frozenset()
    networks: frozenset[str] = frozenset()
    storage: frozenset[str] = frozenset()
    tolerations: tuple[Toleration, ...] = ()
    spread: tuple[SpreadRule, ...] = ()
    spec: FrozenMap[str, Any] = attrs.field(default=EMPTY, converter=_frozen_map)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "flavor": self.flavor,
            "requests": self.requests.to_dict(),
            "labels": self.labels.thaw(),
            "priority": self.priority,
            "ha": self.ha,
            "affinity": [a.to_dict() for a in self.affinity],
            "host_selector": self.host_selector.thaw(),
            "preferred_labels": self.preferred_labels.thaw(),
            "pinned": sorted(self.pinned),
            "networks": sorted(self.networks),
            "storage": sorted(self.storage),
            "tolerations": [t.to_dict() for t in self.tolerations],
            "spread": [r.to_dict() for r in self.spread],
            "spec": self.spec.thaw(),
        }

    @classmethod
    def from_dict(cls, data: object, path: str = "") -> Workload:
        r = Reader("workload", data, path)
        workload = cls(
            name=r.string("name", pattern=NAME_RE),
            flavor=r.string("flavor", pattern=re.compile(r"^[a-z][a-z0-9_-]*$")),
            requests=r.nested("requests", Resources.from_dict, ZERO),
            labels=r.str_map("labels"),
            priority=r.integer("priority", 0),
            ha=r.boolean("ha", False),
            affinity=r.items("affinity", AffinityRule.from_dict),
            host_selector=r.str_map("host_selector"),
            preferred_labels=r.str_map("preferred_labels"),
            pinned=r.str_set("pinned"),
            networks=r.str_set("networks"),
            storage=r.str_set("storage"),
            tolerations=r.items("tolerations", Toleration.from_dict),
            spread=r.items("spread", SpreadRule.from_dict),
            spec=r.mapping("spec"),
        )
        r.done()
        return workload


class PlacementState(enum.Enum):
    STARTING = "Starting"
    RUNNING = "Running"
    MIGRATING = "Migrating"
    STOPPED = "Stopped"
    FAILED = "Failed"

    def __str__(self) -> str:
        return self.value


@attrs.frozen
class Placement:
    """Where a workload is bound. ``target`` is set while it migrates."""

    workload: str
    host: str
    state: PlacementState = PlacementState.STARTING
    since: float = 0.0
    target: str | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "host": self.host,
            "state": self.state.value,
            "since": self.since,
            "target": self.target,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: object, path: str = "") -> Placement:
        r = Reader("placement", data, path)
        target = r.get("target")
        placement = cls(
            workload=r.string("workload", pattern=NAME_RE),
            host=r.string("host", pattern=NAME_RE),
            state=r.enum("state", PlacementState, PlacementState.STARTING),
            since=r.number("since", 0.0),
            target=None if target is None else r.string("target", pattern=NAME_RE),
            reason=r.string("reason", ""),
        )
        r.done()
        return placement
