"""Placement: filters say where a workload may run, weighers say where it runs best.

:mod:`.snapshot` (the column-wise view; its shared per-host caches in :mod:`.columns`, its
reservations in :mod:`.reservations`), :mod:`.engine` (the Scheduler), :mod:`.protocols`
(the plugin protocols and per-host adapters, re-exported by the engine), :mod:`.filters`
and :mod:`.weighers` (the generic plugins), :mod:`.policies` (named bundles),
:mod:`.incremental` (what a scheduler carries from one decision to the next), :mod:`.balancer`
and :mod:`.capacity`.
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
    RowwiseFilter,
    RowwiseWeigher,
    Scheduler,
    Weigher,
    place,
)
from clustercore.scheduling.snapshot import Snapshot

__all__ = ["BatchResult", "Filter", "ForFlavor", "ForFlavorWeigher", "HostFilter", "HostView", "HostWeigher", "Row",
           "RowwiseFilter", "RowwiseWeigher", "Scheduler", "Snapshot", "Weigher", "place"]
