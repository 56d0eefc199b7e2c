"""clustercore: generic cluster management; workloads are flavors.

The names most programs need are here; every concept lives in the module named after it
(``lifecycle``, ``join``, ``topology``, ``maintenance``, ``scheduling``, ``store``...).
"""

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
