"""Workload: something that runs on a host, with its affinity and spread rules; Placement:
where one is bound (its state machine is :mod:`clustercore.placements`)."""

from __future__ import annotations

import enum
import re
from typing import Any

import attrs

from clustercore.resources import ZERO, Resources
from clustercore.taints import Toleration
from clustercore.values import EMPTY, NAME_RE, FrozenMap, Reader, frozen_map


@attrs.frozen
class AffinityRule:
    """Workload-to-workload (anti-)affinity: with the workloads whose labels match
    ``selector``, within one ``scope`` (a host, or a location key such as ``rack``).
    Anti-affinity allows at most ``max_per_scope`` matching workloads per scope. ``hard``
    rules filter; soft ones weigh with ``weight``."""

    selector: FrozenMap[str, str] = attrs.field(converter=frozen_map)
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
            scope=r.string("scope", "host", pattern=re.compile(r"^[a-z][a-z0-9_-]*\Z")),
            max_per_scope=r.integer("max_per_scope", 1, minimum=1),
            weight=r.integer("weight", 1, minimum=1),
        )
        r.done()
        return rule


@attrs.frozen
class SpreadRule:
    """Spread the workloads matching ``selector`` over the ``scope`` failure domains
    (a location key such as ``rack``): no domain may hold more than ``max_skew`` more of
    them than the emptiest domain (Kubernetes' topology spread constraints)."""

    scope: str
    selector: FrozenMap[str, str] = attrs.field(converter=frozen_map)
    max_skew: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "selector": self.selector.thaw(), "max_skew": self.max_skew}

    @classmethod
    def from_dict(cls, data: object, path: str = "spread") -> SpreadRule:
        r = Reader("spread rule", data, path)
        rule = cls(r.string("scope", pattern=re.compile(r"^[a-z][a-z0-9_-]*\Z")), r.str_map("selector"),
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
    labels: FrozenMap[str, str] = attrs.field(default=EMPTY, converter=frozen_map)
    priority: int = 0
    ha: bool = False
    affinity: tuple[AffinityRule, ...] = ()
    host_selector: FrozenMap[str, str] = attrs.field(default=EMPTY, converter=frozen_map)
    preferred_labels: FrozenMap[str, str] = attrs.field(default=EMPTY, converter=frozen_map)
    pinned: frozenset[str] = frozenset()
    networks: frozenset[str] = frozenset()
    storage: frozenset[str] = frozenset()
    volumes: frozenset[str] = frozenset()
    tolerations: tuple[Toleration, ...] = ()
    spread: tuple[SpreadRule, ...] = ()
    spec: FrozenMap[str, Any] = attrs.field(default=EMPTY, converter=frozen_map)

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
            "volumes": sorted(self.volumes),
            "tolerations": [t.to_dict() for t in self.tolerations],
            "spread": [r.to_dict() for r in self.spread],
            "spec": self.spec.thaw(),
        }

    @classmethod
    def from_dict(cls, data: object, path: str = "") -> Workload:
        r = Reader("workload", data, path)
        workload = cls(
            name=r.string("name", pattern=NAME_RE),
            flavor=r.string("flavor", pattern=re.compile(r"^[a-z][a-z0-9_-]*\Z")),
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
            volumes=_names(r, "volumes"),
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


def _names(r: Reader, field: str) -> frozenset[str]:
    names = r.str_set(field)
    for name in names:
        if not NAME_RE.match(name):
            raise r.fail(field, f"must match {NAME_RE.pattern}", name)
    return names
