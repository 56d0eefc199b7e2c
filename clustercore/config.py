"""Cluster-wide settings, kept in the store so every manager sees the same ones."""

from __future__ import annotations

from typing import Any

import attrs

from clustercore.lifecycle import LivenessPolicy
from clustercore.model import NAME_RE, Reader


@attrs.frozen
class ClusterConfig:
    """``required_networks`` and ``required_storage`` must be reachable from every host
    that runs workloads (a host that loses one goes NonOperational until it is back);
    ``approval_required`` keeps joining hosts in PendingApproval until an operator
    approves them; ``events_retained`` bounds the event log."""

    name: str = "default"
    required_networks: frozenset[str] = frozenset()
    required_storage: frozenset[str] = frozenset()
    approval_required: bool = False
    liveness: LivenessPolicy = attrs.field(factory=LivenessPolicy)
    events_retained: int = 10_000

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "required_networks": sorted(self.required_networks),
            "required_storage": sorted(self.required_storage),
            "approval_required": self.approval_required,
            "liveness": self.liveness.to_dict(),
            "events_retained": self.events_retained,
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
        )
        r.done()
        return config

