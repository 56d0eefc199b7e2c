"""Placement: filters say where a workload may run, weighers say where it runs best.

:mod:`.snapshot` (the column-wise view), :mod:`.engine` (the Scheduler and the plugin
protocols), :mod:`.filters` and :mod:`.weighers` (the generic plugins), :mod:`.policies`
(named bundles), :mod:`.balancer` and :mod:`.capacity`.
"""

from clustercore.scheduling.engine import (
    BatchResult,
    Filter,
    ForFlavor,
    ForFlavorWeigher,
    HostFilter,
    HostView,
    HostWeigher,
    Row,
    Scheduler,
    Weigher,
    place,
)
from clustercore.scheduling.snapshot import Snapshot

__all__ = ["BatchResult", "Filter", "ForFlavor", "ForFlavorWeigher", "HostFilter", "HostView", "HostWeigher", "Row",
           "Scheduler", "Snapshot", "Weigher", "place"]
