"""clustercore: generic cluster management; workloads are flavors.

The names most programs need are here; every concept lives in the module named after it
(``lifecycle``, ``join``, ``topology``, ``maintenance``, ``scheduling``, ``store``...).

The names are imported when first used (PEP 562), so that a program needing one module,
``clustercore-iallocator`` or the CLI, does not pay for all of them at start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clustercore.clock import Clock, FakeClock, SystemClock
    from clustercore.cluster import Cluster
    from clustercore.config import ClusterConfig
    from clustercore.driver import WorkloadDriver, WorkloadState
    from clustercore.errors import ClusterError
    from clustercore.events import Event
    from clustercore.lifecycle import HostEvent, LivenessPolicy
    from clustercore.model import (
        AffinityRule,
        FenceDevice,
        Host,
        HostReport,
        HostState,
        NonOperationalReason,
        Placement,
        PlacementState,
        Resources,
        Workload,
    )
    from clustercore.plugins import HostDescription, Plugins, Registry, hookimpl

#: Where each name of the package lives.
_WHERE = {
    "Clock": "clustercore.clock",
    "FakeClock": "clustercore.clock",
    "SystemClock": "clustercore.clock",
    "Cluster": "clustercore.cluster",
    "ClusterConfig": "clustercore.config",
    "WorkloadDriver": "clustercore.driver",
    "WorkloadState": "clustercore.driver",
    "ClusterError": "clustercore.errors",
    "Event": "clustercore.events",
    "HostEvent": "clustercore.lifecycle",
    "LivenessPolicy": "clustercore.lifecycle",
    "AffinityRule": "clustercore.model",
    "FenceDevice": "clustercore.model",
    "Host": "clustercore.model",
    "HostReport": "clustercore.model",
    "HostState": "clustercore.model",
    "NonOperationalReason": "clustercore.model",
    "Placement": "clustercore.model",
    "PlacementState": "clustercore.model",
    "Resources": "clustercore.model",
    "Workload": "clustercore.model",
    "HostDescription": "clustercore.plugins",
    "Plugins": "clustercore.plugins",
    "Registry": "clustercore.plugins",
    "hookimpl": "clustercore.plugins",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'clustercore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AffinityRule",
    "Clock",
    "Cluster",
    "ClusterConfig",
    "ClusterError",
    "Event",
    "FakeClock",
    "FenceDevice",
    "Host",
    "HostDescription",
    "HostEvent",
    "HostReport",
    "HostState",
    "LivenessPolicy",
    "NonOperationalReason",
    "Placement",
    "PlacementState",
    "Plugins",
    "Registry",
    "Resources",
    "SystemClock",
    "Workload",
    "WorkloadDriver",
    "WorkloadState",
    "hookimpl",
]
