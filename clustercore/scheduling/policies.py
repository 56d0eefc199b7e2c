"""Scheduling policies: named bundles of weighers and factors, plus what "balanced" means.

As in oVirt, a cluster picks one by name (``ClusterConfig.policy``); flavors may add their
own through ``registry.add_policy``. Every policy uses every generic filter; they differ in
how they weigh, and in the balancer's objective (:mod:`clustercore.scheduling.balancer`):

============================  ===========================================  =========
policy                        weighers (factor)                            balance
============================  ===========================================  =========
``none``                      soft rules only; ties broken by the seed     none
``evenly_distributed``        least allocated (1), balanced allocation     spread
                              (1), soft rules
``power_saving``              least allocated (-1: stack), soft rules      pack
``workload_evenly_distributed``  fewer workloads (1), least allocated       count
                              (0.5), soft rules
============================  ===========================================  =========

"Soft rules" are soft affinity (2), preferred host labels (2) and PreferNoSchedule taints
(2): a preference expressed by a workload outweighs the resource weighers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from clustercore.scheduling.weighers import (
    AvoidPreferNoSchedule,
    BalancedAllocation,
    LeastAllocated,
    PreferredLabels,
    SoftAffinity,
    SpreadByCount,
)

if TYPE_CHECKING:
    from clustercore.scheduling.engine import Weigher

BALANCE_OBJECTIVES = ("none", "spread", "pack", "count")


@attrs.frozen
class Policy:
    name: str
    weighers: tuple[tuple[Weigher, float], ...]
    balance: str = "none"
    description: str = ""

    def __attrs_post_init__(self) -> None:
        if self.balance not in BALANCE_OBJECTIVES:
            raise ValueError(f"policy {self.name}: balance must be one of {', '.join(BALANCE_OBJECTIVES)}")


SOFT: tuple[tuple[Weigher, float], ...] = ((SoftAffinity(), 2.0), (PreferredLabels(), 2.0),
                                           (AvoidPreferNoSchedule(), 2.0))

NONE = Policy("none", SOFT, "none", "first fit among equals, ties broken by the seed")
EVENLY_DISTRIBUTED = Policy("evenly_distributed", ((LeastAllocated(), 1.0), (BalancedAllocation(), 1.0), *SOFT),
                            "spread", "spread load: the emptiest host wins")
POWER_SAVING = Policy("power_saving", ((LeastAllocated(), -1.0), *SOFT), "pack",
                      "pack load so that whole hosts empty out and can be switched off")
WORKLOAD_EVENLY_DISTRIBUTED = Policy("workload_evenly_distributed",
                                     ((SpreadByCount(), 1.0), (LeastAllocated(), 0.5), *SOFT), "count",
                                     "the same number of workloads on every host")

POLICIES: dict[str, Policy] = {p.name: p for p in (NONE, EVENLY_DISTRIBUTED, POWER_SAVING,
                                                    WORKLOAD_EVENLY_DISTRIBUTED)}
