"""Cluster-wide settings, kept in the store so every manager sees the same ones."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from clustercore.errors import ValidationError
from clustercore.fencing import FencePolicy
from clustercore.lifecycle import LivenessPolicy
from clustercore.model import NAME_RE, FrozenMap, Reader, ratio_map
from clustercore.rebalance import RebalancePolicy
from clustercore.statistics import StatsPolicy

#: Where workloads' files may live unless the cluster says otherwise (libvirt's own pool).
DEFAULT_STORAGE_ROOTS = ("/var/lib/libvirt/images", "/var/lib/clustercore")


@attrs.frozen
class ClusterConfig:
    """``required_networks`` and ``required_storage`` must be reachable from every host
    that runs workloads (a host that loses one goes NonOperational until it is back);
    ``approval_required`` keeps joining hosts in PendingApproval until an operator
    approves them; ``events_retained`` bounds the event log; ``policy`` names the
    scheduling policy; ``overcommit`` gives per-resource ratios (``{"cpu": 4.0}``);
    ``ha_headroom`` keeps room to restart the HA workloads of any one host (N+1);
    ``drain_parallel`` moves of one host run at once during maintenance (oVirt and
    KubeVirt default to 2 outgoing migrations per host) and ``drain_attempts`` failed moves
    of one workload make the drain give up (the host returns to Up); ``fencing`` is the
    fence policy (:class:`~clustercore.fencing.FencePolicy`, defaults explained there);
    ``orphan_after`` is how long a placement may sit in Starting or Migrating, unchanged and
    not launched by the current manager, before that manager settles it (a previous leader
    died mid-way): it asks the hosts where the workload runs and records that, Failed when
    nowhere. It must exceed the longest start a client may be running. ``call_timeout`` is
    the deadline of every call into a flavor or a host made by the reconcile pass
    (bootstrap, discovery, soft fence, witness, HA start, settling): a host that does not
    answer within it is treated as not answering; nothing else waits for it. A pass waits at
    most ``call_wait`` seconds for the calls it launched (fast hosts answer in the pass that
    asked; the rest are collected by later passes): it bounds what a hung host costs a pass.

    ``statistics`` says how often hosts are measured and how the measures are smoothed
    (:class:`~clustercore.statistics.StatsPolicy`); ``rebalance`` whether and how the leader
    moves running workloads to even out measured load
    (:class:`~clustercore.rebalance.RebalancePolicy`, off by default).

    ``storage_roots`` are the directories under which every path a workload's spec may name
    (disks, cloud-init seeds, kernels) must lie: nothing is read or written outside them.

    :meth:`merged` applies a partial update (what ``Cluster.configure`` does with a
    mapping): the fields it names change, nested ones (``liveness``, ``fencing``,
    ``statistics``, ``rebalance``) field by field, every other setting stays."""

    name: str = "default"
    required_networks: frozenset[str] = frozenset()
    required_storage: frozenset[str] = frozenset()
    approval_required: bool = False
    liveness: LivenessPolicy = attrs.field(factory=LivenessPolicy)
    events_retained: int = 10_000
    policy: str = "evenly_distributed"
    overcommit: FrozenMap[str, float] = attrs.field(factory=FrozenMap, converter=ratio_map)
    ha_headroom: bool = False
    drain_parallel: int = 2
    drain_attempts: int = 3
    fencing: FencePolicy = attrs.field(factory=FencePolicy)
    orphan_after: float = 120.0
    call_timeout: float = 30.0
    call_wait: float = 2.0
    storage_roots: frozenset[str] = frozenset(DEFAULT_STORAGE_ROOTS)
    statistics: StatsPolicy = attrs.field(factory=StatsPolicy)
    rebalance: RebalancePolicy = attrs.field(factory=RebalancePolicy)

    def merged(self, update: Mapping[str, Any]) -> ClusterConfig:
        """This config with ``update`` applied (validated as a whole: ValidationError names
        the field)."""
        if not isinstance(update, Mapping):
            raise ValidationError("cluster config", "", "expected a mapping", update)
        data = self.to_dict()
        for key, value in update.items():
            nested = key in ("liveness", "fencing", "statistics", "rebalance")
            if nested and isinstance(value, Mapping) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return ClusterConfig.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "required_networks": sorted(self.required_networks),
            "required_storage": sorted(self.required_storage),
            "approval_required": self.approval_required,
            "liveness": self.liveness.to_dict(),
            "events_retained": self.events_retained,
            "policy": self.policy,
            "overcommit": dict(self.overcommit),
            "ha_headroom": self.ha_headroom,
            "drain_parallel": self.drain_parallel,
            "drain_attempts": self.drain_attempts,
            "fencing": self.fencing.to_dict(),
            "orphan_after": self.orphan_after,
            "call_timeout": self.call_timeout,
            "call_wait": self.call_wait,
            "storage_roots": sorted(self.storage_roots),
            "statistics": self.statistics.to_dict(),
            "rebalance": self.rebalance.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: object, path: str = "") -> ClusterConfig:
        r = Reader("cluster config", data, path)
        config = cls(
            name=r.string("name", "default", pattern=NAME_RE),
            required_networks=r.str_set("required_networks"),
            required_storage=r.str_set("required_storage"),
            approval_required=r.boolean("approval_required", False),
            liveness=r.nested("liveness", LivenessPolicy.from_dict, LivenessPolicy()),
            events_retained=r.integer("events_retained", 10_000, minimum=1),
            policy=r.string("policy", "evenly_distributed", pattern=NAME_RE),
            overcommit=_ratios(r),
            ha_headroom=r.boolean("ha_headroom", False),
            drain_parallel=r.integer("drain_parallel", 2, minimum=1),
            drain_attempts=r.integer("drain_attempts", 3, minimum=1),
            fencing=r.nested("fencing", FencePolicy.from_dict, FencePolicy()),
            orphan_after=r.number("orphan_after", 120.0, minimum=0),
            call_timeout=r.number("call_timeout", 30.0, minimum=0.001),
            call_wait=r.number("call_wait", 2.0, minimum=0.0),
            storage_roots=_roots(r),
            statistics=r.nested("statistics", StatsPolicy.from_dict, StatsPolicy()),
            rebalance=r.nested("rebalance", RebalancePolicy.from_dict, RebalancePolicy()),
        )
        r.done()
        return config



def _roots(r: Reader) -> frozenset[str]:
    roots = r.str_set("storage_roots") if r.has("storage_roots") else frozenset(DEFAULT_STORAGE_ROOTS)
    for root in roots:
        if not root.startswith("/") or "\x00" in root or any(part in ("..", ".") for part in root.split("/")):
            raise r.fail("storage_roots", "each root must be an absolute path without . or ..", root)
    return roots


def _ratios(r: Reader) -> FrozenMap[str, float]:
    raw = r.mapping("overcommit")
    ratios = Reader("cluster config", raw, r.field("overcommit"))
    out = {name: ratios.number(name, minimum=0.01) for name in raw}
    return FrozenMap(out)
