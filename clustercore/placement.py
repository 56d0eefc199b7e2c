"""Placement: where a workload is bound, and in what state it is there."""

from __future__ import annotations

import enum
from typing import Any

import attrs

from clustercore.values import NAME_RE, Reader


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
