"""Taints repel workloads from hosts; tolerations let a workload onto a tainted host."""

from __future__ import annotations

import enum
from typing import Any

import attrs

from clustercore.values import LABEL_RE, Reader


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

