"""Capacity planning: how many more of a workload fit, and what runs out first (hspace).

Copies of the template are placed one after another through the scheduler (every filter
applies: resources with overcommit, affinity, spread, N+1...), each reserving what it
takes, until no host accepts one more. The answer is the count, where they went, and the
reasons the last copy was refused on each host: the most common one is what runs out first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import attrs

from clustercore.errors import NoValidHost
from clustercore.model import Workload
from clustercore.scheduling.engine import Scheduler


@attrs.frozen
class CapacityReport:
    template: str
    fits: int
    per_host: Mapping[str, int]
    limits: Mapping[str, int]  # reason -> hosts it excluded when the next copy was refused
    capped: bool = False  # stopped at ``limit`` before running out

    @property
    def runs_out_first(self) -> str | None:
        """The reason that stopped the most hosts from taking one more copy."""
        if not self.limits:
            return None
        return max(sorted(self.limits), key=lambda r: self.limits[r])

    def __str__(self) -> str:
        if self.capped:
            return f"{self.fits}+ more {self.template} fit (stopped counting)"
        return f"{self.fits} more {self.template} fit; then: {self.runs_out_first}"


def capacity(scheduler: Scheduler, template: Workload, limit: int = 100_000) -> CapacityReport:
    """Fill the cluster with copies of ``template`` on ``scheduler``'s snapshot (the
    scheduler keeps the reservations: use a fresh one to plan again)."""
    per_host: Counter[str] = Counter()
    for i in range(limit):
        copy = attrs.evolve(template, name=f"{template.name}-{i}")
        try:
            per_host[scheduler.schedule(copy)] += 1
        except NoValidHost as exc:
            return CapacityReport(template.name, i, dict(per_host), dict(exc.reasons))
    return CapacityReport(template.name, limit, dict(per_host), {}, capped=True)
