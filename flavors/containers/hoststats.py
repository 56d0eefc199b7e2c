"""What a podman host and its containers use, for :mod:`clustercore.statistics`.

The containers: libpod's ``GET /containers/stats?stream=false`` (one call for all):
``CPUNano`` (CPU time, ns), ``MemUsage`` (bytes), ``BlockInput/Output`` and
``NetInput/Output`` (bytes), reported under the name of the workload each runs (the
container's name). The host: ``info`` gives its CPUs, memory and swap; podman tells no CPU
counters of the host (its ``cpuUtilization`` is percentages since boot, too coarse to
difference), so a host's busy time is its containers' CPU time, as for lab hosts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from clustercore.statistics import Counters, Sample

MIB = 1024 * 1024


def counters(stats: Mapping[str, Any]) -> Counters:
    """One container's stats as counters (memory in MiB). Pure."""
    return Counters(int(stats.get("CPUNano") or 0), float(stats.get("MemUsage") or 0) / MIB, 0.0,
                    int(stats.get("BlockInput") or 0), int(stats.get("BlockOutput") or 0),
                    int(stats.get("NetInput") or 0), int(stats.get("NetOutput") or 0))


def sample(stats: Collection[Mapping[str, Any]], info: Mapping[str, Any], workloads: Collection[str],
           monotonic: Callable[[], float] = time.monotonic) -> Sample:
    """The host from its containers' ``stats`` and its ``info``; only the containers named in
    ``workloads`` are reported (all count towards the host's busy time). Pure but the clock."""
    at = monotonic()
    host = info.get("host") or {}
    cpus = int(host.get("cpus") or 1)
    busy = sum(int(s.get("CPUNano") or 0) for s in stats)
    found = {str(s.get("Name")): counters(s) for s in stats if s.get("Name") in workloads}
    swap = max(0, int(host.get("swapTotal") or 0) - int(host.get("swapFree") or 0))
    return Sample(at, cpus, busy, max(0, int(cpus * at * 1e9) - busy), int(host.get("memTotal") or 0) / MIB,
                  int(host.get("memFree") or 0) / MIB, swap_used=swap / MIB, workloads=found)
